"""`make eval` compares configurations side by side, another embedding model included: each gets
its own database and app, and the table names each with its scores."""

from __future__ import annotations

import os

import pytest

from app.rag.embeddings import LocalEmbedder
from app.rag.query import RetrievalMode
from app.settings import Settings
from scripts.eval.golden import GoldenSet, load
from scripts.eval.harness import Configuration, costs, evaluate, table
from tests.support.services import PostgresForTests
from tests.support.tiny_models import TinyModels

pytestmark = [pytest.mark.integration, pytest.mark.pgvector]


def _small(golden: GoldenSet, questions: int = 4, distractors: int = 12) -> GoldenSet:
    """The first questions, the pages that answer them and a few other pages."""
    asked = golden.questions[:questions]
    wanted = set().union(*(q.relevant for q in asked))
    others = [p for p in golden.pages if p.id not in wanted][:distractors]
    return GoldenSet(golden.name, tuple(p for p in golden.pages if p.id in wanted) + tuple(others), asked)


async def test_two_embedding_models_are_evaluated_side_by_side(
    settings: Settings,
    embedder: LocalEmbedder,
    tiny_models: TinyModels,
    postgres_server: PostgresForTests,
    worker_name: str,
) -> None:
    golden = _small(load("sqlite"))
    other_database = postgres_server.create_database(f"ragchat_test_{worker_name}_tiny_{os.getpid()}")
    results = [
        await evaluate(
            settings, golden, Configuration("bundled"), modes=[RetrievalMode.vector], embedder=embedder
        ),
        await evaluate(
            settings.model_copy(update={"database_url": other_database}),
            golden,
            Configuration("tiny", {"embedding_model_path": tiny_models.embedder}),
            modes=[RetrievalMode.vector],
            embedder=embedder,  # not shared: the configuration names another model
        ),
    ]
    bundled, tiny = results
    assert bundled.pages == tiny.pages == len(golden.pages) and bundled.chunks > 0 and tiny.chunks > 0
    # The real model finds the answering page among 16 for most questions; random weights do not.
    assert bundled.modes[0].ranked.hits[5] >= 0.75
    assert tiny.modes[0].ranked.mrr < bundled.modes[0].ranked.mrr
    printed = table(results)
    assert "| bundled | vector |" in printed and "| tiny | vector |" in printed
    assert f"| tiny | {len(golden.pages)} |" in costs(results)
