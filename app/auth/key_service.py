"""API-key administration within one tenant (admin endpoints and the CLI)."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from app.auth.api_keys import IssuedKey, issue_key
from app.auth.principal import Role
from app.db.models import ApiKey, Tenant
from app.errors import NotFoundError


class ApiKeyNotFoundError(NotFoundError):
    code = "api_key_not_found"
    title = "API key not found"


async def create_key(session: AsyncSession, tenant_id: uuid.UUID, role: Role, name: str = "") -> IssuedKey:
    tenant = await session.get(Tenant, tenant_id)
    if tenant is None:
        raise NotFoundError("tenant not found")
    return await issue_key(session, tenant, role, name)


async def list_keys(
    session: AsyncSession, tenant_id: uuid.UUID | None, *, include_revoked: bool = True
) -> list[tuple[ApiKey, str]]:
    """Keys with their tenant's slug, newest first; every tenant only when ``tenant_id`` is None
    (the operator's CLI, never an endpoint)."""
    query = select(ApiKey, Tenant.slug).join(Tenant, Tenant.id == ApiKey.tenant_id)
    if tenant_id is not None:
        query = query.where(ApiKey.tenant_id == tenant_id)
    if not include_revoked:
        query = query.where(ApiKey.revoked_at.is_(None))
    rows = await session.execute(query.order_by(ApiKey.created_at.desc(), ApiKey.id))
    return [(key, slug) for key, slug in rows.all()]


async def revoke_key(session: AsyncSession, tenant_id: uuid.UUID | None, key_id: uuid.UUID) -> ApiKey:
    """Revoke (idempotently) a key of ``tenant_id``; a key of another tenant is "not found"."""
    query = select(ApiKey).where(ApiKey.id == key_id)
    if tenant_id is not None:
        query = query.where(ApiKey.tenant_id == tenant_id)
    key = (await session.execute(query.with_for_update())).scalar_one_or_none()
    if key is None:
        raise ApiKeyNotFoundError()
    if key.revoked_at is None:
        key.revoked_at = datetime.now(UTC)
        await session.flush()
    return key
