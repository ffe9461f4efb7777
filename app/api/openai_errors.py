"""Errors in OpenAI's shape for the ``/v1/`` surface: ``{"error": {"message", "type", "code",
"param", "trace_id"}}``. Classification is the service's own (``problem_for_exception``), so
``/v1`` and ``/api/v1`` always agree on what went wrong; only the rendering differs."""

from __future__ import annotations

import json
from typing import Any

import structlog
from fastapi import Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response

from app.errors import problem_for_exception
from app.llm.errors import UnknownModelError
from app.observability.context import current_trace_id

logger = structlog.get_logger(__name__)

OPENAI_PREFIX = "/v1/"

_TYPE_BY_STATUS = {429: "rate_limit_error"}
_CODE_BY_STATUS = {401: "invalid_api_key", 403: "permission_denied"}
# The service's codes that OpenAI's clients know under OpenAI's own name: a provider's content
# policy refused the request (``content_filtered`` on /api/v1) is OpenAI's 400
# ``content_policy_violation``, the message naming the provider and quoting its reason.
_OPENAI_CODE = {"content_filtered": "content_policy_violation"}


def openai_code(code: str) -> str:
    """The ``code`` an OpenAI client expects for one of this service's stable codes."""
    return _OPENAI_CODE.get(code, code)


def stream_error_type(code: str) -> str:
    """The ``type`` of an error ending a stream: the request's own (a content-policy refusal) or
    the server's (everything else that breaks a stream)."""
    return "invalid_request_error" if code in _OPENAI_CODE else "server_error"


def openai_error_body(
    *, message: str, type_: str, code: str | None, param: str | None = None
) -> dict[str, Any]:
    return {
        "error": {
            "message": message,
            "type": type_,
            "code": code,
            "param": param,
            "trace_id": current_trace_id(),
        }
    }


def _error_type(status: int) -> str:
    if status >= 500:
        return "server_error"
    return _TYPE_BY_STATUS.get(status, "invalid_request_error")


def _param(problem: dict[str, Any]) -> str | None:
    """The offending body field of a validation problem (``messages``, ``metadata.session_id``)."""
    errors = problem.get("errors") or []
    if not errors:
        return None
    location = [str(part) for part in errors[0].get("loc", [])]
    if location and location[0] in ("body", "query", "path"):
        location = location[1:]
    return ".".join(location) or None


def model_not_found(message: str) -> JSONResponse:
    body = openai_error_body(
        message=message, type_="invalid_request_error", code="model_not_found", param="model"
    )
    return JSONResponse(body, status_code=404)


async def openai_error_for_exception(request: Request, exc: Exception) -> Response:
    """The OpenAI-shaped response for any failure on this surface.

    Classification (status, stable code, detail, headers such as ``Retry-After``) is the service's
    own (``problem_for_exception``), so ``/v1`` and ``/api/v1`` always agree on what went wrong;
    only the rendering differs. 422 becomes 400, as OpenAI reports invalid input."""
    if isinstance(exc, UnknownModelError):
        return model_not_found(exc.detail)
    problem_response = await problem_for_exception(request, exc)
    if problem_response is None:
        logger.exception("unhandled_error", error_type=type(exc).__name__)
        body = openai_error_body(
            message="An unexpected error occurred; quote the trace_id when reporting it.",
            type_="server_error",
            code="internal_error",
        )
        return JSONResponse(body, status_code=500)
    problem: dict[str, Any] = json.loads(bytes(problem_response.body))
    status = problem_response.status_code
    if status == 422:
        status = 400
    code = _CODE_BY_STATUS.get(status, openai_code(str(problem.get("code") or "error")))
    param = _param(problem) if isinstance(exc, RequestValidationError) else None
    body = openai_error_body(
        message=str(problem.get("detail") or problem.get("title") or "request failed"),
        type_=_error_type(status),
        code=code,
        param=param,
    )
    headers = {
        name: value
        for name, value in problem_response.headers.items()
        if name.lower() not in ("content-type", "content-length")
    }
    return JSONResponse(body, status_code=status, headers=headers)
