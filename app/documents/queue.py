"""The durable job queue: procrastinate on the service's PostgreSQL.

``JobQueue.enqueue_ingestion`` defers the job on the *caller's* SQLAlchemy connection, inside the
transaction that stores the upload, so the upload and its job commit (or vanish) together.
Workers (``python -m app worker``, or in-process in the embedded default) run
``ingest_document_version`` with a per-document lock, so one document is ingested by one job at a
time; jobs whose worker died (no heartbeat for ``WORKER_STALLED_AFTER_S``) are put back in the
queue by any live worker.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import procrastinate
import structlog
from procrastinate import JobContext, RetryStrategy
from sqlalchemy.ext.asyncio import AsyncSession

from app.documents.ingestion import IngestionContext, ingest_document_version
from app.settings import Settings

logger = structlog.get_logger(__name__)

INGEST_TASK = "ingest_document_version"
INGESTION_QUEUE = "ingestion"
CONTEXT_KEY = "ingestion"


def libpq_url(database_url: str) -> str:
    return database_url.replace("postgresql+psycopg://", "postgresql://", 1)


async def _ingest_task(context: JobContext, job_id: str) -> None:
    ingestion: IngestionContext = context.additional_context[CONTEXT_KEY]
    retries = ingestion.settings.job_max_attempts - 1
    final = context.job.attempts >= retries
    await ingest_document_version(ingestion, uuid.UUID(job_id), final_attempt=final)


@dataclass
class JobQueue:
    app: procrastinate.App
    settings: Settings

    async def open(self) -> None:
        await self.app.open_async()

    async def close(self) -> None:
        await self.app.close_async()

    async def enqueue_ingestion(
        self, session: AsyncSession, job_id: uuid.UUID, document_id: uuid.UUID
    ) -> int:
        """Defer inside ``session``'s open transaction; returns procrastinate's job id."""
        connection = await session.connection()
        raw = await connection.get_raw_connection()
        deferrer = self.app.configure_task(
            INGEST_TASK,
            connection=raw.driver_connection,
            lock=f"document:{document_id}",
            queue=INGESTION_QUEUE,
        )
        return int(await deferrer.defer_async(job_id=str(job_id)))

    async def retry_stalled_jobs(self) -> int:
        """Put jobs of workers that stopped sending heartbeats back in the queue."""
        stalled = await self.app.job_manager.get_stalled_jobs(
            seconds_since_heartbeat=self.settings.worker_stalled_after_s
        )
        count = 0
        for job in stalled:
            await self.app.job_manager.retry_job(job)
            logger.warning("stalled_job_retried", queue_job_id=job.id, task=job.task_name)
            count += 1
        return count

    async def run_worker(
        self, context: IngestionContext, *, burst: bool = False, name: str | None = None
    ) -> None:
        """Process jobs until cancelled, or (``burst``) until the queue is empty."""
        await self._prune_and_retry()
        options: dict[str, Any] = {
            "queues": [INGESTION_QUEUE],
            "concurrency": self.settings.worker_concurrency,
            "wait": not burst,
            "install_signal_handlers": False,
            "update_heartbeat_interval": self.settings.worker_heartbeat_s,
            "stalled_worker_timeout": self.settings.worker_stalled_after_s,
            "additional_context": {CONTEXT_KEY: context},
            "delete_jobs": "successful",
            "shutdown_graceful_timeout": 10.0,
        }
        if name:
            options["name"] = name
        if burst:
            await self.app.run_worker_async(**options)
            return
        async with self._reaper():
            await self.app.run_worker_async(**options)

    async def _prune_and_retry(self) -> None:
        await self.app.job_manager.prune_stalled_workers(self.settings.worker_stalled_after_s)
        await self.retry_stalled_jobs()

    @contextlib.asynccontextmanager
    async def _reaper(self) -> AsyncIterator[None]:
        async def loop() -> None:
            while True:
                await asyncio.sleep(self.settings.worker_stalled_after_s / 2)
                try:
                    await self._prune_and_retry()
                except Exception:
                    logger.exception("stalled_job_check_failed")

        task = asyncio.create_task(loop(), name="retry-stalled-jobs")
        try:
            yield
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task


def create_job_queue(settings: Settings, *, pool_max_size: int = 4) -> JobQueue:
    if settings.database_url is None:
        raise ValueError("DATABASE_URL must be resolved before the job queue is created")
    connector = procrastinate.PsycopgConnector(
        conninfo=libpq_url(settings.database_url), min_size=1, max_size=pool_max_size
    )
    app = procrastinate.App(connector=connector)
    app.task(
        name=INGEST_TASK,
        queue=INGESTION_QUEUE,
        pass_context=True,
        retry=RetryStrategy(max_attempts=max(0, settings.job_max_attempts - 1), wait=2, exponential_wait=2),
    )(_ingest_task)
    return JobQueue(app=app, settings=settings)


@contextlib.asynccontextmanager
async def in_process_worker(queue: JobQueue, context: IngestionContext) -> AsyncIterator[asyncio.Task[None]]:
    """A worker task living as long as the context (the server's lifespan in the embedded default)."""
    task = asyncio.create_task(queue.run_worker(context, name="in-process"), name="ingestion-worker")
    try:
        yield task
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
