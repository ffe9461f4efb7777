"""Request line and header size limits. uvicorn's httptools parser sets none, so a client could
send megabytes of URL or headers, which every later step then copies, parses and logs. Requests
over a limit get a problem+json 414 (``uri_too_long``) or 431 (``headers_too_large``) from the
edge layer (``app.api.middleware``) before anything else sees them."""

from __future__ import annotations

from starlette.responses import Response
from starlette.types import Scope

from app.errors import problem_response

MAX_URL_BYTES = 8192
MAX_HEADER_BYTES = 8192
MAX_HEADERS_TOTAL_BYTES = 32768


def url_bytes(scope: Scope) -> int:
    """Length of the request target as sent: raw path, plus ``?`` and the query string."""
    raw_path = scope.get("raw_path")
    path_length = len(raw_path) if raw_path is not None else len(str(scope.get("path", "")).encode())
    query: bytes = scope.get("query_string") or b""
    return path_length + (len(query) + 1 if query else 0)


def header_problem(scope: Scope) -> str | None:
    """Why the headers are refused (``None`` when they are within the limits). A header counts
    its name and value."""
    total = 0
    for name, value in scope.get("headers") or []:
        size = len(name) + len(value)
        if size > MAX_HEADER_BYTES:
            return f"a request header field exceeds the limit of {MAX_HEADER_BYTES} bytes"
        total += size
        if total > MAX_HEADERS_TOTAL_BYTES:
            return f"the request header fields exceed the limit of {MAX_HEADERS_TOTAL_BYTES} bytes in total"
    return None


def size_refusal(scope: Scope) -> Response | None:
    """The 414 or 431 for a request whose URL or headers are over a limit; None for the others."""
    if url_bytes(scope) > MAX_URL_BYTES:
        return problem_response(
            status=414,
            code="uri_too_long",
            title="URI too long",
            detail=f"the request URL exceeds the limit of {MAX_URL_BYTES} bytes",
            headers={"Connection": "close"},
        )
    if (problem := header_problem(scope)) is not None:
        return problem_response(
            status=431,
            code="headers_too_large",
            title="Request header fields too large",
            detail=problem,
            headers={"Connection": "close"},
        )
    return None
