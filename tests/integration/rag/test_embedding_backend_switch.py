"""Changing EMBEDDING_BACKEND never mixes two vector spaces in one index: on vectors of the other
backend the service refuses to start and names the settings that made them, until
`python -m app reembed` has moved every stored vector to the configured backend."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from pathlib import Path

import httpx
import numpy as np
import pytest

from app.documents.chunking import embedding_input
from app.documents.runtime import EmbeddingModelMismatchError, check_embedding_compatibility
from app.rag.embeddings import Embedder, LocalEmbedder, TorchEmbedder
from app.resources import Resources
from app.settings import Settings
from tests.support.callers import MakeCaller
from tests.support.documents import chunk_rows, make_pdf, page_text, run_jobs, upload

pytestmark = [pytest.mark.integration, pytest.mark.pgvector]

ROOT = Path(__file__).resolve().parents[3]


@pytest.fixture
def app_embedder(embedder: LocalEmbedder) -> Embedder:
    return embedder


@pytest.fixture(scope="module")
def torch_embedder() -> TorchEmbedder:
    model = TorchEmbedder("all-MiniLM-L6-v2", 384, batch_size=32)
    model.load()
    return model


def reembed(settings: Settings, backend: str) -> subprocess.CompletedProcess[str]:
    assert settings.database_url is not None
    env = {
        **os.environ,
        "DATABASE_URL": settings.database_url,
        "DATA_DIR": str(settings.data_dir),
        "EMBEDDING_BACKEND": backend,
    }
    return subprocess.run(
        [sys.executable, "-m", "app", "reembed"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )


async def test_torch_vectors_are_refused_on_the_onnx_backend_until_reembedded(
    client: httpx.AsyncClient,
    make_caller: MakeCaller,
    resources: Resources,
    settings: Settings,
    embedder: LocalEmbedder,
    torch_embedder: TorchEmbedder,
) -> None:
    caller = await make_caller()
    pdf = make_pdf([page_text(1, topic="failover"), page_text(2, topic="backups")])
    response = await upload(client, caller.headers, pdf, title="Runbook")
    assert response.status_code == 202, response.text
    document_id = response.json()["document_id"]
    await run_jobs(resources, embedder=torch_embedder)  # stored by a service on EMBEDDING_BACKEND=torch
    before = await chunk_rows(resources, document_id)
    assert before and {row.embedding_model for row in before} == {"all-MiniLM-L6-v2"}

    with pytest.raises(EmbeddingModelMismatchError, match="EMBEDDING_BACKEND=torch") as refused:
        await check_embedding_compatibility(resources.session_factory, embedder.model_name, 384)
    assert "reembed" in str(refused.value)

    result = await asyncio.to_thread(reembed, settings, "onnx")
    assert result.returncode == 0, result.stderr
    assert f"re-embedded {len(before)} chunks with all-MiniLM-L6-v2+onnx-int8-dynamic" in result.stdout

    after = await chunk_rows(resources, document_id)
    assert {row.embedding_model for row in after} == {"all-MiniLM-L6-v2+onnx-int8-dynamic"}
    stored = np.array([row.embedding for row in after], dtype=np.float32)
    assert all(row.context for row in after)  # re-embedded with the title line, as ingested
    fresh = np.array(
        embedder.encode([embedding_input(row.context, row.text) for row in after]), dtype=np.float32
    )
    assert np.allclose(stored, fresh, atol=1e-3)
    await check_embedding_compatibility(resources.session_factory, embedder.model_name, 384)
