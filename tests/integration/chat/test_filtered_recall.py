"""A tag filter that matches a rare document still returns that document's k best chunks, even
when thousands of chunks of other documents sit nearer the query — the case where a plain HNSW
scan followed by a filter returns too few rows. Whichever plan PostgreSQL picks (the HNSW index
with pgvector 0.8 iterative scans, or the tag index first and an exact sort), the answer must be
the exact top k of the matching document; the service also completes a short filtered result
with an exact scan."""

from __future__ import annotations

import math
import random
import uuid

import httpx
import pytest
from sqlalchemy import insert, text

from app.db.models import Chunk, Document
from app.rag.embeddings import LocalEmbedder
from app.resources import Resources
from tests.support.callers import Caller
from tests.support.documents import make_pdf
from tests.support.library import Library, ask

pytestmark = [pytest.mark.integration, pytest.mark.pgvector]

QUESTION = "How long are nightly database backups retained?"
DISTRACTORS = 3000
RARE_PAGES = [
    "Snapshots of the reporting warehouse are kept for one year.",
    "The cafeteria menu changes every Monday.",
    "Archived mailboxes are retained for seven years for legal reasons.",
    "Visitor badges must be returned at reception.",
    "Log files rotate daily and are deleted after ninety days.",
]


def cosine(a: list[float], b: list[float]) -> float:
    return sum(x * y for x, y in zip(a, b, strict=True)) / (
        math.sqrt(sum(x * x for x in a)) * math.sqrt(sum(y * y for y in b))
    )


def near(vector: list[float], rng: random.Random, spread: float = 0.02) -> list[float]:
    moved = [x + rng.gauss(0, spread) for x in vector]
    norm = math.sqrt(sum(x * x for x in moved))
    return [x / norm for x in moved]


async def add_distractors(resources: Resources, tenant_id: uuid.UUID, query: list[float], model: str) -> None:
    """A large 'common' document whose chunks all sit closer to the query than any rare chunk."""
    rng = random.Random(7)
    async with resources.session_factory() as session, session.begin():
        document = Document(tenant_id=tenant_id, title="Backup log", tags=["common"], current_version=1)
        session.add(document)
        await session.flush()
        await session.execute(
            insert(Chunk),
            [
                {
                    "tenant_id": tenant_id,
                    "document_id": document.id,
                    "page": n + 1,
                    "position": 0,
                    "text": f"Cluster {n} backup entry.",
                    "page_sha256": f"{n:064x}",
                    "embedding": near(query, rng),
                    "embedding_model": model,
                    "valid_from_version": 1,
                }
                for n in range(DISTRACTORS)
            ],
        )
    async with resources.engine.connect() as connection:
        await connection.execute(text("ANALYZE chunks"))
        await connection.execute(text("ANALYZE documents"))


async def test_a_rare_tag_keeps_its_k_best_matches(
    client: httpx.AsyncClient, library: Library, editor: Caller, embedder: LocalEmbedder, resources: Resources
) -> None:
    await library.add(make_pdf(RARE_PAGES), filename="rare.pdf", title="Rare policy", tags="rare")
    query = await embedder.embed_query(QUESTION)
    await add_distractors(resources, editor.tenant_id, query, embedder.model_name)

    # Unfiltered, the planner takes the HNSW index: the distractors are what it would find first.
    async with resources.engine.connect() as connection:
        plan = "\n".join(
            row[0]
            for row in await connection.execute(
                text("EXPLAIN SELECT id FROM chunks ORDER BY embedding <=> CAST(:q AS vector) LIMIT 3"),
                {"q": str(query)},
            )
        )
    assert "ix_chunks_embedding_hnsw" in plan

    body = (await ask(client, editor, QUESTION, mode="vector", top_k=3, filters={"tags": ["rare"]})).json()
    got = [(source["title"], source["page"]) for source in body["sources"]]
    pages = await embedder.embed_documents(RARE_PAGES)
    exact = sorted(range(len(RARE_PAGES)), key=lambda i: -cosine(query, pages[i]))[:3]
    assert got == [("Rare policy", i + 1) for i in exact]

    unfiltered = (await ask(client, editor, QUESTION, mode="vector", top_k=3)).json()
    assert {source["title"] for source in unfiltered["sources"]} == {"Backup log"}
