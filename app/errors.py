"""The service's error hierarchy and its rendering as RFC 9457 problem+json.

Every error the service raises is an ``AppError`` with a stable ``code``, an HTTP ``status`` and a
``title``; one handler turns it into ``application/problem+json`` carrying the request's
``trace_id`` (``tests/unit/test_exception_tree.py`` keeps it so). The tree::

    AppError                      status/code set per class; ``detail`` per instance
    ├── NotFoundError             404: API keys, documents, jobs, sessions
    ├── ConflictError             409: a deleted document
    ├── ServiceUnavailableError   503
    ├── InternalError             500 internal_error, generic detail; str() keeps the operator's text
    │   ├── EmbeddingError        app.rag.embeddings: the embedding provider failed
    │   └── StartupError          app.embedded.errors: the CLI prints it and exits with status 2
    ├── ProviderError             app.llm.errors, 502 (timeout 504, busy 503): an LLM provider
    │                             failed; the chain catches it and falls back, no client sees it
    └── the client's errors, each in its capability's module: auth (401/403/503), limits (429/503),
        documents (4xx), rag (PromptTooLargeError 422 ``question_too_long``, …),
        llm (UnknownModelError 422 ``unknown_model``; a caller's own provider key:
        ProviderKeyRejected 422 ``provider_key_rejected``, InvalidProviderKey 422
        ``invalid_provider_key``; a provider's content policy refused: AnswerRefused 422
        ``content_filtered``)
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any, ClassVar

import structlog
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from sqlalchemy import exc as sa_exc
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import Match

from app.observability.context import current_trace_id

PROBLEM_JSON = "application/problem+json"
PROBLEM_TYPE_BASE = "https://ragchat.dev/problems/"

logger = structlog.get_logger(__name__)


class AppError(Exception):
    """Base class: subclasses set ``status``, ``code`` and ``title``; ``detail`` is per instance."""

    status: ClassVar[int] = 400
    code: ClassVar[str] = "bad_request"
    title: ClassVar[str] = "Bad request"

    def __init__(
        self,
        detail: str | None = None,
        *,
        headers: dict[str, str] | None = None,
        extra: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(detail or self.title)
        self.detail = detail or self.title
        self.headers = headers or {}
        self.extra = extra or {}


class NotFoundError(AppError):
    status = 404
    code = "not_found"
    title = "Not found"


class ConflictError(AppError):
    status = 409
    code = "conflict"
    title = "Conflict"


class ServiceUnavailableError(AppError):
    status = 503
    code = "service_unavailable"
    title = "Service unavailable"


INTERNAL_ERROR_DETAIL = "An unexpected error occurred; quote the trace_id when reporting it."


class InternalError(AppError):
    """The service or a dependency it cannot answer without failed, not the request. A client
    sees exactly what an unexpected exception shows (500 ``internal_error``, no internals);
    ``str()`` and ``message`` keep the text for the operator (logs, the CLI)."""

    status = 500
    code = "internal_error"
    title = "Internal server error"

    def __init__(self, message: str) -> None:
        super().__init__(INTERNAL_ERROR_DETAIL)
        self.message = message

    def __str__(self) -> str:
        return self.message


def problem_response(
    *,
    status: int,
    code: str,
    title: str,
    detail: str,
    headers: dict[str, str] | None = None,
    extra: dict[str, Any] | None = None,
) -> JSONResponse:
    body: dict[str, Any] = {
        "type": PROBLEM_TYPE_BASE + code,
        "title": title,
        "status": status,
        "detail": detail,
        "code": code,
        "trace_id": current_trace_id(),
    }
    body.update(extra or {})
    return JSONResponse(body, status_code=status, headers=headers, media_type=PROBLEM_JSON)


async def _handle_app_error(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, AppError)
    if exc.status >= 500:
        # The service or a dependency failed, not the request: the operator must hear of it
        # (``str()`` of an ``InternalError`` is its real message; the client never sees it).
        logger.error("server_error", code=exc.code, error_type=type(exc).__name__, error=str(exc))
    return problem_response(
        status=exc.status,
        code=exc.code,
        title=exc.title,
        detail=exc.detail,
        headers=exc.headers,
        extra=exc.extra,
    )


def _validation_code(errors: list[dict[str, Any]]) -> str:
    """``malformed_json``, ``invalid_<field>`` for one bad body/query/path field, else
    ``validation_error``. Stable, so clients can branch on it."""
    if any(e["type"] == "json_invalid" for e in errors):
        return "malformed_json"
    fields = {
        str(next((p for p in e["loc"][1:] if isinstance(p, str)), ""))
        for e in errors
        if e["loc"] and e["loc"][0] in ("body", "query", "path")
    }
    if len(fields) == 1 and (field := fields.pop()):
        return f"invalid_{field}"
    return "validation_error"


def _printable(text: str) -> str:
    """A lone surrogate (which a JSON escape can carry into a dict key) as its ``\\udXXX`` escape,
    so the problem can be encoded as UTF-8."""
    return text.encode("utf-8", "backslashreplace").decode("utf-8")


async def _handle_validation_error(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    # A location can name a client's dict key, which may hold a lone surrogate: rendered escaped.
    errors = [
        {
            "loc": [_printable(part) if isinstance(part, str) else part for part in err.get("loc", ())],
            "msg": _printable(str(err.get("msg", ""))),
            "type": err.get("type", ""),
        }
        for err in exc.errors()
    ]
    first = errors[0] if errors else {"loc": [], "msg": "invalid request"}
    where = ".".join(str(part) for part in first["loc"])
    code = _validation_code(errors)
    return problem_response(
        status=422,
        code=code,
        title="Request validation failed",
        detail=f"{where}: {first['msg']}" if where else str(first["msg"]),
        extra={"errors": errors},
    )


_HTTP_CODES = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    406: "not_acceptable",
    413: "payload_too_large",
    415: "unsupported_media_type",
}


_METHODS = ("DELETE", "GET", "HEAD", "PATCH", "POST", "PUT")


def _allowed_methods(request: Request) -> list[str]:
    """Every method some route serves at this path (Starlette's 405 names only the first
    matching route's). Asks the router itself, method by method, so included routers count."""
    routes = request.app.router.routes
    methods = [
        method
        for method in _METHODS
        if any(route.matches({**request.scope, "method": method})[0] is Match.FULL for route in routes)
    ]
    return sorted([*methods, "OPTIONS"]) if methods else []


async def _handle_http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, StarletteHTTPException)
    headers = dict(exc.headers or {})
    if exc.status_code == 405 and (allowed := _allowed_methods(request)):
        headers["Allow"] = ", ".join(allowed)
        if request.method == "OPTIONS":  # not a CORS preflight (the CORS middleware answers those)
            return Response(status_code=204, headers=headers)
    code = _HTTP_CODES.get(exc.status_code, f"http_{exc.status_code}")
    return problem_response(
        status=exc.status_code,
        code=code,
        title=code.replace("_", " ").capitalize(),
        detail=str(exc.detail),
        headers=headers,
    )


DATABASE_RETRY_AFTER_S = 1


async def _handle_database_unavailable(_: Request, exc: Exception) -> JSONResponse:
    """PostgreSQL down, restarting, or a connection lost mid-request: a 503 the client may retry,
    never a 500. The pool pre-pings, so requests succeed again as soon as the server is back."""
    logger.warning("database_unavailable", error_type=type(getattr(exc, "orig", exc) or exc).__name__)
    return problem_response(
        status=503,
        code="database_unavailable",
        title="Database unavailable",
        detail="The database is unreachable or restarting; retry shortly.",
        headers={"Retry-After": str(DATABASE_RETRY_AFTER_S)},
    )


def _data_error_reason(exc: sa_exc.DataError) -> str:
    message = str(getattr(exc, "orig", exc) or "").lower()
    # psycopg refuses NUL in text itself; PostgreSQL refuses it in jsonb as a Unicode escape.
    if any(sign in message for sign in ("nul", "0x00", "\\u0000", "unicode escape")):
        return "a text value contains a NUL (\\u0000) character"
    if "out of range" in message:
        return "a number is out of range"
    return "a value has the wrong form for its field"


async def _handle_data_error(_: Request, exc: Exception) -> JSONResponse:
    """The database refused a value the request carried (NUL in text, a number out of range):
    the client's input, so a 422, and nothing of the request was stored."""
    assert isinstance(exc, sa_exc.DataError)
    return problem_response(
        status=422,
        code="invalid_value",
        title="Invalid value",
        detail=f"The request could not be stored: {_data_error_reason(exc)}.",
    )


async def _handle_unexpected(_: Request, exc: Exception) -> JSONResponse:
    logger.exception("unhandled_error", error_type=type(exc).__name__)
    return problem_response(
        status=500,
        code="internal_error",
        title="Internal server error",
        detail=INTERNAL_ERROR_DETAIL,
    )


Handler = Callable[[Request, Exception], Awaitable[Response]]

# Every expected failure and its problem response, most specific first (DataError is a DBAPIError
# like OperationalError, so it comes before the "database unavailable" group).
DATABASE_UNAVAILABLE_ERRORS = (sa_exc.OperationalError, sa_exc.InterfaceError, sa_exc.TimeoutError)

_HANDLERS: tuple[tuple[type[Exception], Handler], ...] = (
    (AppError, _handle_app_error),
    (RequestValidationError, _handle_validation_error),
    (StarletteHTTPException, _handle_http_error),
    (sa_exc.DataError, _handle_data_error),
    *((kind, _handle_database_unavailable) for kind in DATABASE_UNAVAILABLE_ERRORS),
)


async def problem_for_exception(request: Request, exc: Exception) -> Response | None:
    """The problem response for an expected failure raised outside the endpoint (middleware);
    None for anything unexpected, which the caller re-raises."""
    for kind, handler in _HANDLERS:
        if isinstance(exc, kind):
            return await handler(request, exc)
    return None


def install_error_handlers(app: FastAPI) -> None:
    for kind, handler in _HANDLERS:
        app.add_exception_handler(kind, handler)
    app.add_exception_handler(Exception, _handle_unexpected)
