"""Ingestion embeds a document's chunks longest first, in batches of similar length (little
padding), and still stores every chunk with its own vector."""

from __future__ import annotations

import httpx
import numpy as np
import pytest

from app.documents.chunking import embedding_input
from app.rag.embeddings import LocalEmbedder
from app.resources import Resources
from tests.support.callers import MakeCaller
from tests.support.documents import chunk_rows, make_pdf, page_text, run_jobs, upload
from tests.support.embedders import CountingEmbedder

pytestmark = [pytest.mark.integration, pytest.mark.pgvector]

TOPICS = ["failover", "backups", "billing", "search", "limits", "tokens"]


async def test_chunks_of_every_length_are_stored_each_with_its_own_vector(
    client: httpx.AsyncClient,
    make_caller: MakeCaller,
    resources: Resources,
    embedder: LocalEmbedder,
    counting_embedder: CountingEmbedder,
) -> None:
    caller = await make_caller()
    # Pages from 1 to 24 sentences: chunks of many lengths, more of them than one batch (16).
    pages = [page_text(n, topic=TOPICS[n % len(TOPICS)], sentences=1 + (7 * n) % 24) for n in range(1, 19)]
    response = await upload(client, caller.headers, make_pdf(pages), title="Runbook")
    assert response.status_code == 202, response.text
    counting_embedder.reset()
    await run_jobs(resources)

    rows = await chunk_rows(resources, response.json()["document_id"])
    assert len(rows) > 16 and counting_embedder.calls >= 2
    lengths = [len(text) for text in counting_embedder.texts]
    assert lengths == sorted(lengths, reverse=True)  # embedded longest first
    stored = np.array([row.embedding for row in rows], dtype=np.float32)
    alone = np.array([embedder.encode([embedding_input(row.context, row.text)])[0] for row in rows])
    assert (stored * alone).sum(axis=1).min() >= 0.9999
