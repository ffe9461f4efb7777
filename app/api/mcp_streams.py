"""The MCP endpoint's bounds on event streams (``app.api.mcp_server``): a response that turns
into an event stream takes one of the principal's stream slots and ends at ``MCP_STREAM_MAX_S``."""

from __future__ import annotations

import anyio
import structlog
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.api.auth import PRINCIPAL_STATE_KEY
from app.api.deps import resources_of
from app.auth.principal import Principal
from app.errors import problem_for_exception
from app.limits.enforcement import principal_identity
from app.limits.errors import TooManyStreamsError
from app.limits.streams import StreamSlots

logger = structlog.get_logger(__name__)


def _is_event_stream(message: Message) -> bool:
    return any(
        name.lower() == b"content-type" and value.startswith(b"text/event-stream")
        for name, value in message.get("headers", ())
    )


class _StreamBound:
    """One request's ``send``, watched: when the response starts as an event stream it takes a
    stream slot (or answers 429 ``too_many_streams`` instead and cancels the handler) and gets a
    deadline; whatever happens, ``finish`` ends the response and gives the slot back."""

    def __init__(
        self,
        scope: Scope,
        send: Send,
        slots: StreamSlots,
        identity: str,
        max_s: float,
        cancel: anyio.CancelScope,
    ) -> None:
        self._scope, self._send, self._slots, self._identity = scope, send, slots, identity
        self._max_s, self._cancel = max_s, cancel
        self._slot: str | None = None
        self.streaming = self.ended = False

    async def send(self, message: Message) -> None:
        if self.ended:
            return
        if message["type"] == "http.response.start" and _is_event_stream(message):
            try:
                self._slot = await self._slots.acquire(self._identity)
            except TooManyStreamsError as exc:
                await self._refuse(exc)
                return
            self.streaming = True
            self._cancel.deadline = anyio.current_time() + self._max_s
        if message["type"] == "http.response.body" and not message.get("more_body", False):
            self.ended = True
        await self._send(message)

    async def _refuse(self, exc: TooManyStreamsError) -> None:
        response = await problem_for_exception(Request(self._scope), exc)
        assert response is not None  # an AppError always has its problem response
        self.ended = True
        self._cancel.cancel()
        await response(self._scope, _no_body, self._send)

    async def finish(self) -> None:
        with anyio.CancelScope(shield=True):
            try:
                if self.streaming and not self.ended:
                    logger.info("mcp_stream_ended_at_deadline", max_s=self._max_s)
                    self.ended = True
                    await self._send({"type": "http.response.body", "body": b"", "more_body": False})
            except OSError:  # the client has gone already
                pass
            finally:
                await self._slots.release(self._identity, self._slot)


async def _no_body() -> Message:
    return {"type": "http.request", "body": b"", "more_body": False}


class BoundedMCPEndpoint:
    """The SDK's handler, served to POST only (GET would open the standalone event stream, which
    never ends and has nothing to carry here: 405, as the MCP spec allows). A response that turns
    into an event stream takes one of the principal's ``MAX_STREAMS_PER_PRINCIPAL`` slots (shared
    with the chat streams) and ends after ``MCP_STREAM_MAX_S``."""

    def __init__(self, handler: ASGIApp) -> None:
        self._handler = handler

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["method"] != "POST":
            await Response(status_code=405, headers={"Allow": "POST"})(scope, receive, send)
            return
        principal = scope.get("state", {}).get(PRINCIPAL_STATE_KEY)
        if not isinstance(principal, Principal):  # the middleware authenticates every /mcp request
            await self._handler(scope, receive, send)
            return
        resources = resources_of(scope["app"])
        with anyio.CancelScope() as cancel:
            bound = _StreamBound(
                scope,
                send,
                resources.stream_slots,
                principal_identity(principal),
                resources.settings.mcp_stream_max_s,
                cancel,
            )
            try:
                await self._handler(scope, receive, bound.send)
            finally:
                await bound.finish()
