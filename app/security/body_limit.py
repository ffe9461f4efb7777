"""Request body size limits: ``MAX_REQUEST_BODY_MB`` in general; multipart upload routes get
``MAX_UPLOAD_MB`` plus room for the multipart framing (the documents service checks the file
itself). Bodies are counted as they stream, so a missing or lying Content-Length does not help.
The edge layer (``app.api.middleware``) applies them: a declared length over the limit is refused
at once, a body that grows past it stops with ``PayloadTooLargeError`` from ``receive``."""

from __future__ import annotations

from dataclasses import dataclass

from starlette.exceptions import HTTPException
from starlette.responses import Response
from starlette.types import Message, Receive, Scope

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


def _header(scope: Scope, name: bytes) -> bytes | None:
    for key, value in scope.get("headers") or []:
        if key == name:
            return bytes(value)
    return None


@dataclass(frozen=True)
class BodyLimits:
    max_bytes: int
    upload_max_bytes: int | None = None
    upload_prefixes: tuple[str, ...] = ("/api/v1/docs",)

    def limit_for(self, scope: Scope) -> int:
        path: str = scope.get("path", "")
        if any(path.startswith(prefix) for prefix in self.upload_prefixes):
            content_type = _header(scope, b"content-type") or b""
            if content_type.lower().startswith(b"multipart/form-data"):
                return (self.upload_max_bytes or self.max_bytes) + MULTIPART_OVERHEAD_BYTES
        return self.max_bytes


def declares_too_much(scope: Scope, limit: int) -> bool:
    declared = _header(scope, b"content-length")
    return declared is not None and declared.isdigit() and int(declared) > limit


def counting_receive(receive: Receive, limit: int) -> Receive:
    """``receive`` that raises ``PayloadTooLargeError`` once the body has grown past ``limit``."""
    received = 0

    async def counting() -> Message:
        nonlocal received
        message = await receive()
        if message["type"] == "http.request":
            received += len(message.get("body", b""))
            if received > limit:
                raise PayloadTooLargeError(limit)
        return message

    return counting


def payload_too_large(limit: int) -> Response:
    return problem_response(
        status=413,
        code="payload_too_large",
        title="Payload too large",
        detail=f"the request body exceeds the limit of {limit} bytes",
        headers={"Connection": "close"},
    )
