"""Authentication before the body: no byte of a request body is read for a client that has not
shown valid credentials (FastAPI reads and parses the body before any dependency runs)."""

from __future__ import annotations

from typing import cast

from starlette.requests import Request
from starlette.routing import Match
from starlette.types import ASGIApp, Receive, Scope, Send

from app.api.openai_compat import OPENAI_PREFIX, openai_error_for_exception
from app.auth.dependencies import authenticate
from app.errors import problem_for_exception
from app.resources import Resources

PROTECTED_PREFIXES = ("/api/", OPENAI_PREFIX, "/mcp")


def _serves(scope: Scope) -> bool:
    """Whether some endpoint takes this method at this path."""
    return any(route.matches(scope)[0] is Match.FULL for route in scope["app"].router.routes)


class AuthenticateFirstMiddleware:
    """For every request under ``/api/``, ``/v1/`` (the OpenAI-compatible surface) and ``/mcp``:
    the per-IP budget, then the credential, then the app. Refusals are OpenAI's error shape under
    ``/v1/`` and problem+json everywhere else.

    A refusal (401, 429, or 503 when the database is down) is answered from the headers alone,
    so an anonymous 11 MB upload costs its sender a per-IP hit and the server nothing more.
    CORS preflights (``OPTIONS``) pass through to the CORS middleware outside this one."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if (
            scope["type"] != "http"
            or scope["method"] == "OPTIONS"
            or not str(scope["path"]).startswith(PROTECTED_PREFIXES)
            or not _serves(scope)  # the router answers 404/405 without reading a body
        ):
            await self.app(scope, receive, send)
            return
        request = Request(scope)  # no receive: reading the body here is impossible by design
        resources = cast(Resources, scope["app"].state.resources)
        try:
            await authenticate(request, resources)
        except Exception as exc:
            if str(scope["path"]).startswith(OPENAI_PREFIX):
                await (await openai_error_for_exception(request, exc))(scope, receive, send)
                return
            response = await problem_for_exception(request, exc)
            if response is None:
                raise
            await response(scope, receive, send)
            return
        await self.app(scope, receive, send)
