"""One fake LLM provider server that speaks the real wire protocols the SDKs use.

Endpoints (the SDKs reach them through their base URL settings):

- OpenAI: ``POST /v1/chat/completions`` (JSON, or SSE ``data:`` chunks ending ``data: [DONE]``),
  ``POST /v1/embeddings`` (float or base64 vectors, ``dimensions`` honoured).
- Groq: ``POST /openai/v1/chat/completions`` (OpenAI-compatible, usage in ``x_groq``).
- Gemini (under ``/v1beta`` or ``/v1``): ``POST /v1beta/models/{model}:generateContent``,
  ``:streamGenerateContent?alt=sse``, ``:embedContent`` and ``:batchEmbedContents``.

Behaviour per provider is switched at run time:

- ``POST /_control/{provider}`` with a JSON ``Behaviour`` (``mode`` is one of ``ok``, ``slow``,
  ``error``, ``hang``, ``cut``, ``stall``, ``malformed``, ``context_too_long``, ``empty``,
  ``blocked``; ``fail_times`` limits a failure mode to the first N requests; ``reject_keys`` answers
  401 to chat requests made with one of those keys, quoting the key as providers do),
- ``POST /_control/{provider}/release`` lets streams held by ``hold_first_token`` go on (tests
  order events by what they have seen, not by how fast the machine is),
- ``POST /_control/reset`` back to ``ok`` with zeroed counters,
- ``POST /_control/clock`` with ``{"advance": seconds}`` moves the fake's own clock forward (it
  times ``fail_for_s``), so a test can let a provider "recover" without waiting,
- ``GET /_control/stats`` the requests seen per provider and endpoint (``chat_requests`` counts
  chat completions of either kind, ``json_requests`` and ``stream_requests`` each kind).

``empty`` answers 200 with no text (JSON: empty content; SSE: only the end-of-answer chunk);
``blocked`` is the same refusal the provider's content filter gives (OpenAI wire:
``finish_reason: content_filter`` and no text; Gemini: ``promptFeedback.blockReason`` and no
candidates). ``content_policy`` is each provider's content-policy refusal of the prompt: OpenAI
400 ``code: content_policy_violation``, Groq 400 ``code: content_filter``, Gemini 200 with a
candidate stopped for ``SAFETY`` and no text. ``fail_for_s`` limits a failure mode to the first
seconds (on the fake's clock) after it was configured: the provider recovers by itself.

Stream faults and prefills, on every wire, whatever the mode (see the second block of
``Behaviour``): ``invalid_chunk_after`` puts one chunk that is not JSON after N tokens and goes on
well-formed; ``omit_done`` ends an OpenAI/Groq stream after its ``finish_reason`` without
``data: [DONE]``; ``stall_for_s`` bounds a ``stall`` (then the stream goes on); ``stream_usage``
false leaves usage out of streams; ``response_model`` is the model name responses carry (else the
requested one). A request whose last message is the assistant's (Gemini: a last ``model`` turn)
is a prefill: ``prefill="continue"`` answers only the rest of ``text`` after it, ``"ignore"``
answers the whole ``text`` anew (OpenAI's behaviour), ``"refuse"`` answers 400
``prefill_unsupported``. ``GET /_control/stats`` shows ``prefill_requests`` and ``last_prefill``.
``wrong_body`` answers 200 with a body that is not the protocol's (``broken_json``, ``html``).

Standalone: ``python -m tests.fakes.fake_llm_server --port 8099`` (or ``make fake-llm``).
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import hashlib
import json
import math
import struct
import threading
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import asdict, dataclass, field, fields
from typing import Any, Literal

import httpx
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

ProviderName = Literal["openai", "groq", "gemini"]
PROVIDERS: tuple[ProviderName, ...] = ("openai", "groq", "gemini")
MODES = (
    "ok",
    "slow",
    "error",
    "hang",
    "cut",
    "stall",
    "malformed",
    "context_too_long",
    "empty",
    "blocked",
    "content_policy",
)
DEFAULT_TEXT = "The fake provider answers from its own wire protocol."
PREFILL_BEHAVIOURS = ("continue", "ignore", "refuse")
INVALID_CHUNK = b'data: {"choices": [{"delta": {"content": "unterminated\n\n'


@dataclass
class Behaviour:
    mode: str = "ok"
    text: str = DEFAULT_TEXT
    latency_s: float = 0.0  # before the response headers (JSON and SSE)
    first_token_delay_s: float = 0.0  # SSE: after the headers, before the first token
    hold_first_token: bool = False  # SSE: after the headers, wait for POST /_control/{provider}/release
    token_delay_s: float = 0.0  # SSE: between tokens
    status: int = 500  # mode "error"
    retry_after: float | None = None  # mode "error": Retry-After header (seconds)
    cut_after_tokens: int = 2  # mode "cut": tokens sent before the connection breaks
    cut_clean: bool = False  # mode "cut": end the body cleanly, without the stream's terminal marker
    stall_after_tokens: int = 2  # mode "stall": tokens sent before the stream goes silent
    malformed_after_tokens: int = 0  # mode "malformed" (SSE): valid chunks before the broken one
    fail_times: int | None = None  # failure modes apply to the first N requests only
    fail_for_s: float | None = None  # failure modes apply this long (fake's clock) after configuring
    refusal_message: str | None = None  # mode "content_policy" (OpenAI/Groq): the 400's message
    # Chat requests made with one of these keys get 401, whatever the mode, with an error message
    # that quotes the key (real providers quote it too, at least in part).
    reject_keys: list[str] = field(default_factory=list)
    # --- stream faults and prefills (any mode; see the module docstring) ---
    invalid_chunk_after: int | None = None  # SSE: one non-JSON chunk after N tokens, then the rest
    omit_done: bool = False  # OpenAI/Groq SSE: no ``data: [DONE]`` after the finish_reason chunk
    stall_for_s: float = 3600.0  # mode "stall": how long the stream stays silent before going on
    stream_usage: bool = True  # report usage in streams (OpenAI wire: when include_usage asks)
    response_model: str | None = None  # the model responses name; None: the requested one
    prefill: Literal["continue", "ignore", "refuse"] = "continue"  # a trailing assistant turn
    # A 200 chat response whose body is not the protocol's, streamed or not: "broken_json"
    # (application/json cut off mid-object) or "html" (a proxy's text/html error page).
    wrong_body: Literal["broken_json", "html"] | None = None

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Behaviour:
        known = {f.name for f in fields(cls)}
        unknown = set(data) - known
        if unknown:
            raise ValueError(f"unknown behaviour fields: {sorted(unknown)}")
        behaviour = cls(**data)
        if behaviour.mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}")
        if behaviour.prefill not in PREFILL_BEHAVIOURS:
            raise ValueError(f"prefill must be one of {PREFILL_BEHAVIOURS}")
        return behaviour


@dataclass
class ProviderState:
    behaviour: Behaviour = field(default_factory=Behaviour)
    json_requests: int = 0
    stream_requests: int = 0
    embedding_requests: int = 0
    failures_served: int = 0
    streams_completed: int = 0  # SSE bodies sent to the end
    streams_abandoned: int = 0  # SSE bodies cut short because the client went away
    prefill_requests: int = 0  # chat requests whose last turn was the assistant's
    last_prefill: str | None = None
    last_request: dict[str, Any] | None = None
    last_headers: dict[str, str] = field(default_factory=dict)
    released: asyncio.Event = field(default_factory=asyncio.Event)  # see Behaviour.hold_first_token
    configured_at: float = 0.0  # the fake's clock when the behaviour was set (see fail_for_s)


class FakeState:
    def __init__(self) -> None:
        self.providers: dict[str, ProviderState] = {name: ProviderState() for name in PROVIDERS}
        self.clock_offset = 0.0  # POST /_control/clock moves the fake's clock forward

    def now(self) -> float:
        return time.monotonic() + self.clock_offset

    def reset(self) -> None:
        self.providers = {name: ProviderState() for name in PROVIDERS}

    def recovered(self, state: ProviderState) -> bool:
        """Whether a ``fail_for_s`` outage is over (on the fake's clock)."""
        limit = state.behaviour.fail_for_s
        return limit is not None and self.now() - state.configured_at >= limit

    def effective_mode(self, provider: str) -> str:
        """The mode for this request; ``fail_times`` turns failure modes off after N requests,
        ``fail_for_s`` after that many seconds."""
        state = self.providers[provider]
        behaviour = state.behaviour
        if behaviour.mode in ("ok", "slow"):
            return behaviour.mode
        if behaviour.fail_times is not None and state.failures_served >= behaviour.fail_times:
            return "ok"
        if self.recovered(state):
            return "ok"
        state.failures_served += 1
        return behaviour.mode


def tokens_of(text: str) -> list[str]:
    words = text.split(" ")
    return [word if i == 0 else " " + word for i, word in enumerate(words)]


def deterministic_vector(text: str, dim: int) -> list[float]:
    """A unit vector derived from the text: equal texts embed equally, in any process."""
    values: list[float] = []
    counter = 0
    while len(values) < dim:
        digest = hashlib.sha256(f"{counter}:{text}".encode()).digest()
        values.extend((b - 127.5) / 127.5 for b in digest)
        counter += 1
    vector = values[:dim]
    norm = math.sqrt(sum(v * v for v in vector)) or 1.0
    return [v / norm for v in vector]


async def wait_or_disconnect(request: Request, seconds: float) -> bool:
    """Sleep ``seconds``; True if the client went away first (so hung handlers end with it)."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if await request.is_disconnected():
            return True
        await asyncio.sleep(min(0.05, max(0.0, deadline - time.monotonic())))
    return False


HOLD_LIMIT_S = 60.0  # a held stream goes on by itself after this, so a forgotten release cannot hang


async def wait_for_release(request: Request, released: asyncio.Event, limit_s: float) -> bool:
    """Wait until the test releases the stream (or ``limit_s`` passes); True if the client left."""
    deadline = time.monotonic() + limit_s
    while not released.is_set() and time.monotonic() < deadline:
        if await request.is_disconnected():
            return True
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(released.wait(), timeout=0.05)
    return False


class ClientGone(Exception):
    """The client disconnected while the fake was streaming to it."""


class BrokenStream(Exception):
    """Raised inside a streaming body to make uvicorn drop the connection mid-response."""


# --- wire formats -------------------------------------------------------------------------------


def openai_error(status: int, message: str, code: str | None = None) -> dict[str, Any]:
    kinds = {400: "invalid_request_error", 401: "invalid_request_error", 429: "rate_limit_exceeded"}
    return {
        "error": {"message": message, "type": kinds.get(status, "server_error"), "param": None, "code": code}
    }


def gemini_error(status: int, message: str) -> dict[str, Any]:
    names = {
        400: "INVALID_ARGUMENT",
        401: "UNAUTHENTICATED",
        403: "PERMISSION_DENIED",
        429: "RESOURCE_EXHAUSTED",
        500: "INTERNAL",
        503: "UNAVAILABLE",
    }
    return {"error": {"code": status, "message": message, "status": names.get(status, "UNKNOWN")}}


def openai_completion(
    provider: str, model: str, text: str, prompt_tokens: int, finish: str = "stop"
) -> dict[str, Any]:
    completion_tokens = len(tokens_of(text)) if text else 0
    return {
        "id": "chatcmpl-fake",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model,
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": text},
                "finish_reason": finish,
                "logprobs": None,
            }
        ],
        "usage": {
            "prompt_tokens": prompt_tokens,
            "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens,
        },
        "system_fingerprint": f"fp_{provider}",
    }


def openai_chunk(model: str, content: str | None, finish: str | None) -> dict[str, Any]:
    delta: dict[str, Any] = {} if content is None else {"content": content}
    return {
        "id": "chatcmpl-fake",
        "object": "chat.completion.chunk",
        "created": int(time.time()),
        "model": model,
        "choices": [{"index": 0, "delta": delta, "finish_reason": finish, "logprobs": None}],
    }


def gemini_response(
    model: str, text: str, prompt_tokens: int, finish: str | None, completion_tokens: int | None = None
) -> dict[str, Any]:
    """A ``GenerateContentResponse``; in streams ``completion_tokens`` is the running total, as
    Gemini reports it."""
    candidate: dict[str, Any] = {"content": {"parts": [{"text": text}], "role": "model"}, "index": 0}
    if finish:
        candidate["finishReason"] = finish
    if completion_tokens is None:
        completion_tokens = len(tokens_of(text))
    return {
        "candidates": [candidate],
        "usageMetadata": {
            "promptTokenCount": prompt_tokens,
            "candidatesTokenCount": completion_tokens,
            "totalTokenCount": prompt_tokens + completion_tokens,
        },
        "modelVersion": model,
        "responseId": "fake-response",
    }


def gemini_empty_response(model: str, prompt_tokens: int) -> dict[str, Any]:
    """A finished candidate without parts: Gemini's shape for an answer with no text."""
    return {
        "candidates": [{"content": {"role": "model"}, "finishReason": "STOP", "index": 0}],
        "usageMetadata": {"promptTokenCount": prompt_tokens, "totalTokenCount": prompt_tokens},
        "modelVersion": model,
        "responseId": "fake-response",
    }


def gemini_blocked_response(model: str, prompt_tokens: int) -> dict[str, Any]:
    """The prompt refused by Gemini's safety filter: feedback, no candidates."""
    return {
        "promptFeedback": {"blockReason": "SAFETY"},
        "usageMetadata": {"promptTokenCount": prompt_tokens, "totalTokenCount": prompt_tokens},
        "modelVersion": model,
        "responseId": "fake-response",
    }


# --- content-policy refusals (mode "content_policy") ---------------------------------------------

CONTENT_POLICY_MESSAGE = (
    "Your request was rejected as a result of our safety system. Your prompt may contain text "
    "that is not allowed by our safety system."
)
CONTENT_POLICY_CODES = {"openai": "content_policy_violation", "groq": "content_filter"}


def openai_wire_policy_refusal(provider: str, message: str | None) -> Response:
    """OpenAI's (and Groq's) 400 for a prompt its content policy refuses."""
    body = openai_error(400, message or CONTENT_POLICY_MESSAGE, CONTENT_POLICY_CODES[provider])
    return JSONResponse(body, status_code=400)


def gemini_safety_stop(model: str, prompt_tokens: int) -> dict[str, Any]:
    """Gemini's answer withheld by its safety filter: a candidate finished for ``SAFETY``, no text."""
    return {
        "candidates": [
            {
                "content": {"role": "model"},
                "finishReason": "SAFETY",
                "index": 0,
                "safetyRatings": [
                    {"category": "HARM_CATEGORY_DANGEROUS_CONTENT", "probability": "HIGH", "blocked": True}
                ],
            }
        ],
        "usageMetadata": {"promptTokenCount": prompt_tokens, "totalTokenCount": prompt_tokens},
        "modelVersion": model,
        "responseId": "fake-response",
    }


def count_prompt_tokens(body: dict[str, Any]) -> int:
    words = 0
    for message in body.get("messages", []):
        content = message.get("content")
        if isinstance(content, str):
            words += len(content.split())
    for content in body.get("contents", []):
        for part in content.get("parts", []):
            words += len(str(part.get("text", "")).split())
    return max(words, 1)


# --- prefills -------------------------------------------------------------------------------------


def openai_prefill(body: dict[str, Any]) -> str | None:
    """The assistant text a chat request ends with (a prefill to continue), if it ends so."""
    messages = body.get("messages") or []
    if messages and isinstance(messages[-1], dict) and messages[-1].get("role") == "assistant":
        return str(messages[-1].get("content") or "")
    return None


def gemini_prefill(body: dict[str, Any]) -> str | None:
    """The text of a trailing ``model`` turn in ``contents``, if the request ends with one."""
    contents = body.get("contents") or []
    if contents and isinstance(contents[-1], dict) and contents[-1].get("role") == "model":
        return "".join(str(part.get("text", "")) for part in contents[-1].get("parts", []))
    return None


def answer_text(behaviour: Behaviour, prefill: str | None) -> str:
    """What the fake answers: ``text``, or after a prefill it continues, the rest of it."""
    if prefill is None or behaviour.prefill == "ignore":
        return behaviour.text
    if behaviour.text.startswith(prefill):
        return behaviour.text[len(prefill) :]
    return behaviour.text


PREFILL_REFUSAL = "Assistant message prefill is not supported for this model."


def wrong_body_response(behaviour: Behaviour) -> Response | None:
    """A 200 whose body is not what the protocol promises (``Behaviour.wrong_body``), or None."""
    if behaviour.wrong_body == "broken_json":
        return Response(b'{"id": "chatcmpl-fake", "choices": [{"delta": ', media_type="application/json")
    if behaviour.wrong_body == "html":
        return Response(b"<html><body><h1>502 Bad Gateway</h1></body></html>", media_type="text/html")
    return None


# --- the app ------------------------------------------------------------------------------------


def create_fake_app(state: FakeState | None = None) -> Starlette:
    fake = state or FakeState()

    def error_body(provider: str, status: int, message: str, code: str | None = None) -> dict[str, Any]:
        if provider == "gemini":
            return gemini_error(status, message)
        return openai_error(status, message, code)

    async def failure_response(request: Request, provider: str, mode: str) -> Response | None:
        """The response for a non-streaming failure mode, or None when the mode is a stream fault."""
        behaviour = fake.providers[provider].behaviour
        if mode == "hang":
            await wait_or_disconnect(request, 3600)
            return Response(status_code=504)
        if mode == "error":
            headers = {}
            if behaviour.retry_after is not None:
                headers["Retry-After"] = f"{behaviour.retry_after:g}"
            message = {401: "Invalid API key", 429: "Rate limit reached"}.get(
                behaviour.status, "upstream failed"
            )
            return JSONResponse(
                error_body(provider, behaviour.status, message), status_code=behaviour.status, headers=headers
            )
        if mode == "context_too_long":
            if provider == "gemini":
                message = (
                    "The input token count (200000) exceeds the maximum number of tokens allowed (8192)."
                )
                return JSONResponse(gemini_error(400, message), status_code=400)
            message = "This model's maximum context length is 8192 tokens. Please reduce the length."
            return JSONResponse(
                openai_error(400, message, "context_length_exceeded"),
                status_code=400,
            )
        return None

    async def sse(
        request: Request,
        provider: str,
        mode: str,
        events: list[dict[str, Any]],
        closing: list[str],
    ) -> AsyncIterator[bytes]:
        """The SSE body; counts whether it was sent to the end or abandoned by the client (a
        disconnect shows up either as ``wait_or_disconnect`` or as the response being cancelled)."""
        state = fake.providers[provider]
        try:
            async for chunk in sse_body(request, provider, mode, events, closing):
                yield chunk
        except ClientGone:
            state.streams_abandoned += 1
            return
        except (asyncio.CancelledError, GeneratorExit):
            state.streams_abandoned += 1
            raise
        if mode in ("ok", "slow"):
            state.streams_completed += 1

    async def sse_body(
        request: Request,
        provider: str,
        mode: str,
        events: list[dict[str, Any]],
        closing: list[str],
    ) -> AsyncIterator[bytes]:
        state = fake.providers[provider]
        behaviour = state.behaviour
        if behaviour.hold_first_token and await wait_for_release(request, state.released, HOLD_LIMIT_S):
            raise ClientGone
        if behaviour.first_token_delay_s and await wait_or_disconnect(request, behaviour.first_token_delay_s):
            raise ClientGone
        for index, event in enumerate(events):
            if mode == "cut" and index >= behaviour.cut_after_tokens:
                if behaviour.cut_clean:
                    return
                raise BrokenStream("connection dropped mid-stream")
            if mode == "stall" and index == behaviour.stall_after_tokens:
                if await wait_or_disconnect(request, behaviour.stall_for_s):
                    raise ClientGone
                if behaviour.stall_for_s >= HOLD_LIMIT_S:
                    return
            if mode == "malformed" and index >= behaviour.malformed_after_tokens:
                yield INVALID_CHUNK
                return
            if index == behaviour.invalid_chunk_after:
                yield INVALID_CHUNK  # one broken event; the stream goes on
            yield f"data: {json.dumps(event)}\n\n".encode()
            if behaviour.token_delay_s and await wait_or_disconnect(request, behaviour.token_delay_s):
                raise ClientGone
        for line in closing:
            yield line.encode()

    def record(provider: str, body: dict[str, Any], request: Request, *, stream: bool) -> None:
        state = fake.providers[provider]
        state.last_request = body
        state.last_headers = dict(request.headers)
        if stream:
            state.stream_requests += 1
        else:
            state.json_requests += 1

    def prefill_refused(provider: str, prefill: str | None) -> Response | None:
        """Counts a prefill request; the 400 a provider that does not take prefills answers."""
        if prefill is None:
            return None
        state = fake.providers[provider]
        state.prefill_requests += 1
        state.last_prefill = prefill
        if state.behaviour.prefill != "refuse":
            return None
        return JSONResponse(
            error_body(provider, 400, PREFILL_REFUSAL, "prefill_unsupported"), status_code=400
        )

    def key_rejected(request: Request, provider: str) -> Response | None:
        key = request.headers.get("x-goog-api-key") or request.headers.get("authorization", "")
        key = key.removeprefix("Bearer ")
        if key not in fake.providers[provider].behaviour.reject_keys:
            return None
        message = f"Incorrect API key provided: {key}. You can find your API key in your account."
        return JSONResponse(error_body(provider, 401, message, "invalid_api_key"), status_code=401)

    async def read_json(request: Request) -> dict[str, Any]:
        try:
            data = await request.json()
        except json.JSONDecodeError:
            return {}
        return data if isinstance(data, dict) else {}

    async def chat_openai_wire(request: Request, provider: str) -> Response:
        body = await read_json(request)
        stream = bool(body.get("stream"))
        record(provider, body, request, stream=stream)
        if (rejected := key_rejected(request, provider)) is not None:
            return rejected
        prefill = openai_prefill(body)
        if (refused := prefill_refused(provider, prefill)) is not None:
            return refused
        behaviour = fake.providers[provider].behaviour
        mode = fake.effective_mode(provider)
        if behaviour.latency_s and await wait_or_disconnect(request, behaviour.latency_s):
            return Response(status_code=499)
        if mode == "content_policy":
            return openai_wire_policy_refusal(provider, behaviour.refusal_message)
        failed = await failure_response(request, provider, mode)
        if failed is not None:
            return failed
        if (wrong := wrong_body_response(behaviour)) is not None:
            return wrong
        model = behaviour.response_model or str(body.get("model", "fake-model"))
        prompt_tokens = count_prompt_tokens(body)
        text = "" if mode in ("empty", "blocked") else answer_text(behaviour, prefill)
        finish = "content_filter" if mode == "blocked" else "stop"
        if not stream:
            if mode == "malformed":
                return Response(
                    b'{"id": "chatcmpl-fake", "choices": [{"message": ', media_type="application/json"
                )
            return JSONResponse(openai_completion(provider, model, text, prompt_tokens, finish))
        pieces = tokens_of(text) if text else []
        events = [openai_chunk(model, piece, None) for piece in pieces]
        usage = {
            "prompt_tokens": prompt_tokens,
            "completion_tokens": len(pieces),
            "total_tokens": prompt_tokens + len(pieces),
        }
        final = openai_chunk(model, None, finish)
        if provider == "groq" and behaviour.stream_usage:
            final["x_groq"] = {"id": "req_fake", "usage": usage}
        events.append(final)
        if (body.get("stream_options") or {}).get("include_usage") and behaviour.stream_usage:
            usage_chunk = openai_chunk(model, None, None)
            usage_chunk["choices"] = []
            usage_chunk["usage"] = usage
            events.append(usage_chunk)
        closing = [] if behaviour.omit_done else ["data: [DONE]\n\n"]
        return StreamingResponse(
            sse(request, provider, mode, events, closing), media_type="text/event-stream"
        )

    async def openai_chat(request: Request) -> Response:
        return await chat_openai_wire(request, "openai")

    async def groq_chat(request: Request) -> Response:
        return await chat_openai_wire(request, "groq")

    async def openai_embeddings(request: Request) -> Response:
        body = await read_json(request)
        state = fake.providers["openai"]
        state.embedding_requests += 1
        mode = fake.effective_mode("openai")
        failed = await failure_response(request, "openai", mode)
        if failed is not None:
            return failed
        inputs = body.get("input", [])
        texts = [inputs] if isinstance(inputs, str) else [str(item) for item in inputs]
        dim = int(body.get("dimensions") or 1536)
        data = []
        for index, text in enumerate(texts):
            vector = deterministic_vector(text, dim)
            encoded: Any = vector
            if body.get("encoding_format") == "base64":
                encoded = base64.b64encode(struct.pack(f"<{dim}f", *vector)).decode()
            data.append({"object": "embedding", "index": index, "embedding": encoded})
        tokens = sum(len(text.split()) for text in texts)
        return JSONResponse(
            {
                "object": "list",
                "data": data,
                "model": body.get("model", "text-embedding-3-small"),
                "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
            }
        )

    async def gemini_models(request: Request) -> Response:
        model, _, action = request.path_params["target"].partition(":")
        body = await read_json(request)
        if action in ("embedContent", "batchEmbedContents"):
            return await gemini_embeddings(request, action, body)
        if action not in ("generateContent", "streamGenerateContent"):
            return JSONResponse(gemini_error(404, f"unknown method {action!r}"), status_code=404)
        stream = action == "streamGenerateContent"
        record("gemini", body, request, stream=stream)
        if (rejected := key_rejected(request, "gemini")) is not None:
            return rejected
        prefill = gemini_prefill(body)
        if (refused := prefill_refused("gemini", prefill)) is not None:
            return refused
        behaviour = fake.providers["gemini"].behaviour
        mode = fake.effective_mode("gemini")
        if behaviour.latency_s and await wait_or_disconnect(request, behaviour.latency_s):
            return Response(status_code=499)
        failed = await failure_response(request, "gemini", mode)
        if failed is not None:
            return failed
        if (wrong := wrong_body_response(behaviour)) is not None:
            return wrong
        prompt_tokens = count_prompt_tokens(body)
        model = behaviour.response_model or model
        text = answer_text(behaviour, prefill)
        if mode in ("empty", "blocked", "content_policy"):
            make = {
                "empty": gemini_empty_response,
                "blocked": gemini_blocked_response,
                "content_policy": gemini_safety_stop,
            }[mode]
            if not stream:
                return JSONResponse(make(model, prompt_tokens))
            return StreamingResponse(
                sse(request, "gemini", mode, [make(model, prompt_tokens)], []), media_type="text/event-stream"
            )
        if not stream:
            if mode == "malformed":
                return Response(b'{"candidates": [{"content": ', media_type="application/json")
            return JSONResponse(gemini_response(model, text, prompt_tokens, "STOP"))
        pieces = tokens_of(text)
        events = [
            gemini_response(model, piece, prompt_tokens, "STOP" if i == len(pieces) - 1 else None, i + 1)
            for i, piece in enumerate(pieces)
        ]
        if not behaviour.stream_usage:
            for event in events:
                del event["usageMetadata"]
        return StreamingResponse(sse(request, "gemini", mode, events, []), media_type="text/event-stream")

    async def gemini_embeddings(request: Request, action: str, body: dict[str, Any]) -> Response:
        fake.providers["gemini"].embedding_requests += 1
        mode = fake.effective_mode("gemini")
        failed = await failure_response(request, "gemini", mode)
        if failed is not None:
            return failed

        def embed(item: dict[str, Any]) -> dict[str, Any]:
            text = " ".join(str(p.get("text", "")) for p in item.get("content", {}).get("parts", []))
            config = item.get("embedContentConfig") or {}
            dim = int(item.get("outputDimensionality") or config.get("outputDimensionality") or 768)
            return {"values": deterministic_vector(text, dim)}

        if action == "embedContent":
            return JSONResponse({"embedding": embed(body)})
        return JSONResponse({"embeddings": [embed(item) for item in body.get("requests", [])]})

    async def release(request: Request) -> Response:
        provider = request.path_params["provider"]
        if provider not in fake.providers:
            return JSONResponse({"error": f"unknown provider {provider!r}"}, status_code=404)
        fake.providers[provider].released.set()
        return JSONResponse({"released": True})

    async def control(request: Request) -> Response:
        provider = request.path_params["provider"]
        if provider == "reset":
            fake.reset()
            return JSONResponse({"reset": True})
        if provider not in fake.providers:
            return JSONResponse({"error": f"unknown provider {provider!r}"}, status_code=404)
        try:
            behaviour = Behaviour.from_json(await read_json(request))
        except (TypeError, ValueError) as exc:
            return JSONResponse({"error": str(exc)}, status_code=422)
        state = fake.providers[provider]
        state.behaviour = behaviour
        state.failures_served = 0
        state.released = asyncio.Event()
        state.configured_at = fake.now()
        return JSONResponse(asdict(behaviour))

    async def advance_clock(request: Request) -> Response:
        seconds = float((await read_json(request)).get("advance", 0))
        fake.clock_offset += max(0.0, seconds)
        return JSONResponse({"offset": fake.clock_offset})

    async def stats(_: Request) -> Response:
        return JSONResponse(
            {
                name: {
                    # every chat completion, JSON or streamed (the router streams in both modes)
                    "chat_requests": state.json_requests + state.stream_requests,
                    "json_requests": state.json_requests,
                    "stream_requests": state.stream_requests,
                    "requests": state.json_requests + state.stream_requests,
                    "embedding_requests": state.embedding_requests,
                    "streams_completed": state.streams_completed,
                    "streams_abandoned": state.streams_abandoned,
                    "prefill_requests": state.prefill_requests,
                    "last_prefill": state.last_prefill,
                    "behaviour": asdict(state.behaviour),
                    "last_request": state.last_request,
                    "authorization": state.last_headers.get("authorization")
                    or state.last_headers.get("x-goog-api-key"),
                }
                for name, state in fake.providers.items()
            }
        )

    routes = [
        Route("/v1/chat/completions", openai_chat, methods=["POST"]),
        Route("/v1/embeddings", openai_embeddings, methods=["POST"]),
        Route("/openai/v1/chat/completions", groq_chat, methods=["POST"]),
        Route("/v1beta/models/{target:path}", gemini_models, methods=["POST"]),
        Route("/v1/models/{target:path}", gemini_models, methods=["POST"]),  # the SDK's default version
        Route("/_control/stats", stats, methods=["GET"]),
        Route("/_control/clock", advance_clock, methods=["POST"]),
        Route("/_control/{provider}/release", release, methods=["POST"]),
        Route("/_control/{provider}", control, methods=["POST"]),
    ]
    return Starlette(routes=routes)


# --- running it ---------------------------------------------------------------------------------


class FakeLLMServer:
    """The fake on a free port in a background thread; controlled over HTTP like a remote one."""

    def __init__(self, host: str = "127.0.0.1", port: int = 0) -> None:
        self.host = host
        self._port = port
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self._port}"

    @property
    def openai_base_url(self) -> str:
        return self.url + "/v1"

    @property
    def groq_base_url(self) -> str:
        return self.url

    @property
    def gemini_base_url(self) -> str:
        return self.url

    def start(self, timeout: float = 10.0) -> FakeLLMServer:
        config = uvicorn.Config(
            create_fake_app(),
            host=self.host,
            port=self._port,
            log_level="critical",  # deliberate faults (dropped streams) are not errors here
            log_config=None,  # leave the host process's logging configuration alone
            lifespan="off",
            timeout_graceful_shutdown=1,
        )
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._server.run, name="fake-llm-server", daemon=True)
        self._thread.start()
        deadline = time.monotonic() + timeout
        while not self._server.started:
            if time.monotonic() > deadline or not self._thread.is_alive():
                raise RuntimeError("fake LLM server did not start")
            time.sleep(0.01)
        sockets = self._server.servers[0].sockets
        self._port = int(sockets[0].getsockname()[1])
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.should_exit = True
        if self._thread is not None:
            self._thread.join(timeout=5)

    def configure(self, provider: str, **behaviour: Any) -> None:
        response = httpx.post(f"{self.url}/_control/{provider}", json=behaviour, timeout=5)
        response.raise_for_status()

    def reset(self) -> None:
        httpx.post(f"{self.url}/_control/reset", timeout=5).raise_for_status()

    def release(self, provider: str) -> None:
        """Let a stream held by ``hold_first_token`` send its first token."""
        httpx.post(f"{self.url}/_control/{provider}/release", timeout=5).raise_for_status()

    def advance_clock(self, seconds: float) -> None:
        """Move the fake's clock forward (ends ``fail_for_s`` outages without waiting)."""
        httpx.post(f"{self.url}/_control/clock", json={"advance": seconds}, timeout=5).raise_for_status()

    def stats(self) -> dict[str, Any]:
        response = httpx.get(f"{self.url}/_control/stats", timeout=5)
        response.raise_for_status()
        data: dict[str, Any] = response.json()
        return data

    def requests(self, provider: str) -> int:
        return int(self.stats()[provider]["requests"])


def main(argv: list[str] | None = None, run: Callable[..., None] = uvicorn.run) -> None:
    parser = argparse.ArgumentParser(
        description="Fake OpenAI / Groq / Gemini server for tests and benchmarks"
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8099)
    args = parser.parse_args(argv)
    root = f"http://{args.host}:{args.port}"
    print(
        f"fake LLM server on {root}: OPENAI_BASE_URL={root}/v1 GROQ_BASE_URL={root} GEMINI_BASE_URL={root}",
        flush=True,
    )
    run(create_fake_app(), host=args.host, port=args.port, log_level="warning")


if __name__ == "__main__":
    main()
