"""Bring your own embedding model, end to end: with EMBEDDING_MODEL_PATH the service starts on that
model, stores its vectors under the model's own name and answers from them; on vectors of the
bundled model it refuses to start, pointing to reembed, until `python -m app reembed` has moved
every vector to the new model; a model of another dimension than the vector column, or a directory
it cannot run, stops the start with one sentence. The model is a tiny random-weight BERT written at
test time (tests/support/tiny_models.py)."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from app.documents.chunking import embedding_input
from app.documents.runtime import EmbeddingModelMismatchError
from app.rag.embeddings import Embedder, LocalEmbedder, OnnxEmbedder, create_embedder
from app.resources import Resources
from app.settings import Settings
from tests.fakes.fake_llm_server import FakeLLMServer
from tests.support.apps import running_app
from tests.support.callers import Caller
from tests.support.documents import chunk_rows
from tests.support.library import Library, ask
from tests.support.llm import fake_openai_overrides
from tests.support.tiny_models import TinyModels, write_embedding_model

pytestmark = [pytest.mark.integration, pytest.mark.pgvector]

ROOT = Path(__file__).resolve().parents[3]
# One chunk each; a random-weight model still puts a text nearest to itself.
DOCUMENTS = {
    "Retention": "Backups of customer databases are kept for exactly 35 days before deletion.",
    "Parking": "Staff parking is on level two of the garage and bicycles go in the courtyard racks.",
    "Office hours": "The support desk is open from nine to five on weekdays and closed on holidays.",
}


@pytest.fixture
def settings(settings: Settings, fake: FakeLLMServer) -> Settings:
    return settings.model_copy(update=fake_openai_overrides(fake))


@pytest.fixture
def app_embedder(embedder: LocalEmbedder) -> Embedder:
    return embedder


def run_cli(settings: Settings, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    assert settings.database_url is not None
    environment = {
        **os.environ,
        "DATABASE_URL": settings.database_url,
        "DATA_DIR": str(settings.data_dir),
        **env,
    }
    return subprocess.run(
        [sys.executable, "-m", "app", *args],
        cwd=ROOT,
        env=environment,
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )


async def add_documents(library: Library) -> dict[str, str]:
    return {
        title: await library.add(text, filename=f"{title.lower().replace(' ', '-')}.txt", title=title)
        for title, text in DOCUMENTS.items()
    }


async def test_the_service_runs_on_the_model_in_embedding_model_path(
    settings: Settings, tiny_models: TinyModels
) -> None:
    expected = create_embedder(settings.model_copy(update={"embedding_model_path": tiny_models.embedder}))
    async with running_app(settings, embedding_model_path=tiny_models.embedder) as running:
        client, resources = running.client, running.resources
        assert isinstance(resources.embedder, OnnxEmbedder)
        assert resources.embedder.model_name == expected.model_name
        assert resources.embedder.model_name.startswith("tiny-embedder@")
        editor = await running.make_caller()
        documents = await add_documents(Library(client, resources, editor))
        for document_id in documents.values():
            rows = await chunk_rows(resources, document_id)
            assert rows and {row.embedding_model for row in rows} == {expected.model_name}

        for title, text in DOCUMENTS.items():
            # What the model embedded for the passage: its context line (the title), then its text.
            response = await ask(client, editor, embedding_input(title, text), mode="vector", top_k=3)
            assert response.status_code == 200, response.text
            top = response.json()["sources"][0]
            assert (top["title"], top["document_id"]) == (title, documents[title])
            assert top["score"] == pytest.approx(1.0, abs=1e-3)  # cosine of a text with itself


async def test_vectors_of_the_bundled_model_are_refused_until_reembed_moves_them(
    settings: Settings,
    library: Library,
    resources: Resources,
    embedder: LocalEmbedder,
    tiny_models: TinyModels,
    editor: Caller,
) -> None:
    documents = await add_documents(library)  # the fixture's app: the bundled model
    before = [row for d in documents.values() for row in await chunk_rows(resources, d)]
    assert {row.embedding_model for row in before} == {"all-MiniLM-L6-v2+onnx-int8-dynamic"}

    with pytest.raises(EmbeddingModelMismatchError, match="reembed") as refused:
        async with running_app(settings, embedding_model_path=tiny_models.embedder):
            pass
    assert "stored vectors were made by all-MiniLM-L6-v2+onnx-int8-dynamic" in str(refused.value)
    assert "EMBEDDING_MODEL_PATH unset" in str(refused.value)

    result = await asyncio.to_thread(
        run_cli, settings, "reembed", EMBEDDING_MODEL_PATH=str(tiny_models.embedder)
    )
    assert result.returncode == 0, result.stderr
    byo = create_embedder(settings.model_copy(update={"embedding_model_path": tiny_models.embedder}))
    assert isinstance(byo, LocalEmbedder)
    assert f"re-embedded {len(before)} chunks with {byo.model_name}" in result.stdout
    digest = byo.model_name.split("@")[1].removesuffix("+onnx")

    after = [row for d in documents.values() for row in await chunk_rows(resources, d)]
    assert {row.embedding_model for row in after} == {byo.model_name}
    assert {row.text_tokens for row in before} != {None}
    assert {row.text_tokens for row in after} == {None}  # counted by the new model's tokenizer
    stored = np.array([row.embedding for row in after], dtype=np.float32)
    fresh = np.array(byo.encode([embedding_input(row.context, row.text) for row in after]), dtype=np.float32)
    assert np.allclose(stored, fresh, atol=1e-3)

    async with running_app(settings, embedding_model_path=tiny_models.embedder) as (_, client, _make):
        response = await ask(client, editor, DOCUMENTS["Parking"], mode="vector")
        assert response.json()["sources"][0]["document_id"] == documents["Parking"]
    # and now the bundled model is the foreign one
    with pytest.raises(EmbeddingModelMismatchError, match="run `python -m app reembed`") as back:
        async with running_app(settings):
            pass
    assert f"EMBEDDING_MODEL_PATH=<the tiny-embedder directory whose files hash to {digest}>" in str(
        back.value
    )


async def test_a_model_whose_dimension_is_not_the_vector_columns_is_refused(
    settings: Settings, tmp_path: Path
) -> None:
    narrow = write_embedding_model(tmp_path / "narrow", hidden=32, onnx="none")
    with pytest.raises(EmbeddingModelMismatchError, match="stores 384-d vectors but EMBEDDING_DIM is 32"):
        async with running_app(settings, embedding_model_path=narrow, embedding_dim=32):
            pass


async def test_an_unusable_model_setting_stops_serve_with_one_sentence(
    settings: Settings, tmp_path: Path
) -> None:
    (tmp_path / "empty").mkdir()
    cases = {
        "holds neither an ONNX export": {"EMBEDDING_MODEL_PATH": str(tmp_path / "empty")},
        "RERANKER=cross-encoder needs RERANKER_MODEL_PATH": {"RERANKER": "cross-encoder"},
    }
    for message, env in cases.items():
        result = await asyncio.to_thread(run_cli, settings, "serve", "--port", "1", **env)
        assert result.returncode == 2, result.stderr
        assert message in result.stderr
        assert "Traceback" not in result.stderr
        assert len(result.stderr.strip().splitlines()) == 1
