"""Hybrid retrieval: pgvector HNSW + PostgreSQL full-text search, fused by reciprocal rank.

Every query is scoped in SQL to the caller's tenant, the current version of each document
(``valid_to_version IS NULL``), non-deleted documents and the documents the caller's access set
may see, plus optional tag / document filters. A filter that leaves at most
``EXACT_SCAN_MAX_ROWS`` passages is searched exactly; a wider one uses pgvector 0.8 iterative
index scans, and if that still yields fewer than ``top_k`` rows an exact scan over the filtered
rows fills the gap, so neither a rare tag nor a narrow access set costs recall. Full-text
candidates are ranked by BM25 (``app.rag.repository``).

Every mode returns documents before repeats (``spread_over_documents``): the best passage of each
document in rank order, then further passages of the same documents only if fewer than ``top_k``
documents matched, so one long page cannot crowd the others out of the answer's sources.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace

from sqlalchemy.ext.asyncio import AsyncSession

from app.rag.query import RetrievalMode, RetrievalQuery, RetrievedChunk
from app.rag.repository import ChunkSearchRepository

RRF_K = 60


def reciprocal_rank_fusion(
    ranked_lists: Sequence[tuple[float, Sequence[RetrievedChunk]]], top_k: int
) -> list[RetrievedChunk]:
    """Fuse ranked lists: score = Σ weight / (RRF_K + rank). Ties keep the earlier list's order.
    A passage found by several lists keeps the evidence of each (similarity, text rank)."""
    scores: dict[int, float] = {}
    chunks: dict[int, RetrievedChunk] = {}
    for weight, ranked in ranked_lists:
        for rank, chunk in enumerate(ranked, start=1):
            scores[chunk.chunk_id] = scores.get(chunk.chunk_id, 0.0) + weight / (RRF_K + rank)
            seen = chunks.get(chunk.chunk_id)
            chunks[chunk.chunk_id] = chunk if seen is None else _merged_evidence(seen, chunk)
    ordered = sorted(scores, key=lambda chunk_id: -scores[chunk_id])[:top_k]
    return [_with_score(chunks[chunk_id], scores[chunk_id]) for chunk_id in ordered]


def spread_over_documents(ranked: Sequence[RetrievedChunk], top_k: int) -> list[RetrievedChunk]:
    """The first ``top_k`` of ``ranked`` taking each document's best passage first."""
    firsts: list[RetrievedChunk] = []
    repeats: list[RetrievedChunk] = []
    seen: set[object] = set()
    for chunk in ranked:
        (repeats if chunk.document_id in seen else firsts).append(chunk)
        seen.add(chunk.document_id)
    return (firsts + repeats)[:top_k]


def candidates_for(top_k: int) -> int:
    """How many passages each search returns for ``top_k``: room to fuse and to spread."""
    return max(top_k * 4, 20)


def _merged_evidence(first: RetrievedChunk, other: RetrievedChunk) -> RetrievedChunk:
    return replace(
        first,
        similarity=first.similarity if first.similarity is not None else other.similarity,
        text_match=first.text_match if first.text_match is not None else other.text_match,
    )


def _with_score(chunk: RetrievedChunk, score: float) -> RetrievedChunk:
    return replace(chunk, score=round(score, 6))


async def retrieve(db: AsyncSession, query: RetrievalQuery) -> list[RetrievedChunk]:
    """The ``top_k`` chunks for ``query`` on the caller's session (one connection for both
    searches of a hybrid query)."""
    chunks = ChunkSearchRepository(db)
    candidates = candidates_for(query.top_k)
    if query.mode is RetrievalMode.vector:
        ranked = await chunks.nearest(query, candidates)
    elif query.mode is RetrievalMode.text:
        ranked = await chunks.matching(query, candidates)
    else:
        by_vector, by_text = await chunks.hybrid(query, candidates)
        ranked = reciprocal_rank_fusion(
            [(query.vector_weight, by_vector), (query.text_weight, by_text)], 2 * candidates
        )
    return spread_over_documents(ranked, query.top_k)
