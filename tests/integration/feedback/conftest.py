"""Feedback tests: the real app answering real chat questions (the session's embedding model, real
PostgreSQL and Redis, the OpenAI provider played by the wire-level fake), then rated over HTTP."""

from __future__ import annotations

import pytest

from app.rag.embeddings import LocalEmbedder
from app.settings import Settings
from tests.fakes.fake_llm_server import FakeLLMServer
from tests.support.llm import fake_openai_overrides


@pytest.fixture
def settings(settings: Settings, fake: FakeLLMServer) -> Settings:
    return settings.model_copy(update={**fake_openai_overrides(fake), "router_cooldown_s": 0.5})


@pytest.fixture
def app_embedder(embedder: LocalEmbedder) -> LocalEmbedder:
    return embedder
