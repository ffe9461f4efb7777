"""The tenant's corpus version: part of every answer-cache key (see ``app.cache.answers``)."""

from __future__ import annotations

import uuid

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from app.db.models import Tenant


class CorpusVersionRepository:
    def __init__(self, session: AsyncSession) -> None:
        self._session = session

    async def current(self, tenant_id: uuid.UUID) -> str:
        """Bumped by a trigger in the same transaction as any change to the tenant's documents."""
        version = (
            await self._session.execute(select(Tenant.corpus_version).where(Tenant.id == tenant_id))
        ).scalar_one_or_none()
        return str(version or 0)


async def corpus_version(db: AsyncSession, tenant_id: uuid.UUID) -> str:
    return await CorpusVersionRepository(db).current(tenant_id)
