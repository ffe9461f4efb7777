"""Authentication at the HTTP edge.

``AuthenticateFirstMiddleware`` authenticates every protected request from its headers before any
byte of its body is read (FastAPI reads and parses the body before any dependency runs).
``CurrentPrincipal`` hands the endpoint that principal; ``require_role`` authorises."""

from __future__ import annotations

import contextlib
from collections.abc import Awaitable, Callable
from typing import Annotated

import anyio
from fastapi import Depends, Request
from starlette.routing import BaseRoute, Match
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.api.deps import resources_of
from app.api.openai_errors import OPENAI_PREFIX, openai_error_for_exception
from app.auth.errors import AuthenticationError, PermissionDeniedError
from app.auth.principal import Principal, Role
from app.errors import problem_for_exception
from app.limits.enforcement import charge_deferred_ip, charge_ip, defer_ip_charge
from app.limits.errors import RateLimitedError, RateLimitUnavailableError
from app.limits.limiter import RequestLimiter
from app.observability.http import ROUTE_TEMPLATE_STATE_KEY
from app.resources import Resources

PROTECTED_PREFIXES = ("/api/", OPENAI_PREFIX, "/mcp")
PRINCIPAL_STATE_KEY = "principal"
_IP_REFUSALS = (RateLimitedError, RateLimitUnavailableError)


def _presented_credential(request: Request) -> str | None:
    header_key = request.headers.get("x-api-key")
    if header_key:
        return header_key.strip()
    authorization = request.headers.get("authorization", "")
    scheme, _, token = authorization.partition(" ")
    if scheme.lower() == "bearer" and token.strip():
        return token.strip()
    return None


async def authenticate(request: Request, services: Resources, *, defer_ip: bool = False) -> Principal:
    """Charge the per-IP budget, then verify the presented credential; reads headers only.

    Charged before anything else, so anonymous requests and guessed credentials cost the per-IP
    budget too. With ``defer_ip`` (the middleware, which then calls ``charge_deferred_ip`` before
    the response starts), a key this process already trusts, known without any I/O, leaves the
    per-IP charge to the request's first budget charge: one Redis round trip for both."""
    credential = _presented_credential(request)
    principal = services.authenticator.trusted(credential) if defer_ip and credential else None
    if principal is not None:
        defer_ip_charge(request, services.limiter)
    else:
        await charge_ip(request, services.limiter)
        if credential is None:
            raise AuthenticationError("send an API key in X-API-Key or a bearer token in Authorization")
        principal = await services.authenticator.principal_for(credential)
    state = request.scope.setdefault("state", {})
    state["principal_id"] = principal.id
    state[PRINCIPAL_STATE_KEY] = principal
    return principal


async def get_current_principal(request: Request) -> Principal:
    """The principal the middleware authenticated (or, outside it, authenticate now)."""
    principal = request.scope.get("state", {}).get(PRINCIPAL_STATE_KEY)
    if isinstance(principal, Principal):
        return principal
    return await authenticate(request, resources_of(request.app))


CurrentPrincipal = Annotated[Principal, Depends(get_current_principal)]


def require_role(role: Role) -> Callable[[Request], Awaitable[Principal]]:
    """A dependency of its own rather than one on ``CurrentPrincipal``: each level of dependencies
    costs FastAPI a solving step on every request."""

    async def dependency(request: Request) -> Principal:
        principal = await get_current_principal(request)
        if not principal.role.allows(role):
            raise PermissionDeniedError(f"this action needs the {role.value} role")
        return principal

    return dependency


ReaderPrincipal = Annotated[Principal, Depends(require_role(Role.reader))]
EditorPrincipal = Annotated[Principal, Depends(require_role(Role.editor))]
AdminPrincipal = Annotated[Principal, Depends(require_role(Role.admin))]


SERVED_MEMO_SIZE = 512
MEMO_PATH_CHARS = 256


def _serves(scope: Scope) -> tuple[bool, str | None]:
    """Whether some endpoint takes this method at this path, and its route template (for the
    access log and the HTTP metrics of a request refused here, before the router names it)."""
    for route in scope["app"].router.routes:
        if route.matches(scope)[0] is Match.FULL:
            return True, _template(route, scope)
    return False, None


def _template(route: BaseRoute, scope: Scope) -> str | None:
    # FastAPI's included routers match as one route; each of their routes, fully prefixed, is
    # one of their effective route contexts.
    contexts = getattr(route, "effective_route_contexts", None)
    if not callable(contexts):
        return getattr(route, "path", None)
    for context in contexts():
        candidate = getattr(context, "starlette_route", None) or context
        if candidate.matches(scope)[0] is Match.FULL:
            return getattr(candidate, "path", None)
    return None


class AuthenticateFirstMiddleware:
    """For every request under ``/api/``, ``/v1/`` (the OpenAI-compatible surface) and ``/mcp``:
    the per-IP budget, then the credential, then the app. Refusals are OpenAI's error shape under
    ``/v1/`` and problem+json everywhere else.

    A refusal (401, 429, or 503 when the database is down) is answered from the headers alone,
    so an anonymous 11 MB upload costs its sender a per-IP hit and the server nothing more.
    CORS preflights (``OPTIONS``) pass through to the CORS middleware outside this one."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        # (method, root path, path) → whether an endpoint serves it, and its route template:
        # matching every route costs as much again as the router's own dispatch, and the routes
        # do not change once serving.
        self._served: dict[tuple[str, str, str], tuple[bool, str | None]] = {}

    def serves(self, scope: Scope) -> tuple[bool, str | None]:
        path = str(scope["path"])
        if len(path) > MEMO_PATH_CHARS:
            return _serves(scope)
        key = (str(scope["method"]), str(scope.get("root_path", "")), path)
        served = self._served.get(key)
        if served is None:
            if len(self._served) >= SERVED_MEMO_SIZE:
                self._served.clear()
            served = self._served[key] = _serves(scope)
        return served

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if (
            scope["type"] != "http"
            or scope["method"] == "OPTIONS"
            or not str(scope["path"]).startswith(PROTECTED_PREFIXES)
        ):
            await self.app(scope, receive, send)
            return
        served, template = self.serves(scope)
        if not served:  # the router answers 404/405 without reading a body
            await self.app(scope, receive, send)
            return
        request = Request(scope)  # no receive: reading the body here is impossible by design
        services = resources_of(scope["app"])
        try:
            await authenticate(request, services, defer_ip=True)
        except Exception as exc:
            scope.setdefault("state", {})[ROUTE_TEMPLATE_STATE_KEY] = template  # never routed
            await self._refuse(request, exc, receive, send)
            return
        await self._charging_deferred_ip(request, services.limiter, receive, send)

    async def _refuse(self, request: Request, exc: Exception, receive: Receive, send: Send) -> None:
        """OpenAI's error shape under ``/v1/``, problem+json elsewhere; re-raises what neither knows."""
        scope = request.scope
        if str(scope["path"]).startswith(OPENAI_PREFIX):
            await (await openai_error_for_exception(request, exc))(scope, receive, send)
            return
        response = await problem_for_exception(request, exc)
        if response is None:
            raise exc
        await response(scope, receive, send)

    async def _charging_deferred_ip(
        self, request: Request, limiter: RequestLimiter, receive: Receive, send: Send
    ) -> None:
        """The app, with a per-IP charge that ``authenticate`` deferred and no budget charge took
        charged before the response starts: a refusal (429) replaces the app's response."""
        refused = False

        async def send_after_ip_charge(message: Message) -> None:
            nonlocal refused
            if refused:
                return  # the rest of the app's response, replaced by the refusal
            if message["type"] == "http.response.start":
                try:
                    # Shielded: an app may send its response from a cancelled scope (a refused
                    # MCP stream does).
                    with anyio.CancelScope(shield=True):
                        await charge_deferred_ip(request, limiter)
                except _IP_REFUSALS as exc:
                    refused = True
                    await self._refuse(request, exc, receive, send)
                    return
            await send(message)

        try:
            await self.app(request.scope, receive, send_after_ip_charge)
        finally:
            # The app failed before responding: its per-IP hit still stands.
            with anyio.CancelScope(shield=True), contextlib.suppress(*_IP_REFUSALS):
                await charge_deferred_ip(request, limiter)
