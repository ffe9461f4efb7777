"""What the documents capability adds to a process: the job queue and, when
``RUN_WORKER_IN_PROCESS`` is set (the embedded default of ``python -m app serve``), a worker; and
the document limits (``DOC_MAX_PAGES``, ``DOC_MAX_CHARS``, ``DOC_PAGE_PARSE_TIMEOUT_S``) for the
parsing that uploads do before they are accepted. The embedder is the retrieval capability's
(``app.rag.runtime``): the documents' vectors must be comparable with its, or the process does not
start."""

from __future__ import annotations

from contextlib import AsyncExitStack

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.documents import repository as repo
from app.documents.ingestion import IngestionContext
from app.documents.queue import JobQueue, create_job_queue, in_process_worker
from app.errors import InternalError
from app.observability.metrics import DomainMetrics
from app.observability.metrics.noop import NoopBackend
from app.rag.embeddings import Embedder, settings_for_vectors
from app.settings import Settings


class EmbeddingModelMismatchError(InternalError):
    """The stored vectors were made by another model (or have another dimension) than configured."""

    code = "embedding_model_mismatch"
    title = "Embedding model mismatch"


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
    embedder: Embedder,
    *,
    metrics: DomainMetrics | None = None,
) -> JobQueue:
    """The job queue, open until ``stack`` closes, once the stored vectors are known to be
    ``embedder``'s; ``metrics`` are the process's, where the in-process worker records its jobs."""
    await check_embedding_compatibility(session_factory, embedder.model_name, embedder.dimension)
    queue = create_job_queue(settings)
    await queue.open()
    stack.push_async_callback(queue.close)
    if settings.run_worker_in_process:
        context = IngestionContext(
            session_factory, embedder, settings, metrics=metrics or DomainMetrics(NoopBackend())
        )
        await stack.enter_async_context(in_process_worker(queue, context))
    return queue
