"""OpenAI-compatible surface: ``POST /v1/chat/completions`` and ``GET /v1/models``.

Any OpenAI client (the official SDKs, LangChain, curl) talks to the RAG pipeline by pointing its
base URL at ``<server>/v1`` and using an API key of this service as its bearer token. Requests run
on exactly the pipeline of ``POST /api/v1/chat`` (``ChatService``: same authentication, rate limits,
stream slots, answer cache, tracing and metrics); only the wire shapes differ.

Models: ``rag`` answers with the provider fail-over chain; ``rag/<provider>`` and
``rag/<provider>/<model>`` pin one provider (and model), like ``model`` on ``/api/v1/chat``.

Messages: the last ``user`` message is the question. ``system``/``developer``/``tool`` messages are
accepted and ignored (the pipeline has its own grounded system prompt). ``metadata.session_id`` (any
session id ``/api/v1/chat`` accepts) or a UUID in ``user`` binds the request to a stored
conversation, whose memory is used and which records the turn; without one, requests are stateless.

The ``model`` of a response and of every chunk names who answered: ``rag/<provider>/<model>``
with the model as the provider's own response named it (``rag/groq/llama-3.3-70b-versatile``;
the configured name only when the provider names none), ``rag`` alone when no model answered (the
"nothing matches" answer, the apology when every provider is down). A stream that another
provider continued after a break names the continuer in its later chunks (``answered_model``).
``usage`` is the answering call's own; when it is unknown (a provider that reports none, a
continued stream) it is left out, never zeros.

The ``rag`` extension field: a non-streaming response, and the last chunk of a stream, carry
``rag: {sources, provider, model, cached, degraded, trace_id, session_id, latency_ms,
continued_by, retrieval_query}`` (``retrieval_query``: what was searched, the last user message
made standalone from the earlier ``messages``); OpenAI SDKs keep unknown fields
(``completion.model_extra["rag"]`` / ``completion.to_dict()["rag"]``).

Errors use OpenAI's shape, ``{"error": {"message", "type", "code", "param", "trace_id"}}``, with
OpenAI's statuses (401 ``invalid_api_key``, 404 ``model_not_found``, 400 for invalid input, 429
with ``Retry-After``), so the SDKs raise their usual exception classes. A stream that fails after
it started ends with ``data: {"error": {...}}`` and no ``[DONE]``: the SDKs raise ``APIError``.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import AsyncIterator, Callable, Coroutine
from contextlib import aclosing
from dataclasses import asdict, replace
from typing import Annotated, Any, Literal

import structlog
from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response
from fastapi.routing import APIRoute
from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError, field_validator

from app.api.auth import ReaderPrincipal
from app.api.chat import (
    KEEP_ALIVE,
    MAX_QUESTION_CHARS,
    ClosingStreamingResponse,
    _released_after,
    with_heartbeats,
)
from app.api.deps import ChainDep, ChatServiceDep, LimiterDep, SettingsDep, StreamSlotsDep
from app.api.limits import charge_answer
from app.api.openai_errors import (
    model_not_found,
    openai_code,
    openai_error_for_exception,
    stream_error_type,
)
from app.api.provider_keys import CallerChainDep, answering_with
from app.chat.types import (
    ChatEvent,
    ChatInput,
    DeltaEvent,
    DoneEvent,
    ErrorEvent,
    SourcesEvent,
)
from app.limits.enforcement import principal_identity
from app.llm.chain import NO_PROVIDER, ProviderChain
from app.llm.errors import UnknownModelError
from app.memory.service import SessionId
from app.observability.context import current_trace_id
from app.rag.prompt import Turn
from app.rag.query import RetrievalMode
from app.rag.sources import Source
from app.security.text import PlainText, plain_text_problem
from app.settings import Settings

logger = structlog.get_logger(__name__)

BASE_MODEL = "rag"
OWNED_BY = "ragchat"
MODELS_CREATED = int(time.time())


class OpenAIRoute(APIRoute):
    """Renders every failure of its endpoint, including body validation and the dependencies'
    401/429, in OpenAI's error shape; the app's problem+json handlers never see them."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def openai_handler(request: Request) -> Response:
            try:
                return await handler(request)
            except Exception as exc:
                return await openai_error_for_exception(request, exc)

        return openai_handler


router = APIRouter(prefix="/v1", tags=["openai"], route_class=OpenAIRoute)

# --- request ---------------------------------------------------------------------------------------


# Every message is bounded, not only the question: earlier turns become prompt history, and the
# ignored roles are still parsed and checked. A user message is at most a question's length.
MAX_MESSAGE_CHARS = 16_000
MAX_CONTENT_PARTS = 100
# OpenAI's own bounds on ``metadata``.
MAX_METADATA_PAIRS, MAX_METADATA_KEY_CHARS, MAX_METADATA_VALUE_CHARS = 16, 64, 512


class ContentPart(BaseModel):
    type: str = Field(max_length=64)
    text: str | None = None


class Message(BaseModel):
    role: Literal["system", "developer", "user", "assistant", "tool", "function"]
    content: str | Annotated[list[ContentPart], Field(max_length=MAX_CONTENT_PARTS)] | None = None

    def text(self) -> str:
        if self.content is None:
            return ""
        if isinstance(self.content, str):
            return self.content
        return "".join(part.text or "" for part in self.content if part.type == "text")

    def strings(self) -> list[str]:
        """Every text the message carries (the text of non-text parts too)."""
        if self.content is None:
            return []
        if isinstance(self.content, str):
            return [self.content]
        return [s for part in self.content for s in (part.type, part.text) if s is not None]

    def max_chars(self) -> int:
        return MAX_QUESTION_CHARS if self.role == "user" else MAX_MESSAGE_CHARS

    def problem(self) -> str | None:
        """Why this message is refused, or None."""
        for text in self.strings():
            problem = plain_text_problem(text)
            if problem is not None:
                return problem
        length = len(self.text().strip())
        if length > self.max_chars():
            return f"a {self.role} message is at most {self.max_chars()} characters; this one has {length}"
        return None


class StreamOptions(BaseModel):
    include_usage: bool = False


_question: TypeAdapter[str] = TypeAdapter(
    Annotated[PlainText, Field(min_length=1, max_length=MAX_QUESTION_CHARS)]
)


class ChatCompletionBody(BaseModel):
    """OpenAI's request; fields this service has no use for (``top_p``, ``presence_penalty``,
    ``tools``, ...) are accepted and ignored, as OpenAI-compatible servers customarily do."""

    model_config = ConfigDict(extra="ignore")

    model: PlainText = Field(min_length=1, max_length=200)
    messages: list[Message] = Field(min_length=1, max_length=200)
    temperature: float | None = Field(default=None, ge=0, le=2)
    max_tokens: int | None = Field(default=None, ge=1, le=4096)
    max_completion_tokens: int | None = Field(default=None, ge=1, le=4096)
    n: int = Field(default=1, ge=1, le=1)
    stream: bool = False
    stream_options: StreamOptions | None = None
    user: PlainText | None = Field(default=None, max_length=256)
    metadata: dict[str, str] | None = None

    @field_validator("messages")
    @classmethod
    def _has_question(cls, messages: list[Message]) -> list[Message]:
        """One error location (``messages``) for every message problem, naming the message."""
        for index, message in enumerate(messages):
            problem = message.problem()
            if problem is not None:
                raise ValueError(f"messages[{index}]: {problem}")
        users = [m for m in messages if m.role == "user"]
        if not users:
            raise ValueError("at least one message must have the role 'user'")
        try:
            question = _question.validate_python(users[-1].text().strip())
        except ValidationError as exc:
            reason = exc.errors()[0]["msg"]
            raise ValueError(f"the last user message is invalid: {reason}") from None
        if not question:
            raise ValueError("the last user message is empty")
        return messages

    @field_validator("metadata")
    @classmethod
    def _metadata_is_bounded(cls, metadata: dict[str, str] | None) -> dict[str, str] | None:
        if not metadata:
            return metadata
        if len(metadata) > MAX_METADATA_PAIRS:
            raise ValueError(f"metadata holds at most {MAX_METADATA_PAIRS} pairs")
        for key, value in metadata.items():
            if len(key) > MAX_METADATA_KEY_CHARS or len(value) > MAX_METADATA_VALUE_CHARS:
                raise ValueError(
                    f"metadata keys are at most {MAX_METADATA_KEY_CHARS} characters and values "
                    f"at most {MAX_METADATA_VALUE_CHARS}"
                )
            problem = plain_text_problem(key) or plain_text_problem(value)
            if problem is not None:
                raise ValueError(f"metadata keys and values {problem}")
        return metadata

    @field_validator("metadata")
    @classmethod
    def _session_id_is_valid(cls, metadata: dict[str, str] | None) -> dict[str, str] | None:
        if metadata and "session_id" in metadata and _session_id(metadata["session_id"]) is None:
            raise ValueError(
                "metadata.session_id must be a session id: 1-128 characters of A-Z a-z 0-9 . _ : -"
            )
        return metadata

    def question(self) -> str:
        return next(m for m in reversed(self.messages) if m.role == "user").text().strip()

    def session_id(self) -> str | None:
        """``metadata.session_id``, else ``user`` when it is a UUID; None: stateless."""
        if self.metadata and "session_id" in self.metadata:
            return _session_id(self.metadata["session_id"])
        return _uuid_session_id(self.user) if self.user else None


_stored_session: TypeAdapter[str] = TypeAdapter(SessionId)


def _session_id(value: str) -> str | None:
    """A session id as ``/api/v1`` accepts it (``SessionId``, canonical form), else None."""
    try:
        return _stored_session.validate_python(value)
    except ValidationError:
        return None


def _uuid_session_id(value: str) -> str | None:
    """``user`` binds a session only when it is a UUID: OpenAI clients often send an end-user
    label there (``"alice"``), which must not silently become a stored, ever-growing conversation."""
    try:
        return str(uuid.UUID(value))
    except ValueError:
        return None


def model_pin(model: str) -> str | None:
    """``rag`` → None (the fallback chain); ``rag/<provider>[/<model>]`` → ``<provider>[/<model>]``.
    Raises ``UnknownModelError`` for anything else."""
    if model == BASE_MODEL:
        return None
    prefix = BASE_MODEL + "/"
    if model.startswith(prefix) and len(model) > len(prefix):
        return model[len(prefix) :]
    raise UnknownModelError(
        f"The model {model!r} does not exist; use 'rag', 'rag/<provider>' or 'rag/<provider>/<model>' "
        "(GET /v1/models lists them)"
    )


def _history(messages: list[Message], max_turns: int) -> tuple[Turn, ...]:
    """Earlier user turns paired with the assistant reply that follows each (stateless clients
    send the conversation every time); the last user message is the question, not history."""
    last_user = max(i for i, m in enumerate(messages) if m.role == "user")
    turns: list[Turn] = []
    question: str | None = None
    for message in messages[:last_user]:
        if message.role == "user":
            question = message.text().strip()
        elif message.role == "assistant" and question is not None:
            turns.append(Turn(question=question, answer=message.text().strip()))
            question = None
    return tuple(turns[-max_turns:])


def _to_input(body: ChatCompletionBody, settings: Settings) -> ChatInput:
    return ChatInput(
        question=body.question(),
        session_id=body.session_id(),
        history=_history(body.messages, settings.memory_max_turns),
        model=model_pin(body.model),
        temperature=body.temperature,
        max_tokens=body.max_completion_tokens or body.max_tokens,
        mode=RetrievalMode(settings.retrieval_mode),
        vector_weight=settings.retrieval_vector_weight,
        text_weight=settings.retrieval_text_weight,
    )


# --- responses -------------------------------------------------------------------------------------


def answered_model(provider: str, model: str) -> str:
    """The public name of who answered: ``rag/<provider>/<model>``, or ``rag`` when no model did
    (provider "none")."""
    if not provider or provider == NO_PROVIDER:
        return BASE_MODEL
    return f"{BASE_MODEL}/{provider}/{model or provider}"


def _usage(usage: dict[str, int] | None) -> dict[str, dict[str, int]]:
    """``{"usage": …}`` for a response, or nothing when the usage is unknown (never zeros)."""
    if not usage:
        return {}
    prompt, completion = usage.get("prompt_tokens", 0), usage.get("completion_tokens", 0)
    return {
        "usage": {
            "prompt_tokens": prompt,
            "completion_tokens": completion,
            "total_tokens": usage.get("total_tokens", prompt + completion),
        }
    }


def _rag(
    *,
    sources: list[Source],
    provider: str,
    model: str,
    cached: bool,
    degraded: bool,
    trace_id: str,
    session_id: str | None,
    latency_ms: float,
    continued_by: dict[str, str] | None = None,
    retrieval_query: str = "",
) -> dict[str, Any]:
    return {
        "sources": [asdict(s) for s in sources],
        "provider": provider,
        "model": model,
        "cached": cached,
        "degraded": degraded,
        "trace_id": trace_id,
        "session_id": session_id,
        "latency_ms": latency_ms,
        "continued_by": continued_by,
        "retrieval_query": retrieval_query,
    }


def _sse(data: dict[str, Any]) -> bytes:
    return f"data: {json.dumps(data, separators=(',', ':'))}\n\n".encode()


DONE = b"data: [DONE]\n\n"


class _ChunkRenderer:
    """Turns the pipeline's events into ``chat.completion.chunk`` SSE events. Each chunk's
    ``model`` names the provider and model that produced its text, so the role chunk waits for
    the first text (who answers is known only then); the last chunk and the usage chunk name the
    last one that spoke."""

    def __init__(self, include_usage: bool) -> None:
        self.include_usage = include_usage
        self.created = int(time.time())
        self.id = f"chatcmpl-{current_trace_id() or uuid.uuid4().hex}"
        self.sources: list[Source] = []
        self.retrieval_query = ""
        self.model: str | None = None  # who spoke last; None before the first text

    def chunk(self, model: str, delta: dict[str, Any], finish: str | None = None, **extra: Any) -> bytes:
        return _sse(
            {
                "id": self.id,
                "object": "chat.completion.chunk",
                "created": self.created,
                "model": model,
                "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
                **extra,
            }
        )

    def render(self, event: ChatEvent) -> tuple[bytes, bool]:
        """The bytes for ``event`` (possibly none yet), and whether the stream is over."""
        if isinstance(event, SourcesEvent):
            self.sources = event.sources
            self.retrieval_query = event.retrieval_query
            return b"", False
        if isinstance(event, DeltaEvent):
            return self.delta(event), False
        if isinstance(event, DoneEvent):
            return self.done(event), True
        return self.error(event), True

    def delta(self, event: DeltaEvent) -> bytes:
        model = answered_model(event.provider, event.model)
        opening = b"" if self.model is not None else self.chunk(model, {"role": "assistant", "content": ""})
        self.model = model
        return opening + self.chunk(model, {"content": event.text})

    def done(self, event: DoneEvent) -> bytes:
        cited = set(event.cited)
        sources = [replace(s, cited=s.number in cited) for s in self.sources]
        rag = _rag(
            sources=sources,
            provider=event.provider,
            model=event.model,
            cached=event.cached,
            degraded=event.degraded,
            trace_id=event.trace_id,
            session_id=event.session_id,
            latency_ms=event.latency_ms,
            continued_by=event.continued_by,
            retrieval_query=self.retrieval_query,
        )
        model = self.model or answered_model(event.provider, event.model)
        out = self.chunk(model, {}, "stop", rag=rag)
        if self.include_usage and event.usage:
            out += _sse(
                {
                    "id": self.id,
                    "object": "chat.completion.chunk",
                    "created": self.created,
                    "model": model,
                    "choices": [],
                    **_usage(event.usage),
                }
            )
        return out + DONE

    @staticmethod
    def error(event: ErrorEvent) -> bytes:
        """No ``[DONE]`` after this: OpenAI's SDKs raise ``APIError`` on a data event carrying
        an ``error`` object (legacy stream mode), so a broken answer never looks complete."""
        return _sse(
            {
                "error": {
                    "message": event.message,
                    "type": stream_error_type(event.code),
                    "code": openai_code(event.code),
                    "param": None,
                    "trace_id": event.trace_id,
                }
            }
        )


async def _chunks(
    events: AsyncIterator[ChatEvent], renderer: _ChunkRenderer, every_s: float
) -> AsyncIterator[bytes]:
    """``chat.completion.chunk`` events with keep-alive comments (the SDKs skip them), ending
    with ``[DONE]`` after a complete answer or with an error payload after a failed one."""
    async with aclosing(with_heartbeats(events, every_s)) as items:
        async for item in items:
            if item is None:
                yield KEEP_ALIVE
                continue
            data, over = renderer.render(item)
            if data:
                yield data
            if over:
                return


# --- endpoints -------------------------------------------------------------------------------------


@router.post(
    "/chat/completions",
    summary="OpenAI-compatible chat completion over your documents",
    responses={200: {"content": {"text/event-stream": {}}}},
)
async def chat_completions(
    body: ChatCompletionBody,
    request: Request,
    principal: ReaderPrincipal,
    limiter: LimiterDep,
    settings: SettingsDep,
    slots: StreamSlotsDep,
    service: ChatServiceDep,
    caller: CallerChainDep,
) -> Response:
    service, chat_input = answering_with(caller, service, _to_input(body, settings))
    chat_input = await charge_answer(request, limiter, principal, chat_input)
    if not body.stream:
        answer = await service.answer(principal, chat_input)
        return JSONResponse(
            {
                "id": f"chatcmpl-{answer.trace_id}",
                "object": "chat.completion",
                "created": int(time.time()),
                "model": answered_model(answer.provider, answer.model),
                "choices": [
                    {
                        "index": 0,
                        "message": {"role": "assistant", "content": answer.answer},
                        "finish_reason": "stop",
                    }
                ],
                **_usage(answer.usage),
                "rag": _rag(
                    sources=answer.sources,
                    provider=answer.provider,
                    model=answer.model,
                    cached=answer.cached,
                    degraded=answer.degraded,
                    trace_id=answer.trace_id,
                    session_id=answer.session_id,
                    latency_ms=answer.latency_ms,
                    retrieval_query=answer.retrieval_query,
                ),
            }
        )
    identity = principal_identity(principal)
    try:
        service.validate(chat_input)  # bad input is a 4xx before the stream starts
        slot = await slots.acquire(identity)  # 429 too_many_streams at the cap
    except BaseException:
        await service.release(chat_input)
        raise
    include_usage = bool(body.stream_options and body.stream_options.include_usage)
    renderer = _ChunkRenderer(include_usage)
    events = service.stream(principal, chat_input)

    async def release() -> None:
        await slots.release(identity, slot)
        await service.release(chat_input)  # nothing left to give back once settled

    return ClosingStreamingResponse(
        _released_after(_chunks(events, renderer, settings.sse_heartbeat_s), release),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no", "Connection": "keep-alive"},
    )


async def _model_ids(chain: ProviderChain) -> list[str]:
    statuses = await chain.status()
    return [BASE_MODEL, *(f"{BASE_MODEL}/{s.name}" for s in statuses if s.configured)]


def _model(model_id: str) -> dict[str, Any]:
    return {"id": model_id, "object": "model", "created": MODELS_CREATED, "owned_by": OWNED_BY}


@router.get("/models", summary="OpenAI-compatible list of models")
async def list_models(_: ReaderPrincipal, chain: ChainDep) -> dict[str, Any]:
    return {"object": "list", "data": [_model(m) for m in await _model_ids(chain)]}


@router.get("/models/{model_id:path}", summary="OpenAI-compatible model lookup", response_model=None)
async def retrieve_model(model_id: str, _: ReaderPrincipal, chain: ChainDep) -> Response:
    if model_id not in await _model_ids(chain):
        return model_not_found(f"The model {model_id!r} does not exist")
    return JSONResponse(_model(model_id))
