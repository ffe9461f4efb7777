"""POST /api/v1/chat: JSON answer, or Server-Sent Events with ``stream: true`` /
``Accept: text/event-stream``."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable
from contextlib import aclosing
from dataclasses import asdict
from typing import Annotated, Any, cast

import anyio
import structlog
from fastapi import APIRouter, Request
from fastapi.responses import StreamingResponse
from pydantic import BaseModel, ConfigDict, Field, field_validator
from starlette.types import Receive, Scope, Send

from app.api.auth import ReaderPrincipal
from app.api.deps import ChatServiceDep, LimiterDep, SettingsDep, StreamSlotsDep
from app.api.limits import charge_answer
from app.api.provider_keys import CallerChainDep, answering_with
from app.chat.types import ChatAnswer, ChatEvent, ChatInput, DeltaEvent, DoneEvent, ErrorEvent
from app.errors import DATABASE_UNAVAILABLE_ERRORS, AppError
from app.limits.enforcement import principal_identity
from app.memory.service import SessionId
from app.observability.context import current_trace_id
from app.observability.draining import SHUTDOWN, SHUTTING_DOWN_CODE, SHUTTING_DOWN_MESSAGE
from app.rag.query import RetrievalFilters, RetrievalMode
from app.security.text import PlainText
from app.settings import Settings

logger = structlog.get_logger(__name__)

router = APIRouter(prefix="/api/v1", tags=["chat"])

MAX_QUESTION_CHARS = 4000


class ChatFilters(BaseModel):
    model_config = ConfigDict(extra="forbid")

    tags: list[Annotated[PlainText, Field(min_length=1, max_length=64)]] = Field(
        default_factory=list, max_length=20
    )
    document_ids: list[uuid.UUID] = Field(default_factory=list, max_length=50)


class ChatBody(BaseModel):
    model_config = ConfigDict(extra="forbid")

    question: PlainText = Field(min_length=1, max_length=MAX_QUESTION_CHARS)
    session_id: SessionId | None = None
    model: PlainText | None = Field(default=None, max_length=200)
    temperature: float | None = Field(default=None, ge=0, le=2)
    max_tokens: int | None = Field(default=None, ge=1, le=4096)
    top_k: int = Field(default=5, ge=1, le=20)
    filters: ChatFilters = Field(default_factory=ChatFilters)
    mode: RetrievalMode | None = None
    vector_weight: float | None = Field(default=None, ge=0, le=10)
    text_weight: float | None = Field(default=None, ge=0, le=10)
    stream: bool = False

    @field_validator("question")
    @classmethod
    def _not_blank(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("the question is empty")
        return value.strip()


def _to_input(body: ChatBody, settings: Settings) -> ChatInput:
    return ChatInput(
        question=body.question,
        session_id=body.session_id,
        model=body.model,
        temperature=body.temperature,
        max_tokens=body.max_tokens,
        top_k=body.top_k,
        filters=RetrievalFilters(
            tags=tuple(body.filters.tags), document_ids=tuple(body.filters.document_ids)
        ),
        mode=body.mode or RetrievalMode(settings.retrieval_mode),
        vector_weight=settings.retrieval_vector_weight if body.vector_weight is None else body.vector_weight,
        text_weight=settings.retrieval_text_weight if body.text_weight is None else body.text_weight,
    )


def _sse(event: str, data: dict[str, Any]) -> bytes:
    return f"event: {event}\ndata: {json.dumps(data, separators=(',', ':'))}\n\n".encode()


def _render(event: ChatEvent) -> bytes:
    if isinstance(event, DeltaEvent):
        return _sse("delta", {"text": event.text})
    if isinstance(event, DoneEvent):
        return _sse("done", asdict(event))
    if isinstance(event, ErrorEvent):
        return _sse("error", asdict(event))
    return _sse(
        "sources",
        {"sources": [asdict(s) for s in event.sources], "retrieval_query": event.retrieval_query},
    )


def _error_event(exc: Exception) -> ErrorEvent:
    """What a client is told when the pipeline fails after the stream has started: the same
    stable code a JSON request would get (``database_unavailable``, an ``AppError``'s code), or
    ``internal_error`` with the trace id to quote."""
    trace_id = current_trace_id() or ""
    if isinstance(exc, AppError):
        if exc.status >= 500:
            logger.error("server_error", code=exc.code, error_type=type(exc).__name__, error=str(exc))
        return ErrorEvent(code=exc.code, message=exc.detail, trace_id=trace_id)
    if isinstance(exc, DATABASE_UNAVAILABLE_ERRORS):
        message = "The database is unreachable or restarting; retry shortly."
        return ErrorEvent(code="database_unavailable", message=message, trace_id=trace_id)
    logger.exception("chat_stream_failed", error_type=type(exc).__name__)
    message = "An unexpected error occurred; quote the trace_id when reporting it."
    return ErrorEvent(code="internal_error", message=message, trace_id=trace_id)


KEEP_ALIVE = b": keep-alive\n\n"


async def with_heartbeats(
    events: AsyncIterator[ChatEvent], every_s: float
) -> AsyncGenerator[ChatEvent | None, None]:
    """The pipeline's events as they come, and ``None`` whenever nothing happened for ``every_s``
    seconds (the surface sends a keep-alive, so proxies keep an idle connection while the model
    thinks). Always ends with a ``DoneEvent`` or an ``ErrorEvent``: a failure after the 200 was
    sent becomes an error event (``_error_event``), and so does a stream that just stops, or one
    still running when a stopping worker's drain time is over (``server_shutting_down``)."""
    iterator = aiter(events)
    pending: asyncio.Task[ChatEvent] | None = None
    stopping = asyncio.ensure_future(SHUTDOWN.wait())
    try:
        while True:
            if pending is None:
                pending = asyncio.ensure_future(anext(iterator))
            done, _ = await asyncio.wait(
                {pending, stopping}, timeout=every_s, return_when=asyncio.FIRST_COMPLETED
            )
            if pending not in done and stopping in done:
                logger.warning("chat_stream_stopped_by_shutdown")
                trace_id = current_trace_id() or ""
                yield ErrorEvent(code=SHUTTING_DOWN_CODE, message=SHUTTING_DOWN_MESSAGE, trace_id=trace_id)
                return
            if not done:
                yield None
                continue
            try:
                event = pending.result()
            except StopAsyncIteration:
                message = "The answer stream ended unexpectedly."
                yield ErrorEvent(code="internal_error", message=message, trace_id=current_trace_id() or "")
                return
            except Exception as exc:
                yield _error_event(exc)
                return
            finally:
                pending = None
            yield event
            if isinstance(event, DoneEvent | ErrorEvent):
                return
    finally:
        # Client gone or stream over: stop the producer, which closes the provider's stream.
        # Shielded: when the response task is being cancelled, these awaits must still run.
        with anyio.CancelScope(shield=True):
            stopping.cancel()
            if pending is not None:
                pending.cancel()
                await asyncio.gather(pending, return_exceptions=True)
            await cast(Any, iterator).aclose()


async def _sse_stream(events: AsyncIterator[ChatEvent], every_s: float) -> AsyncIterator[bytes]:
    async with aclosing(with_heartbeats(events, every_s)) as items:
        async for item in items:
            yield KEEP_ALIVE if item is None else _render(item)


async def _released_after(
    body: AsyncIterator[bytes], release: Callable[[], Awaitable[None]]
) -> AsyncIterator[bytes]:
    """``body``, then ``release()`` however the stream ends (done, error or client gone)."""
    try:
        async for chunk in body:
            yield chunk
    finally:
        with anyio.CancelScope(shield=True):
            await cast(Any, body).aclose()
            await release()


class ClosingStreamingResponse(StreamingResponse):
    """Closes the body iterator however the response ends. When the client goes away, sending
    fails and Starlette abandons the iterator without closing it; closing it here cancels the
    provider's stream at once and lets the pipeline record the turn as cancelled."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            closer = getattr(self.body_iterator, "aclose", None)
            if closer is not None:
                await closer()


def _wants_stream(body: ChatBody, request: Request) -> bool:
    return body.stream or "text/event-stream" in request.headers.get("accept", "")


@router.post(
    "/chat",
    response_model=ChatAnswer,
    summary="Ask a question about your documents",
    responses={200: {"content": {"text/event-stream": {}}}},
)
async def chat(
    body: ChatBody,
    request: Request,
    principal: ReaderPrincipal,
    limiter: LimiterDep,
    settings: SettingsDep,
    slots: StreamSlotsDep,
    service: ChatServiceDep,
    caller: CallerChainDep,
) -> ChatAnswer | StreamingResponse:
    service, chat_input = answering_with(caller, service, _to_input(body, settings))
    chat_input = await charge_answer(request, limiter, principal, chat_input)
    if not _wants_stream(body, request):
        return await service.answer(principal, chat_input)  # settles or releases the tokens
    identity = principal_identity(principal)
    try:
        service.validate(chat_input)  # bad input is a 4xx before the stream starts
        slot = await slots.acquire(identity)  # 429 too_many_streams at the cap
    except BaseException:
        await service.release(chat_input)
        raise
    events = service.stream(principal, chat_input)

    async def release() -> None:
        await slots.release(identity, slot)
        await service.release(chat_input)  # nothing left to give back once settled

    return ClosingStreamingResponse(
        _released_after(_sse_stream(events, settings.sse_heartbeat_s), release),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no", "Connection": "keep-alive"},
    )
