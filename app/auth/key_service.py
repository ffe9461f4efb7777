"""API-key administration within one tenant (admin endpoints and the CLI)."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import UTC, datetime

from sqlalchemy.ext.asyncio import AsyncSession

from app.auth.access import MAX_PRINCIPAL_GROUPS, InvalidAccessError, valid_groups
from app.auth.api_keys import IssuedKey, issue_key
from app.auth.principal import Role
from app.auth.repository import ApiKeyRepository, TenantRepository
from app.db.models import ApiKey
from app.errors import NotFoundError


class ApiKeyNotFoundError(NotFoundError):
    code = "api_key_not_found"
    title = "API key not found"


async def create_key(
    session: AsyncSession, tenant_id: uuid.UUID, role: Role, name: str = "", groups: Sequence[str] = ()
) -> IssuedKey:
    """``groups`` are validated (422 ``invalid_access``): they open access-listed documents."""
    valid = valid_groups(groups)
    if len(valid) > MAX_PRINCIPAL_GROUPS:
        raise InvalidAccessError(f"a key belongs to at most {MAX_PRINCIPAL_GROUPS} groups")
    tenant = await TenantRepository(session).get(tenant_id)
    if tenant is None:
        raise NotFoundError("tenant not found")
    return await issue_key(session, tenant, role, name, valid)


async def list_keys(
    session: AsyncSession, tenant_id: uuid.UUID | None, *, include_revoked: bool = True
) -> list[tuple[ApiKey, str]]:
    """Keys with their tenant's slug, newest first; every tenant only when ``tenant_id`` is None
    (the operator's CLI, never an endpoint)."""
    return await ApiKeyRepository(session).with_tenant_slugs(tenant_id, include_revoked=include_revoked)


async def revoke_key(session: AsyncSession, tenant_id: uuid.UUID | None, key_id: uuid.UUID) -> ApiKey:
    """Revoke (idempotently) a key of ``tenant_id``; a key of another tenant is "not found"."""
    key = await ApiKeyRepository(session).for_update(key_id, tenant_id)
    if key is None:
        raise ApiKeyNotFoundError()
    if key.revoked_at is None:
        key.revoked_at = datetime.now(UTC)
        await session.flush()
    return key
