"""What the documents capability adds to a process: the embedder, the job queue and, when
``RUN_WORKER_IN_PROCESS`` is set (the embedded default of ``python -m app serve``), a worker; and
the document limits (``DOC_MAX_PAGES``, ``DOC_MAX_CHARS``, ``DOC_PAGE_PARSE_TIMEOUT_S``) for the
parsing that uploads do before they are accepted."""

from __future__ import annotations

import asyncio
from contextlib import AsyncExitStack
from dataclasses import dataclass

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.documents import repository as repo
from app.documents.ingestion import IngestionContext
from app.documents.queue import JobQueue, create_job_queue, in_process_worker
from app.errors import InternalError
from app.observability.metrics import DomainMetrics
from app.observability.metrics.noop import NoopBackend
from app.rag.embeddings import Embedder, LocalEmbedder, create_embedder, settings_for_vectors
from app.settings import Settings


class EmbeddingModelMismatchError(InternalError):
    """The stored vectors were made by another model (or have another dimension) than configured."""

    code = "embedding_model_mismatch"
    title = "Embedding model mismatch"


@dataclass(frozen=True)
class DocumentsRuntime:
    embedder: Embedder
    job_queue: JobQueue


async def check_embedding_compatibility(
    session_factory: async_sessionmaker[AsyncSession], model_name: str, dimension: int
) -> None:
    """Refuse to start when stored vectors cannot be compared with the configured model's."""
    async with session_factory() as session:
        column_dim = await repo.vector_column_dimension(session)
        models = await repo.stored_embedding_models(session)
    if column_dim is not None and column_dim != dimension:
        raise EmbeddingModelMismatchError(
            f"the database stores {column_dim}-d vectors but EMBEDDING_DIM is {dimension}; the dimension "
            "is part of the schema: use a fresh database migrated with the new EMBEDDING_DIM"
        )
    foreign = sorted(set(models) - {model_name})
    if foreign:
        raise EmbeddingModelMismatchError(
            f"stored vectors were made by {', '.join(foreign)} but the configured model is {model_name}; "
            f"run `python -m app reembed` (make reembed) to re-embed with {model_name}, "
            f"or set {settings_for_vectors(foreign[0], configured=model_name)}"
        )


async def start_documents_runtime(
    stack: AsyncExitStack,
    settings: Settings,
    session_factory: async_sessionmaker[AsyncSession],
    *,
    embedder: Embedder | None = None,
    metrics: DomainMetrics | None = None,
) -> DocumentsRuntime:
    """``embedder`` lets the caller share an already-loaded model (it then stays the caller's to
    close); ``metrics`` are the process's, where the in-process worker records its jobs."""
    if embedder is None:
        embedder = create_embedder(settings)
        stack.push_async_callback(embedder.aclose)
        if settings.embedding_warm_up and isinstance(embedder, LocalEmbedder):
            # Off the loop; the first question should not pay for loading the weights.
            await asyncio.to_thread(embedder.load)
    await check_embedding_compatibility(session_factory, embedder.model_name, embedder.dimension)
    queue = create_job_queue(settings)
    await queue.open()
    stack.push_async_callback(queue.close)
    if settings.run_worker_in_process:
        context = IngestionContext(
            session_factory, embedder, settings, metrics=metrics or DomainMetrics(NoopBackend())
        )
        await stack.enter_async_context(in_process_worker(queue, context))
    return DocumentsRuntime(embedder=embedder, job_queue=queue)
