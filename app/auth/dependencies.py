"""FastAPI dependencies: ``CurrentPrincipal`` authenticates; ``require_role`` authorises."""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable
from typing import Annotated

from fastapi import Depends, Request

from app.api.deps import ResourcesDep
from app.auth.api_keys import mark_used, verify_key
from app.auth.errors import AuthenticationError, PermissionDeniedError
from app.auth.jwt import looks_like_jwt, principal_for_claims
from app.auth.principal import Principal, Role
from app.limits.enforcement import charge_ip
from app.resources import Resources, redis_key

LAST_USED_RESOLUTION_S = 300


def _presented_credential(request: Request) -> str | None:
    header_key = request.headers.get("x-api-key")
    if header_key:
        return header_key.strip()
    authorization = request.headers.get("authorization", "")
    scheme, _, token = authorization.partition(" ")
    if scheme.lower() == "bearer" and token.strip():
        return token.strip()
    return None


async def _record_use(resources: Resources, principal: Principal) -> None:
    """Update ``last_used_at`` at most once per key and 5 minutes, not on every request."""
    key_id = principal.id.removeprefix("key:")
    try:
        first = await resources.redis.set(
            redis_key(resources.settings, "auth", "used", key_id), 1, nx=True, ex=LAST_USED_RESOLUTION_S
        )
    except Exception:
        return  # bookkeeping never fails a request
    if first:
        async with resources.session_factory() as session, session.begin():
            await mark_used(session, uuid.UUID(key_id))


async def _principal_for_jwt(resources: Resources, token: str) -> Principal:
    if resources.jwt_verifier is None:  # JWTs are not accepted unless AUTH_JWKS_URL is set
        raise AuthenticationError(code="invalid_credentials")
    claims = await resources.jwt_verifier.verify(token)
    async with resources.session_factory() as session:
        return await principal_for_claims(session, claims)


PRINCIPAL_STATE_KEY = "principal"


async def authenticate(request: Request, resources: Resources) -> Principal:
    """Charge the per-IP budget, then verify the presented credential; reads headers only.

    ``AuthenticateFirstMiddleware`` calls this before the endpoint, so no body is read or parsed
    for a request without valid credentials. Charged before anything else, so anonymous requests
    and guessed credentials cost the per-IP budget too."""
    await charge_ip(request, resources.limiter)
    credential = _presented_credential(request)
    if credential is None:
        raise AuthenticationError("send an API key in X-API-Key or a bearer token in Authorization")
    if looks_like_jwt(credential):
        principal = await _principal_for_jwt(resources, credential)
    else:
        async with resources.session_factory() as session:
            key_principal = await verify_key(session, credential)
        if key_principal is None:
            raise AuthenticationError(code="invalid_credentials")
        principal = key_principal
        await _record_use(resources, principal)
    state = request.scope.setdefault("state", {})
    state["principal_id"] = principal.id
    state[PRINCIPAL_STATE_KEY] = principal
    return principal


async def get_current_principal(request: Request, resources: ResourcesDep) -> Principal:
    """The principal the middleware authenticated (or, outside it, authenticate now)."""
    principal = request.scope.get("state", {}).get(PRINCIPAL_STATE_KEY)
    if isinstance(principal, Principal):
        return principal
    return await authenticate(request, resources)


CurrentPrincipal = Annotated[Principal, Depends(get_current_principal)]


def require_role(role: Role) -> Callable[[Principal], Awaitable[Principal]]:
    async def dependency(principal: CurrentPrincipal) -> Principal:
        if not principal.role.allows(role):
            raise PermissionDeniedError(f"this action needs the {role.value} role")
        return principal

    return dependency


ReaderPrincipal = Annotated[Principal, Depends(require_role(Role.reader))]
EditorPrincipal = Annotated[Principal, Depends(require_role(Role.editor))]
AdminPrincipal = Annotated[Principal, Depends(require_role(Role.admin))]
