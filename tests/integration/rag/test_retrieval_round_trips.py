"""What one retrieval costs in database round trips, counted by a SQLAlchemy hook on the real
engine: a hybrid search is three statements whatever the caller's filter (the settings of the
vector search and the filtered-row count ride in one statement, and an exact scan needs no planner
toggles), and the passages are the same as a search that sends each step on its own. The first
two need no vector (the settings, the full-text search): they are sent while the question is
still being embedded, and only the vector search waits for it."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from dataclasses import replace
from typing import Any

import pytest
from sqlalchemy import event

from app.rag.embeddings import LocalEmbedder
from app.rag.query import RetrievalFilters, RetrievalMode, RetrievalQuery
from app.rag.repository import ChunkSearchRepository
from app.rag.retrieval import retrieve
from app.resources import Resources
from tests.support.callers import Caller
from tests.support.library import Library

pytestmark = [pytest.mark.integration, pytest.mark.pgvector]

QUESTION = "How long are database backups kept?"
TEXTS = [
    "Nightly database backups are kept for thirty days, then deleted.",
    "Snapshots of the reporting warehouse are kept for one year.",
    "The cafeteria menu changes every Monday.",
    "Log files rotate daily and are deleted after ninety days.",
]


@pytest.fixture
def app_embedder(embedder: LocalEmbedder) -> LocalEmbedder:
    return embedder


@pytest.fixture
def statements(resources: Resources) -> Iterator[list[str]]:
    sent: list[str] = []

    def record(_conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        sent.append(statement)

    engine = resources.engine.sync_engine
    event.listen(engine, "before_cursor_execute", record)
    yield sent
    event.remove(engine, "before_cursor_execute", record)


async def _query(embedder: LocalEmbedder, editor: Caller, **fields: Any) -> RetrievalQuery:
    return RetrievalQuery(
        tenant_id=editor.tenant_id,
        text=QUESTION,
        vector=await embedder.embed_query(QUESTION),
        top_k=3,
        mode=RetrievalMode.hybrid,
        **fields,
    )


@pytest.mark.parametrize(
    "fields",
    [
        pytest.param({}, id="unrestricted"),
        pytest.param({"access": ("staff",)}, id="access-set"),
        pytest.param({"access": (), "filters": RetrievalFilters(tags=("ops",))}, id="tag-filter"),
    ],
)
async def test_a_hybrid_search_is_three_statements(
    library: Library,
    resources: Resources,
    editor: Caller,
    embedder: LocalEmbedder,
    statements: list[str],
    fields: dict[str, Any],
) -> None:
    for n, body in enumerate(TEXTS):
        await library.add(body, filename=f"doc{n}.txt", tags="ops")
    query = await _query(embedder, editor, **fields)
    async with resources.session_factory() as session:
        statements.clear()
        found = await retrieve(session, query)
    assert found and "thirty days" in found[0].text
    assert len(statements) == 3, statements
    async with resources.session_factory() as session:
        together = await ChunkSearchRepository(session).hybrid(query, 20)
    async with resources.session_factory() as session:
        apart = await ChunkSearchRepository(session).nearest(query, 20)
    async with resources.session_factory() as session:
        assert together == (apart, await ChunkSearchRepository(session).matching(query, 20))
    assert together[0] and together[1]


async def test_the_settings_and_the_full_text_search_are_sent_while_the_question_is_embedded(
    library: Library,
    resources: Resources,
    editor: Caller,
    embedder: LocalEmbedder,
    statements: list[str],
) -> None:
    for n, body in enumerate(TEXTS):
        await library.add(body, filename=f"doc{n}.txt")
    embedded = await _query(embedder, editor)
    vector: asyncio.Future[list[float]] = asyncio.get_running_loop().create_future()
    pending = replace(embedded, vector=None, pending_vector=vector)
    async with resources.session_factory() as session:
        statements.clear()
        search = asyncio.ensure_future(retrieve(session, pending))
        async with asyncio.timeout(30):
            while len(statements) < 2:
                await asyncio.sleep(0.01)
        await asyncio.sleep(0.05)  # room for a third statement, which must wait for the vector
        assert len(statements) == 2, statements
        assert "hnsw.ef_search" in statements[0] and "ts_rank" in statements[1], statements
        assert not search.done()
        vector.set_result(list(embedded.vector or ()))
        found = await search
    assert len(statements) == 3, statements
    async with resources.session_factory() as session:
        assert found == await retrieve(session, embedded)


async def test_a_failed_embedding_fails_the_search_before_its_vector_statement(
    resources: Resources, editor: Caller, embedder: LocalEmbedder, statements: list[str]
) -> None:
    embedded = await _query(embedder, editor)
    vector: asyncio.Future[list[float]] = asyncio.get_running_loop().create_future()
    vector.set_exception(RuntimeError("the embedding model failed"))
    async with resources.session_factory() as session:
        statements.clear()
        with pytest.raises(RuntimeError, match="the embedding model failed"):
            await retrieve(session, replace(embedded, vector=None, pending_vector=vector))
    assert len(statements) == 2, statements
