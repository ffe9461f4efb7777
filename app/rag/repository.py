"""Chunk search queries: pgvector nearest neighbours and PostgreSQL full-text matches, each scoped
in SQL to the caller's tenant, the current version of each document, non-deleted documents and
the documents the caller's access set may see (``documents.access``: empty, or sharing a grant)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import TextClause, text
from sqlalchemy.ext.asyncio import AsyncSession

from app.rag.query import RetrievalQuery, RetrievedChunk

_SCOPE = """
    WHERE c.tenant_id = :tenant_id
      AND d.tenant_id = :tenant_id
      AND c.valid_to_version IS NULL
      AND d.deleted_at IS NULL
      AND (cardinality(CAST(:tags AS varchar[])) = 0 OR d.tags && CAST(:tags AS varchar[]))
      AND (cardinality(CAST(:document_ids AS uuid[])) = 0
           OR c.document_id = ANY(CAST(:document_ids AS uuid[])))
      AND (CAST(:unrestricted AS boolean)
           OR cardinality(d.access) = 0 OR d.access && CAST(:access AS varchar[]))
"""
_SELECT = (
    """
    SELECT c.id AS chunk_id, c.document_id, d.current_version AS version, d.title, c.page, c.text,
           c.ocr, c.start_offset, c.end_offset, c.text_tokens, c.injection_flags, d.tags
    FROM chunks c JOIN documents d ON d.id = c.document_id"""
    + _SCOPE
)

_DISTANCE = "d.tags, c.embedding <=> CAST(:vector AS vector) AS distance\n"
_VECTOR = (
    "SELECT * FROM ("
    + _SELECT.replace("d.tags\n", _DISTANCE)
    + " ORDER BY c.embedding <=> CAST(:vector AS vector) LIMIT :limit) ranked"
)
_VECTOR_SQL = text(_VECTOR)
# The exact search: the ORDER BY is outside an OFFSET 0 fence, so the planner cannot serve it from
# the HNSW index; it finds the filtered rows through the other indexes and sorts them all. No
# planner setting is toggled (it was SET enable_indexscan off / on: two more round trips).
_EXACT = (
    "SELECT * FROM ("
    + _SELECT.replace("d.tags\n", _DISTANCE)
    + " OFFSET 0) scoped ORDER BY distance LIMIT :limit"
)
_EXACT_SQL = text(_EXACT)

# A filter (access, tags, documents) that leaves at most EXACT_SCAN_MAX_ROWS passages is searched
# exactly: those rows are found through the filter's indexes and all compared, which beats walking
# the HNSW graph past the passages the filter drops (slower, and pgvector's iterative scan then
# returns approximate neighbours). They are counted from the visible documents down, through the
# chunks' (document_id, valid_to_version) index, and the count stops at the bound.
EXACT_SCAN_MAX_ROWS = 5_000
_FEW_ROWS = """
SELECT count(*) FROM (
    SELECT 1 FROM documents d
    CROSS JOIN LATERAL (
        SELECT 1 FROM chunks c WHERE c.document_id = d.id AND c.valid_to_version IS NULL LIMIT :cap
    ) passages
    WHERE d.tenant_id = :tenant_id
      AND d.deleted_at IS NULL
      AND (cardinality(CAST(:tags AS varchar[])) = 0 OR d.tags && CAST(:tags AS varchar[]))
      AND (cardinality(CAST(:document_ids AS uuid[])) = 0 OR d.id = ANY(CAST(:document_ids AS uuid[])))
      AND (CAST(:unrestricted AS boolean)
           OR cardinality(d.access) = 0 OR d.access && CAST(:access AS varchar[]))
    LIMIT :cap
) few
"""
# The HNSW scan's settings for this transaction (set_config(..., true) is SET LOCAL), and for a
# filtered search the count above, in one round trip.
#
# The searches are planned for their own vector, limit and filters every time (force_custom_plan).
# psycopg keeps them prepared (``app.db.unit_of_work.end_read``), and PostgreSQL may then switch a
# prepared statement to one generic plan made without its parameters' values: for the vector
# search that plan scans every passage exactly, as it does not know the limit (76 ms p50 against
# 4.5 ms on 50k chunks, ``make benchmark-access``). Prepared, they are still parsed only once per
# connection.
_PLAN_EACH_SEARCH = "set_config('plan_cache_mode', 'force_custom_plan', true)"
_PLAN_EACH_SEARCH_SQL = text(f"SELECT {_PLAN_EACH_SEARCH}")
_SETTINGS = (
    "SELECT set_config('hnsw.ef_search', CAST(:ef_search AS text), true) AS ef_search, "
    "set_config('hnsw.iterative_scan', 'relaxed_order', true) AS iterative_scan, "
    f"{_PLAN_EACH_SEARCH} AS plan_cache_mode"
)
_SETTINGS_SQL = text(_SETTINGS)
_SETTINGS_AND_FEW_ROWS_SQL = text(_SETTINGS + ", (" + _FEW_ROWS + ") AS n")

# Okapi BM25 over the GIN-indexed tsvectors (stemmed English, stop words dropped), in one statement:
# - each query term's document frequency is counted in a bounded sample of the tenant's passages
#   (BM25_SAMPLE: the same few milliseconds whatever the corpus size);
# - passages match on the informative terms, those in fewer than BM25_COMMON_SHARE of the sample
#   (and BM25_COMMON_MIN_DF passages); a question of common words only matches on all of them.
#   Common terms still score; they just do not pull in every passage of the corpus;
# - the best BM25_POOL matches by ts_rank are scored: term frequency from the lexeme's positions,
#   length as the passage's distinct lexemes;
# - when some passages contain the whole question (websearch syntax: quotes, "or", "-word"), only
#   they are returned, so an exact code or phrase is not diluted by passages that share only its
#   common words (a natural question rarely matches whole: then every scored passage is returned);
# - each match's ``text_match``: its BM25 over the most the question's terms could score, the sum
#   of their idf times (k1 + 1), so 0 to 1 whatever the corpus size: a question whose rarest words
#   appear nowhere in the corpus matches weakly (the relevance gate reads it).
BM25_K1 = 1.2
BM25_B = 0.75
BM25_SAMPLE = 2000
BM25_POOL = 1000
BM25_COMMON_SHARE = 0.1
BM25_COMMON_MIN_DF = 50
_TEXT = (
    """
WITH terms AS MATERIALIZED (
    SELECT DISTINCT t.lexeme, quote_literal(t.lexeme)::tsquery AS q
    FROM unnest(to_tsvector('english', :query)) AS t
),
sample AS MATERIALIZED (
    SELECT search_tsv FROM chunks
    WHERE tenant_id = :tenant_id AND valid_to_version IS NULL
    LIMIT :sample
),
corpus AS MATERIALIZED (
    SELECT count(*) AS n, coalesce(avg(length(search_tsv)), 1.0) AS average_length FROM sample
),
weighted AS MATERIALIZED (
    SELECT terms.lexeme, terms.q, f.df,
           ln(1.0 + (corpus.n - f.df + 0.5) / (f.df + 0.5)) AS idf
    FROM terms CROSS JOIN corpus
    CROSS JOIN LATERAL (SELECT count(*) AS df FROM sample WHERE sample.search_tsv @@ terms.q) AS f
),
matcher AS (
    SELECT coalesce(
        string_agg(q::text, ' | ') FILTER (WHERE df < greatest(:common_df, :common_share * corpus.n)),
        string_agg(q::text, ' | ')
    )::tsquery AS q
    FROM weighted CROSS JOIN corpus
),
pool AS (
    SELECT c.id, c.search_tsv, c.search_tsv @@ websearch_to_tsquery('english', :query) AS complete
    FROM chunks c JOIN documents d ON d.id = c.document_id CROSS JOIN matcher
"""
    + _SCOPE
    + """
      AND c.search_tsv @@ matcher.q
    ORDER BY ts_rank(c.search_tsv, matcher.q) DESC, c.id
    LIMIT :pool
),
scored AS (
    SELECT pool.id, pool.complete,
           sum(w.idf * cardinality(u.positions) * (:k1 + 1)
               / (cardinality(u.positions)
                  + :k1 * (1 - :b + :b * length(pool.search_tsv) / corpus.average_length))) AS rank
    FROM pool CROSS JOIN corpus
    CROSS JOIN LATERAL unnest(pool.search_tsv) AS u
    JOIN weighted w ON w.lexeme = u.lexeme
    GROUP BY pool.id, pool.complete
)
SELECT c.id AS chunk_id, c.document_id, d.current_version AS version, d.title, c.page, c.text,
       c.ocr, c.start_offset, c.end_offset, c.text_tokens, c.injection_flags, d.tags, scored.rank,
       scored.rank / nullif((SELECT sum(idf) FROM weighted) * (:k1 + 1), 0) AS text_match,
       CASE WHEN CAST(:vector AS text) IS NULL THEN NULL
            ELSE 1 - (c.embedding <=> CAST(CAST(:vector AS text) AS vector)) END AS similarity
FROM scored JOIN chunks c ON c.id = scored.id JOIN documents d ON d.id = c.document_id
WHERE scored.complete OR NOT EXISTS (SELECT 1 FROM scored WHERE scored.complete)
ORDER BY scored.rank DESC, c.id
LIMIT :limit
"""
)
_TEXT_SQL = text(_TEXT)

# A hybrid search's vector search, and the cosine similarity of the full-text matches found
# before the vector was known, in one statement: the rows of each, marked by ``search``.
_ROW = (
    "chunk_id, document_id, version, title, page, text, ocr, start_offset, end_offset, text_tokens, "
    "injection_flags, tags"
)
_NO_ROW = ", ".join(["NULL"] * _ROW.count(","))  # a NULL for each column of _ROW after chunk_id


def _with_similarities(vector_search: str) -> TextClause:
    return text(
        f"SELECT 'vector' AS search, {_ROW}, distance FROM ({vector_search}) by_vector UNION ALL "
        f"SELECT 'similarity', c.id, {_NO_ROW}, c.embedding <=> CAST(:vector AS vector) "
        "FROM chunks c WHERE c.id = ANY(CAST(:text_ids AS bigint[]))"
    )


_VECTOR_AND_SIMILARITIES_SQL = _with_similarities(_VECTOR)
_EXACT_AND_SIMILARITIES_SQL = _with_similarities(_EXACT)


def _vector_literal(vector: Sequence[float]) -> str:
    return "[" + ",".join(f"{float(x):.7g}" for x in vector) + "]"


async def _vector_of(query: RetrievalQuery) -> str:
    """The query's vector as a pgvector literal, awaited when still being computed."""
    vector = (await query.with_vector()).vector
    if vector is None:
        raise ValueError("a vector search needs the question's vector")
    return _vector_literal(vector)


def _params(query: RetrievalQuery, limit: int) -> dict[str, Any]:
    return {
        "tenant_id": query.tenant_id,
        "tags": list(query.filters.tags),
        "document_ids": list(query.filters.document_ids),
        "unrestricted": query.access is None,
        "access": list(query.access or ()),
        "limit": limit,
    }


def _row_to_chunk(row: Any, score: float, **evidence: float | None) -> RetrievedChunk:
    return RetrievedChunk(
        chunk_id=row.chunk_id,
        document_id=row.document_id,
        version=row.version or 1,
        title=row.title,
        page=row.page,
        text=row.text,
        tags=tuple(row.tags or ()),
        score=score,
        ocr=bool(row.ocr),
        start=row.start_offset,
        end=row.end_offset,
        text_tokens=row.text_tokens,
        injection_flags=None if row.injection_flags is None else tuple(row.injection_flags),
        **evidence,
    )


def _text_params(query: RetrievalQuery, limit: int) -> dict[str, Any]:
    return {
        "query": query.text,
        "sample": BM25_SAMPLE,
        "common_df": BM25_COMMON_MIN_DF,
        "common_share": BM25_COMMON_SHARE,
        "pool": max(BM25_POOL, limit),
        "k1": BM25_K1,
        "b": BM25_B,
    }


def _text_hits(rows: Sequence[Any], distances: dict[int, float | None] | None = None) -> list[RetrievedChunk]:
    """The hits of ``rows``, each with its cosine similarity as the statement gave it, or from
    ``distances`` (by chunk id) when the statement ran before the question's vector was known."""

    def similarity(row: Any) -> float | None:
        if distances is None:
            return None if row.similarity is None else float(row.similarity)
        distance = distances.get(row.chunk_id)
        return None if distance is None else 1 - float(distance)

    return [
        _row_to_chunk(
            row,
            float(row.rank),
            text_match=None if row.text_match is None else float(row.text_match),
            similarity=similarity(row),
        )
        for row in rows
    ]


def _filtered(query: RetrievalQuery) -> bool:
    return bool(query.filters.tags or query.filters.document_ids) or query.access is not None


class ChunkSearchRepository:
    def __init__(self, session: AsyncSession) -> None:
        self._session = session

    async def _exact(self, query: RetrievalQuery, params: dict[str, Any]) -> bool:
        """Sets the HNSW scan's settings for this transaction and tells whether the filter leaves
        few enough passages to search exactly, in one round trip. SET LOCAL lasts until the
        transaction ends, so the pooled connection goes back with default settings; a nested
        transaction would end them early, so none is opened."""
        filtered = _filtered(query)
        prepare = _SETTINGS_AND_FEW_ROWS_SQL if filtered else _SETTINGS_SQL
        prepared = await self._session.execute(
            prepare, {**params, "ef_search": int(query.ef_search), "cap": EXACT_SCAN_MAX_ROWS + 1}
        )
        return filtered and prepared.one().n <= EXACT_SCAN_MAX_ROWS

    async def _vector_hits(
        self, query: RetrievalQuery, params: dict[str, Any], rows: Sequence[Any], *, exact: bool
    ) -> list[RetrievedChunk]:
        """The hits of ``rows``; an approximate filtered search that found fewer than the limit is
        completed by an exact one."""
        if not exact and _filtered(query) and len(rows) < params["limit"]:
            rows = (await self._session.execute(_EXACT_SQL, params)).all()
        similarities = [1.0 - float(row.distance) for row in rows]
        hits = [_row_to_chunk(row, sim, similarity=sim) for row, sim in zip(rows, similarities, strict=True)]
        return [hit for hit in hits if hit.score >= query.min_similarity]

    async def nearest(self, query: RetrievalQuery, limit: int) -> list[RetrievedChunk]:
        """Nearest chunks by cosine distance, at or above ``query.min_similarity``."""
        if not query.has_vector:
            return []
        params = _params(query, limit)
        exact = await self._exact(query, params)
        params["vector"] = await _vector_of(query)
        rows = (await self._session.execute(_EXACT_SQL if exact else _VECTOR_SQL, params)).all()
        return await self._vector_hits(query, params, rows, exact=exact)

    async def matching(self, query: RetrievalQuery, limit: int) -> list[RetrievedChunk]:
        """Full-text matches ranked by BM25 (see ``_TEXT_SQL``)."""
        if not query.text.strip():
            return []
        params = {**_params(query, limit), **_text_params(query, limit)}
        await self._session.execute(_PLAN_EACH_SEARCH_SQL)
        # Each match's cosine similarity too, when the question has a vector: the relevance
        # gate and the sources read it whichever search found the passage.
        params["vector"] = await _vector_of(query) if query.has_vector else None
        return _text_hits((await self._session.execute(_TEXT_SQL, params)).all())

    async def hybrid(
        self, query: RetrievalQuery, limit: int
    ) -> tuple[list[RetrievedChunk], list[RetrievedChunk]]:
        """``nearest`` and ``matching`` in three round trips, four when an approximate filtered
        search must be completed: ``_exact``'s settings and the full-text search need no vector,
        so they run while a pending one is computed; then the vector search, with the cosine
        similarity of each full-text match, in one statement."""
        if not query.has_vector or not query.text.strip():
            return await self.nearest(query, limit), await self.matching(query, limit)
        params = {**_params(query, limit), **_text_params(query, limit)}
        exact = await self._exact(query, params)
        by_text = (await self._session.execute(_TEXT_SQL, {**params, "vector": None})).all()
        params["vector"] = await _vector_of(query)
        # As an array literal: psycopg types a list of ints by its largest value (int2[], int4[],
        # int8[]), and each type would be another prepared statement.
        params["text_ids"] = "{" + ",".join(str(row.chunk_id) for row in by_text) + "}"
        statement = _EXACT_AND_SIMILARITIES_SQL if exact else _VECTOR_AND_SIMILARITIES_SQL
        rows = (await self._session.execute(statement, params)).all()
        # The vector rows in the order the search gave them: Append passes on each input's rows in
        # that input's order. (Not re-sorted: a relaxed-order index scan gives them as nearest()
        # would.)
        by_vector = [row for row in rows if row.search == "vector"]
        distances = {row.chunk_id: row.distance for row in rows if row.search == "similarity"}
        vector_hits = await self._vector_hits(query, params, by_vector, exact=exact)
        return vector_hits, _text_hits(by_text, distances)
