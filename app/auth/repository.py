"""Tenant and API-key queries. Methods work on the caller's session and never commit."""

from __future__ import annotations

import uuid
from datetime import datetime

from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession

from app.db.models import ApiKey, Tenant


class TenantRepository:
    def __init__(self, session: AsyncSession) -> None:
        self._session = session

    async def by_slug(self, slug: str) -> Tenant | None:
        return (await self._session.execute(select(Tenant).where(Tenant.slug == slug))).scalar_one_or_none()

    async def id_by_slug(self, slug: str) -> uuid.UUID | None:
        return (
            await self._session.execute(select(Tenant.id).where(Tenant.slug == slug))
        ).scalar_one_or_none()

    async def get(self, tenant_id: uuid.UUID) -> Tenant | None:
        return await self._session.get(Tenant, tenant_id)

    async def add(self, tenant: Tenant) -> Tenant:
        self._session.add(tenant)
        await self._session.flush()
        return tenant


class ApiKeyRepository:
    def __init__(self, session: AsyncSession) -> None:
        self._session = session

    async def add(self, key: ApiKey) -> ApiKey:
        self._session.add(key)
        await self._session.flush()
        return key

    async def by_prefix(self, prefix: str) -> ApiKey | None:
        return (
            await self._session.execute(select(ApiKey).where(ApiKey.prefix == prefix))
        ).scalar_one_or_none()

    async def mark_used(self, key_id: uuid.UUID, now: datetime) -> None:
        await self._session.execute(update(ApiKey).where(ApiKey.id == key_id).values(last_used_at=now))

    async def with_tenant_slugs(
        self, tenant_id: uuid.UUID | None, *, include_revoked: bool
    ) -> list[tuple[ApiKey, str]]:
        query = select(ApiKey, Tenant.slug).join(Tenant, Tenant.id == ApiKey.tenant_id)
        if tenant_id is not None:
            query = query.where(ApiKey.tenant_id == tenant_id)
        if not include_revoked:
            query = query.where(ApiKey.revoked_at.is_(None))
        rows = await self._session.execute(query.order_by(ApiKey.created_at.desc(), ApiKey.id))
        return [(key, slug) for key, slug in rows.all()]

    async def for_update(self, key_id: uuid.UUID, tenant_id: uuid.UUID | None) -> ApiKey | None:
        query = select(ApiKey).where(ApiKey.id == key_id)
        if tenant_id is not None:
            query = query.where(ApiKey.tenant_id == tenant_id)
        return (await self._session.execute(query.with_for_update())).scalar_one_or_none()

    async def tenant_has_any(self, tenant_slug: str) -> bool:
        found = await self._session.execute(
            select(ApiKey.id)
            .join(Tenant, Tenant.id == ApiKey.tenant_id)
            .where(Tenant.slug == tenant_slug)
            .limit(1)
        )
        return found.scalar_one_or_none() is not None
