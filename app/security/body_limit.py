"""Request body size limits: ``MAX_REQUEST_BODY_MB`` in general; multipart upload routes get
``MAX_UPLOAD_MB`` plus room for the multipart framing (the documents service checks the file
itself). Bodies are counted as they stream, so a missing or lying Content-Length does not help."""

from __future__ import annotations

from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.errors import AppError, problem_response

MULTIPART_OVERHEAD_BYTES = 1024 * 1024


class PayloadTooLargeError(AppError, HTTPException):  # type: ignore[misc]  # both set headers (a dict)
    """Raised from ``receive``. Also an ``HTTPException``, so that FastAPI's body parsing lets it
    through to the problem+json handler (it turns other exceptions into a generic 400)."""

    status = 413
    code = "payload_too_large"
    title = "Payload too large"

    def __init__(self, limit: int) -> None:
        detail = f"the request body exceeds the limit of {limit} bytes"
        HTTPException.__init__(self, 413, detail)
        AppError.__init__(self, detail)
        self.limit = limit


class BodySizeLimitMiddleware:
    def __init__(
        self,
        app: ASGIApp,
        *,
        max_bytes: int,
        upload_max_bytes: int | None = None,
        upload_prefixes: tuple[str, ...] = ("/api/v1/docs",),
    ) -> None:
        self.app = app
        self.max_bytes = max_bytes
        self.upload_max_bytes = (upload_max_bytes or max_bytes) + MULTIPART_OVERHEAD_BYTES
        self.upload_prefixes = upload_prefixes

    def limit_for(self, scope: Scope) -> int:
        path: str = scope.get("path", "")
        content_type = dict(scope.get("headers") or []).get(b"content-type", b"")
        is_upload = content_type.lower().startswith(b"multipart/form-data") and any(
            path.startswith(prefix) for prefix in self.upload_prefixes
        )
        return self.upload_max_bytes if is_upload else self.max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit = self.limit_for(scope)
        declared = dict(scope.get("headers") or []).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > limit:
            await self._refuse(scope, receive, send, limit)
            return
        received = 0
        started = False

        async def counting_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    raise PayloadTooLargeError(limit)
            return message

        async def tracking_send(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, counting_receive, tracking_send)
        except PayloadTooLargeError:
            if started:
                raise
            await self._refuse(scope, receive, send, limit)

    async def _refuse(self, scope: Scope, receive: Receive, send: Send, limit: int) -> None:
        response = problem_response(
            status=413,
            code="payload_too_large",
            title="Payload too large",
            detail=f"the request body exceeds the limit of {limit} bytes",
            headers={"Connection": "close"},
        )
        await response(scope, receive, send)
