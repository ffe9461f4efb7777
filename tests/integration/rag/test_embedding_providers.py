"""The OpenAI and Gemini embedders through their real SDKs against the shared fake provider
server (their real wire formats), plus the local model's properties."""

from __future__ import annotations

import math

import pytest

from app.rag.embeddings import (
    EmbeddingError,
    GeminiEmbedder,
    LocalEmbedder,
    OpenAIEmbedder,
    create_embedder,
)
from app.settings import Settings
from tests.fakes.fake_llm_server import FakeLLMServer

pytestmark = [pytest.mark.integration, pytest.mark.pgvector]

TEXTS = [f"passage number {n} about ingestion" for n in range(7)]


async def test_openai_embedder_batches_and_keeps_order(fake: FakeLLMServer) -> None:
    embedder = OpenAIEmbedder(
        "text-embedding-3-small", 384, api_key="sk-test", base_url=fake.openai_base_url, batch_size=3
    )
    try:
        vectors = await embedder.embed_documents(TEXTS)
        again = await embedder.embed_query(TEXTS[4])
    finally:
        await embedder.aclose()
    assert len(vectors) == len(TEXTS) and all(len(v) == 384 for v in vectors)
    assert again == pytest.approx(vectors[4])
    assert fake.stats()["openai"]["embedding_requests"] == 4  # 3 batches + 1 query


async def test_gemini_embedder_uses_batch_embed_contents(fake: FakeLLMServer) -> None:
    embedder = GeminiEmbedder(
        "gemini-embedding-001", 384, api_key="g-test", base_url=fake.gemini_base_url, batch_size=5
    )
    try:
        vectors = await embedder.embed_documents(TEXTS)
    finally:
        await embedder.aclose()
    assert len(vectors) == len(TEXTS) and all(len(v) == 384 for v in vectors)
    assert vectors[0] != vectors[1]
    assert fake.stats()["gemini"]["embedding_requests"] == 2


async def test_provider_failure_is_an_embedding_error(fake: FakeLLMServer) -> None:
    fake.configure("openai", mode="error", status=500)
    embedder = OpenAIEmbedder("m", 384, api_key="sk-test", base_url=fake.openai_base_url, timeout_s=5)
    try:
        with pytest.raises(EmbeddingError):
            await embedder.embed_documents(["x"])
    finally:
        await embedder.aclose()


def test_cloud_provider_without_a_key_is_a_configuration_error() -> None:
    with pytest.raises(EmbeddingError, match="OPENAI_API_KEY"):
        create_embedder(Settings(embedding_provider="openai", _env_file=None))  # type: ignore[call-arg]


async def test_local_model_makes_normalised_384_d_vectors_that_rank_by_meaning(
    embedder: LocalEmbedder,
) -> None:
    docs = await embedder.embed_documents(
        ["Workers retry stalled ingestion jobs.", "The cat sat on the mat."]
    )
    query = await embedder.embed_query("What happens when an ingestion worker dies?")
    assert all(len(v) == 384 and math.isclose(sum(x * x for x in v), 1.0, rel_tol=1e-3) for v in docs)
    scores = [sum(a * b for a, b in zip(query, doc, strict=True)) for doc in docs]
    assert scores[0] > scores[1]
