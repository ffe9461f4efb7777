"""Documents tests run the real app with the session's real embedding model behind a counter."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from asgi_lifespan import LifespanManager
from fastapi import FastAPI
from sqlalchemy import func, select

from app.db.models import Chunk
from app.documents.ingestion import IngestionContext
from app.main import create_app
from app.rag.embeddings import Embedder, LocalEmbedder
from app.resources import Resources
from app.settings import Settings
from tests.support.embedders import CountingEmbedder


@pytest.fixture
def settings(settings: Settings) -> Settings:
    return settings.model_copy(update={"max_upload_mb": 1, "embedding_batch_size": 16})


@pytest.fixture
def counting_embedder(embedder: LocalEmbedder) -> CountingEmbedder:
    return CountingEmbedder(embedder)


@pytest.fixture
async def app(settings: Settings, counting_embedder: CountingEmbedder) -> AsyncIterator[FastAPI]:
    application = create_app(settings, embedder=counting_embedder)
    async with LifespanManager(application):
        yield application


@pytest.fixture
def resources(app: FastAPI) -> Resources:
    resources: Resources = app.state.resources
    return resources


async def run_jobs(
    resources: Resources, *, embedder: Embedder | None = None, settings: Settings | None = None
) -> None:
    """Run a worker until the queue is empty (what `python -m app worker --burst` does)."""
    context = IngestionContext(
        resources.session_factory,
        embedder or resources.embedder,
        settings or resources.settings,
        metrics=resources.telemetry.metrics,
    )
    await resources.job_queue.run_worker(context, burst=True)


async def upload(
    client: httpx.AsyncClient,
    headers: dict[str, str],
    data: bytes,
    *,
    filename: str = "doc.pdf",
    document_id: uuid.UUID | str | None = None,
    **fields: Any,
) -> httpx.Response:
    files = {"file": (filename, data, "application/octet-stream")}
    if document_id is None:
        return await client.post("/api/v1/docs", files=files, data=fields, headers=headers)
    return await client.put(f"/api/v1/docs/{document_id}", files=files, headers=headers)


async def chunk_rows(
    resources: Resources, document_id: str | uuid.UUID, *, current_only: bool = False
) -> list[Chunk]:
    async with resources.session_factory() as session:
        query = select(Chunk).where(Chunk.document_id == uuid.UUID(str(document_id))).order_by(Chunk.id)
        if current_only:
            query = query.where(Chunk.valid_to_version.is_(None))
        return list((await session.execute(query)).scalars())


async def count_rows(resources: Resources, model: type[Any]) -> int:
    async with resources.session_factory() as session:
        return int((await session.execute(select(func.count()).select_from(model))).scalar_one())
