"""Chunk search queries: pgvector nearest neighbours and PostgreSQL full-text matches, each scoped
in SQL to the caller's tenant, the current version of each document and non-deleted documents."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import TextClause, text
from sqlalchemy.ext.asyncio import AsyncSession

from app.rag.query import RetrievalQuery, RetrievedChunk

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


class ChunkSearchRepository:
    def __init__(self, session: AsyncSession) -> None:
        self._session = session

    async def nearest(self, query: RetrievalQuery, limit: int) -> list[RetrievedChunk]:
        """Nearest chunks by cosine distance, at or above ``query.min_similarity``."""
        if query.vector is None:
            return []
        session = self._session
        params = {**_params(query, limit), "vector": _vector_literal(query.vector)}
        # SET LOCAL lasts until the transaction ends, so the pooled connection goes back with
        # default settings; a nested transaction would end them early, so none is opened.
        await session.execute(text(f"SET LOCAL hnsw.ef_search = {int(query.ef_search)}"))
        await session.execute(text("SET LOCAL hnsw.iterative_scan = relaxed_order"))
        rows = (await session.execute(_VECTOR_SQL, params)).all()
        filtered = bool(query.filters.tags or query.filters.document_ids)
        if filtered and len(rows) < limit:
            await session.execute(text("SET LOCAL enable_indexscan = off"))
            rows = (await session.execute(_VECTOR_SQL, params)).all()
            await session.execute(text("SET LOCAL enable_indexscan = on"))
        hits = [_row_to_chunk(row, 1.0 - float(row.distance)) for row in rows]
        return [hit for hit in hits if hit.score >= query.min_similarity]

    async def matching(self, query: RetrievalQuery, limit: int) -> list[RetrievedChunk]:
        """Full-text matches: all of the question's words first, else any of them."""
        if not query.text.strip():
            return []
        params = {**_params(query, limit), "query": query.text}
        rows = (await self._session.execute(_TEXT_SQL_ALL, params)).all()
        if not rows:
            rows = (await self._session.execute(_TEXT_SQL_ANY, params)).all()
        return [_row_to_chunk(row, float(row.rank)) for row in rows]
