"""Documents tests run the real app with the session's real embedding model behind a counter."""

from __future__ import annotations

import pytest

from app.rag.embeddings import LocalEmbedder
from app.settings import Settings
from tests.support.embedders import CountingEmbedder


@pytest.fixture
def settings(settings: Settings) -> Settings:
    return settings.model_copy(update={"max_upload_mb": 1, "embedding_batch_size": 16})


@pytest.fixture
def counting_embedder(embedder: LocalEmbedder) -> CountingEmbedder:
    return CountingEmbedder(embedder)


@pytest.fixture
def app_embedder(counting_embedder: CountingEmbedder) -> CountingEmbedder:
    return counting_embedder
