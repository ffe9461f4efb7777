"""The one way an answer is streamed over HTTP, whichever wire format renders its events
(``/api/v1/chat``'s named SSE events, ``/v1/chat/completions``' chunks): ``stream_answer`` checks
the input (a 4xx before the 200), takes a stream slot (429 ``too_many_streams`` at the cap), sends
the pipeline's events with keep-alives while the model thinks, and gives the slot and the token
reservation back however the stream ends (done, error, or the client gone)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable
from contextlib import aclosing
from typing import Any, cast

import anyio
import structlog
from fastapi.responses import StreamingResponse
from starlette.types import Receive, Scope, Send

from app.auth.principal import Principal
from app.chat.service import ChatService
from app.chat.types import ChatEvent, ChatInput, DoneEvent, ErrorEvent
from app.errors import DATABASE_UNAVAILABLE_ERRORS, AppError
from app.limits.enforcement import principal_identity
from app.limits.streams import StreamSlots
from app.observability.context import current_trace_id
from app.observability.draining import SHUTDOWN, SHUTTING_DOWN_CODE, SHUTTING_DOWN_MESSAGE

logger = structlog.get_logger(__name__)

KEEP_ALIVE = b": keep-alive\n\n"
STREAM_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no", "Connection": "keep-alive"}

Render = Callable[[ChatEvent], bytes]


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


async def _rendered(events: AsyncIterator[ChatEvent], render: Render, every_s: float) -> AsyncIterator[bytes]:
    """Each event as ``render`` writes it, a keep-alive comment for each quiet ``every_s``."""
    async with aclosing(with_heartbeats(events, every_s)) as items:
        async for item in items:
            data = KEEP_ALIVE if item is None else render(item)
            if data:
                yield data


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


async def stream_answer(
    service: ChatService,
    principal: Principal,
    chat: ChatInput,
    slots: StreamSlots,
    render: Render,
    heartbeat_s: float,
) -> StreamingResponse:
    """The answer to ``chat`` as an event stream rendered by ``render``."""
    identity = principal_identity(principal)
    try:
        service.validate(chat)  # bad input is a 4xx before the stream starts
        slot = await slots.acquire(identity)  # 429 too_many_streams at the cap
    except BaseException:
        await service.release(chat)
        raise
    events = service.stream(principal, chat)

    async def release() -> None:
        await slots.release(identity, slot)
        await service.release(chat)  # nothing left to give back once settled

    return ClosingStreamingResponse(
        _released_after(_rendered(events, render, heartbeat_s), release),
        media_type="text/event-stream",
        headers=STREAM_HEADERS,
    )
