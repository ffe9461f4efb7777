"""Retrieval on a read replica, never staler than the primary's corpus.

The chat pipeline hands its retriever the primary's session. ``ReplicaRetriever`` runs the
searches on a healthy replica instead (``app.db.replicas.ReadSessions``), after one check: the
tenant's corpus version (bumped by a trigger in the same transaction as any document change)
must be the same on the replica as on the primary. A replica that has not replayed the latest
document change yet, or that fails, is passed over and the primary's session serves, so an
answer is never built from passages a document change has replaced."""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable

import structlog
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncSession

from app.db.replicas import ReadSessions
from app.rag.query import RetrievalQuery, RetrievedChunk

logger = structlog.get_logger(__name__)

Search = Callable[[AsyncSession, RetrievalQuery], Awaitable[list[RetrievedChunk]]]
CorpusVersionOf = Callable[[AsyncSession, uuid.UUID], Awaitable[str]]


class ReplicaRetriever:
    def __init__(self, reads: ReadSessions, search: Search, corpus_version: CorpusVersionOf) -> None:
        self._reads = reads
        self._search = search
        self._corpus_version = corpus_version
        self.stale_skips = 0

    async def __call__(self, db: AsyncSession, query: RetrievalQuery) -> list[RetrievedChunk]:
        target = self._reads.pick()
        if target is None:
            return await self._search(db, query)
        expected = await self._corpus_version(db, query.tenant_id)
        # A failing embedding is not the replica's failure: resolved before the replica is tried.
        query = await query.with_vector()
        try:
            async with target.sessions() as replica:
                if await self._corpus_version(replica, query.tenant_id) == expected:
                    return await self._search(replica, query)
            self.stale_skips += 1
            logger.info("replica_stale_for_tenant", target=target.name, corpus_version=expected)
        except (DBAPIError, OSError) as exc:
            self._reads.mark_down(target, exc)
        return await self._search(db, query)
