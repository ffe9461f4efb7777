"""The rerank stage in the running service: with RERANKER=cross-encoder, /chat's sources (and the
MCP server's search results) come back in the order, and with the scores, that the cross-encoder
itself gives each (question, passage) pair, chosen from RERANKER_CANDIDATES retrieved chunks; its
ONNX export and its torch directory give the same sources; RERANKER=none leaves the sources exactly
as retrieval ranks them; a cross-encoder without a usable model stops the start. The cross-encoder
is a tiny random-weight BERT written at test time (tests/support/tiny_models.py)."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import httpx2
import pytest
from fastapi import FastAPI
from mcp.client.session import ClientSession
from mcp.client.streamable_http import streamable_http_client
from sqlalchemy import select

from app.db.models import Chunk
from app.rag.embeddings import Embedder, LocalEmbedder
from app.rag.query import RetrievalMode, RetrievalQuery
from app.rag.rerank import NoReranker, RerankerError
from app.rag.retrieval import retrieve
from app.resources import Resources
from app.settings import Settings
from tests.fakes.fake_llm_server import FakeLLMServer
from tests.support.apps import running_app
from tests.support.callers import Caller
from tests.support.library import Library, ask
from tests.support.llm import fake_openai_overrides
from tests.support.tiny_models import TinyModels, cross_encoder_scores

pytestmark = [pytest.mark.integration, pytest.mark.pgvector]

QUESTION = "How long are database backups kept?"
DOCUMENTS = {
    "Retention": "Database backups are kept for exactly 35 days before deletion.",
    "Schedule": "Database backups run every night at two o'clock and take about an hour.",
    "Encryption": "Every database backup is encrypted at rest with a key rotated each quarter.",
    "Offsite": "A copy of each database backup is kept in a second region for disaster recovery.",
    "Alerts": "A failed database backup pages the on-call engineer within five minutes.",
    "Restore": "To restore a database backup, pick a snapshot in the console and confirm.",
}
TOP_K = 3


@pytest.fixture
def settings(settings: Settings, fake: FakeLLMServer) -> Settings:
    return settings.model_copy(update=fake_openai_overrides(fake))


@pytest.fixture
def app_embedder(embedder: LocalEmbedder) -> Embedder:
    return embedder


@asynccontextmanager
async def reranking_app(settings: Settings, embedder: Embedder, model: Path) -> AsyncIterator[FastAPI]:
    async with running_app(
        settings,
        embedder=embedder,
        reranker="cross-encoder",
        reranker_model_path=model,
        reranker_candidates=20,
    ) as running:
        yield running.app


async def add_documents(library: Library) -> None:
    for title, text in DOCUMENTS.items():
        await library.add(text, filename=f"{title.lower()}.txt", title=title)


async def expected_ranking(
    client: httpx.AsyncClient, resources: Resources, caller: Caller, twin: Path
) -> list[tuple[int, float]]:
    """(chunk id, score) of the ``TOP_K`` best candidates by the cross-encoder's own scores; the
    candidates are what the service without a reranker retrieves for 20."""
    candidates = (await ask(client, caller, QUESTION, top_k=20)).json()["sources"]
    assert len(candidates) >= 4, candidates
    ids = [source["chunk_id"] for source in candidates]
    async with resources.session_factory() as session:
        texts = dict((await session.execute(select(Chunk.id, Chunk.text).where(Chunk.id.in_(ids)))).all())
    scores = cross_encoder_scores(twin, QUESTION, [texts[chunk_id] for chunk_id in ids])
    return sorted(zip(ids, scores, strict=True), key=lambda pair: -pair[1])[:TOP_K]


@pytest.mark.parametrize("model", ["cross_encoder_onnx", "cross_encoder"])
async def test_chat_sources_come_back_in_the_cross_encoders_order(
    settings: Settings,
    client: httpx.AsyncClient,
    library: Library,
    resources: Resources,
    editor: Caller,
    embedder: LocalEmbedder,
    tiny_models: TinyModels,
    model: str,
) -> None:
    await add_documents(library)
    expected = await expected_ranking(client, resources, editor, tiny_models.cross_encoder)

    async with reranking_app(settings, embedder, getattr(tiny_models, model)) as app:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as reranked:
            response = await ask(reranked, editor, QUESTION, top_k=TOP_K)
            metrics = (await reranked.get("/metrics")).text
    assert response.status_code == 200, response.text
    sources = response.json()["sources"]
    assert [s["chunk_id"] for s in sources] == [chunk_id for chunk_id, _ in expected]
    assert [s["score"] for s in sources] == pytest.approx([score for _, score in expected], abs=1e-5)
    assert [s["number"] for s in sources] == [1, 2, 3]
    match = re.search(r'^rerank_duration_seconds_count\{reranker="cross-encoder"\} (\S+)$', metrics, re.M)
    assert match is not None and float(match.group(1)) >= 1


async def test_mcp_search_results_are_reranked_the_same_way(
    settings: Settings,
    client: httpx.AsyncClient,
    library: Library,
    resources: Resources,
    editor: Caller,
    embedder: LocalEmbedder,
    tiny_models: TinyModels,
) -> None:
    await add_documents(library)
    expected = await expected_ranking(client, resources, editor, tiny_models.cross_encoder)
    async with resources.session_factory() as session:
        ids = [chunk_id for chunk_id, _ in expected]
        documents = dict(
            (await session.execute(select(Chunk.id, Chunk.document_id).where(Chunk.id.in_(ids)))).all()
        )

    async with reranking_app(settings, embedder, tiny_models.cross_encoder_onnx) as app:
        transport = httpx2.ASGITransport(app=app)
        async with (
            httpx2.AsyncClient(
                transport=transport, base_url="http://testserver", headers=editor.headers
            ) as http,
            streamable_http_client("http://testserver/mcp", http_client=http) as (read, write),
            ClientSession(read, write) as session,
        ):
            await session.initialize()
            result = await session.call_tool("search_documents", {"query": QUESTION, "top_k": TOP_K})
    assert not result.is_error, result.content
    passages: list[dict[str, Any]] = (result.structured_content or {})["passages"]
    assert [p["document_id"] for p in passages] == [str(documents[chunk_id]) for chunk_id, _ in expected]
    assert [p["score"] for p in passages] == pytest.approx([score for _, score in expected], abs=1e-5)


async def test_without_a_reranker_the_sources_are_retrievals_own(
    settings: Settings,
    client: httpx.AsyncClient,
    library: Library,
    resources: Resources,
    editor: Caller,
    embedder: LocalEmbedder,
) -> None:
    assert isinstance(resources.reranker, NoReranker)
    await add_documents(library)
    sources = (await ask(client, editor, QUESTION, top_k=TOP_K)).json()["sources"]
    query = RetrievalQuery(
        tenant_id=editor.tenant_id,
        text=QUESTION,
        vector=await embedder.embed_query(QUESTION),
        top_k=TOP_K,
        mode=RetrievalMode(settings.retrieval_mode),
        vector_weight=settings.retrieval_vector_weight,
        text_weight=settings.retrieval_text_weight,
        ef_search=settings.hnsw_ef_search,
        min_similarity=settings.retrieval_min_similarity,
    )
    async with resources.session_factory() as session:
        retrieved = await retrieve(session, query)
    assert [(s["chunk_id"], s["score"]) for s in sources] == [
        (c.chunk_id, round(c.score, 6)) for c in retrieved
    ]


async def test_a_cross_encoder_without_a_usable_model_stops_the_start(
    settings: Settings, embedder: LocalEmbedder, tmp_path: Path
) -> None:
    with pytest.raises(RerankerError, match="RERANKER=cross-encoder needs RERANKER_MODEL_PATH"):
        async with running_app(settings, embedder=embedder, reranker="cross-encoder"):
            pass
    with pytest.raises(RerankerError, match="is not a directory"):
        async with reranking_app(settings, embedder, tmp_path / "missing"):
            pass
