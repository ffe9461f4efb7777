"""Hybrid retrieval: pgvector HNSW + PostgreSQL full-text search, fused by reciprocal rank.

Every query is scoped in SQL to the caller's tenant, the current version of each document
(``valid_to_version IS NULL``) and non-deleted documents, plus optional tag / document filters.
Filtered vector queries use pgvector 0.8 iterative index scans; if a very selective filter still
yields fewer than ``top_k`` rows, an exact scan over the filtered rows fills the gap, so a rare
tag never costs recall.
"""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy.ext.asyncio import AsyncSession

from app.rag.query import RetrievalMode, RetrievalQuery, RetrievedChunk
from app.rag.repository import ChunkSearchRepository

RRF_K = 60


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


async def retrieve(db: AsyncSession, query: RetrievalQuery) -> list[RetrievedChunk]:
    """The ``top_k`` chunks for ``query`` on the caller's session (one connection for both
    searches of a hybrid query)."""
    chunks = ChunkSearchRepository(db)
    if query.mode is RetrievalMode.vector:
        return await chunks.nearest(query, query.top_k)
    if query.mode is RetrievalMode.text:
        return await chunks.matching(query, query.top_k)
    candidates = max(query.top_k * 4, 20)
    by_vector = await chunks.nearest(query, candidates)
    by_text = await chunks.matching(query, candidates)
    return reciprocal_rank_fusion(
        [(query.vector_weight, by_vector), (query.text_weight, by_text)], query.top_k
    )
