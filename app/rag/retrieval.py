"""Hybrid retrieval: pgvector HNSW + PostgreSQL full-text search, fused by reciprocal rank.

Every query is scoped in SQL to the caller's tenant, the current version of each document
(``valid_to_version IS NULL``) and non-deleted documents, plus optional tag / document filters.
Filtered vector queries use pgvector 0.8 iterative index scans; if a very selective filter still
yields fewer than ``top_k`` rows, an exact scan over the filtered rows fills the gap, so a rare
tag never costs recall.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from sqlalchemy import TextClause, text
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

SessionFactory = async_sessionmaker[AsyncSession]

RRF_K = 60


class RetrievalMode(StrEnum):
    vector = "vector"
    text = "text"
    hybrid = "hybrid"


@dataclass(frozen=True)
class RetrievalFilters:
    tags: tuple[str, ...] = ()
    document_ids: tuple[uuid.UUID, ...] = ()


@dataclass(frozen=True)
class RetrievalQuery:
    tenant_id: uuid.UUID
    text: str
    vector: Sequence[float] | None
    top_k: int = 5
    mode: RetrievalMode = RetrievalMode.hybrid
    filters: RetrievalFilters = field(default_factory=RetrievalFilters)
    vector_weight: float = 1.0
    text_weight: float = 1.0
    ef_search: int = 100
    min_similarity: float = 0.0  # vector hits below this cosine similarity are not evidence


@dataclass(frozen=True)
class RetrievedChunk:
    chunk_id: int
    document_id: uuid.UUID
    version: int
    title: str
    page: int
    text: str
    tags: tuple[str, ...]
    score: float


_SELECT = """
    SELECT c.id AS chunk_id, c.document_id, d.current_version AS version, d.title, c.page, c.text,
           d.tags
    FROM chunks c JOIN documents d ON d.id = c.document_id
    WHERE c.tenant_id = :tenant_id
      AND d.tenant_id = :tenant_id
      AND c.valid_to_version IS NULL
      AND d.deleted_at IS NULL
      AND (cardinality(CAST(:tags AS varchar[])) = 0 OR d.tags && CAST(:tags AS varchar[]))
      AND (cardinality(CAST(:document_ids AS uuid[])) = 0
           OR c.document_id = ANY(CAST(:document_ids AS uuid[])))
"""

_VECTOR_SQL = text(
    "SELECT * FROM ("
    + _SELECT.replace("d.tags\n", "d.tags, c.embedding <=> CAST(:vector AS vector) AS distance\n")
    + " ORDER BY c.embedding <=> CAST(:vector AS vector) LIMIT :limit) ranked"
)

# Passages with all of the question's words first (websearch syntax: quotes, "or", "-word"); if
# none has them all, passages with any of them (stemmed, stop words dropped), so a natural
# question still finds keyword evidence. ts_rank_cd prefers more matches, closer together.
_ALL_TERMS = "websearch_to_tsquery('english', :query)"
_ANY_TERM = "replace(plainto_tsquery('english', :query)::text, '&', '|')::tsquery"


def _text_sql(tsquery: str) -> TextClause:
    return text(
        _SELECT.replace("d.tags\n", f"d.tags, ts_rank_cd(c.search_tsv, {tsquery}) AS rank\n")
        + f" AND c.search_tsv @@ {tsquery}"
        + " ORDER BY rank DESC, c.id LIMIT :limit"
    )


_TEXT_SQL_ALL = _text_sql(_ALL_TERMS)
_TEXT_SQL_ANY = _text_sql(_ANY_TERM)


def _vector_literal(vector: Sequence[float]) -> str:
    return "[" + ",".join(f"{float(x):.7g}" for x in vector) + "]"


def _params(query: RetrievalQuery, limit: int) -> dict[str, Any]:
    return {
        "tenant_id": query.tenant_id,
        "tags": list(query.filters.tags),
        "document_ids": list(query.filters.document_ids),
        "limit": limit,
    }


def _row_to_chunk(row: Any, score: float) -> RetrievedChunk:
    return RetrievedChunk(
        chunk_id=row.chunk_id,
        document_id=row.document_id,
        version=row.version or 1,
        title=row.title,
        page=row.page,
        text=row.text,
        tags=tuple(row.tags or ()),
        score=score,
    )


async def vector_search(sessions: SessionFactory, query: RetrievalQuery, limit: int) -> list[RetrievedChunk]:
    if query.vector is None:
        return []
    params = {**_params(query, limit), "vector": _vector_literal(query.vector)}
    async with sessions() as session, session.begin():
        # Transaction-scoped: the pooled connection goes back with default settings.
        await session.execute(text(f"SET LOCAL hnsw.ef_search = {int(query.ef_search)}"))
        await session.execute(text("SET LOCAL hnsw.iterative_scan = relaxed_order"))
        rows = (await session.execute(_VECTOR_SQL, params)).all()
        filtered = bool(query.filters.tags or query.filters.document_ids)
        if filtered and len(rows) < limit:
            await session.execute(text("SET LOCAL enable_indexscan = off"))
            rows = (await session.execute(_VECTOR_SQL, params)).all()
    hits = [_row_to_chunk(row, 1.0 - float(row.distance)) for row in rows]
    return [hit for hit in hits if hit.score >= query.min_similarity]


async def text_search(sessions: SessionFactory, query: RetrievalQuery, limit: int) -> list[RetrievedChunk]:
    if not query.text.strip():
        return []
    params = {**_params(query, limit), "query": query.text}
    async with sessions() as session:
        rows = (await session.execute(_TEXT_SQL_ALL, params)).all()
        if not rows:
            rows = (await session.execute(_TEXT_SQL_ANY, params)).all()
    return [_row_to_chunk(row, float(row.rank)) for row in rows]


def reciprocal_rank_fusion(
    ranked_lists: Sequence[tuple[float, Sequence[RetrievedChunk]]], top_k: int
) -> list[RetrievedChunk]:
    """Fuse ranked lists: score = Σ weight / (RRF_K + rank). Ties keep the earlier list's order."""
    scores: dict[int, float] = {}
    chunks: dict[int, RetrievedChunk] = {}
    for weight, ranked in ranked_lists:
        for rank, chunk in enumerate(ranked, start=1):
            scores[chunk.chunk_id] = scores.get(chunk.chunk_id, 0.0) + weight / (RRF_K + rank)
            chunks.setdefault(chunk.chunk_id, chunk)
    ordered = sorted(scores, key=lambda chunk_id: -scores[chunk_id])[:top_k]
    return [_with_score(chunks[chunk_id], scores[chunk_id]) for chunk_id in ordered]


def _with_score(chunk: RetrievedChunk, score: float) -> RetrievedChunk:
    return RetrievedChunk(**{**chunk.__dict__, "score": round(score, 6)})


async def retrieve(sessions: SessionFactory, query: RetrievalQuery) -> list[RetrievedChunk]:
    if query.mode is RetrievalMode.vector:
        return await vector_search(sessions, query, query.top_k)
    if query.mode is RetrievalMode.text:
        return await text_search(sessions, query, query.top_k)
    candidates = max(query.top_k * 4, 20)
    by_vector, by_text = await asyncio.gather(
        vector_search(sessions, query, candidates), text_search(sessions, query, candidates)
    )
    return reciprocal_rank_fusion(
        [(query.vector_weight, by_vector), (query.text_weight, by_text)], query.top_k
    )
