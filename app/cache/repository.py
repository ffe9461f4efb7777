"""The tenant's corpus version: part of every answer-cache key (see ``app.cache.answers``)."""

from __future__ import annotations

import uuid

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from app.auth.access import restricts_documents
from app.cache.corpus import CorpusState
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

    async def state(self, tenant_id: uuid.UUID) -> CorpusState:
        """The version and whether any document (live or deleted) has an access list, in one
        statement: both as of the same commit (narrowing a list bumps the version)."""
        restricted = restricts_documents(tenant_id).label("restricted")
        row = (
            await self._session.execute(
                select(Tenant.corpus_version, restricted).where(Tenant.id == tenant_id)
            )
        ).one_or_none()
        return CorpusState(0, False) if row is None else CorpusState(int(row[0]), bool(row[1]))


async def corpus_version(db: AsyncSession, tenant_id: uuid.UUID) -> str:
    return await CorpusVersionRepository(db).current(tenant_id)


async def corpus_state(db: AsyncSession, tenant_id: uuid.UUID) -> CorpusState:
    return await CorpusVersionRepository(db).state(tenant_id)
