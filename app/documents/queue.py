"""The durable job queue: procrastinate on the service's PostgreSQL.

``JobQueue.enqueue_ingestion`` defers the job on the *caller's* SQLAlchemy connection, inside the
transaction that stores the upload, so the upload and its job commit (or vanish) together.
Workers (``python -m app worker``, or in-process in the embedded default) run
``ingest_document_version`` with a per-document lock, so one document is ingested by one job at a
time; jobs whose worker died (no heartbeat for ``WORKER_STALLED_AFTER_S``) are put back in the
queue by any live worker, and such a run counts toward ``JOB_MAX_ATTEMPTS`` like one that raised:
after the last one the job is failed, so a document that kills every worker that opens it (memory,
a crash in a parser) cannot cycle forever at the head of the FIFO queue.

Every worker also runs the periodic maintenance jobs (procrastinate's periodic deferrer: one job
per tick however many workers run): ``expire_conversations`` hourly enforces
``MEMORY_RETENTION_DAYS`` (soft delete), then deletes for good what was soft-deleted more than
``DELETED_HISTORY_PURGE_DAYS`` ago and ratings older than ``FEEDBACK_RETENTION_DAYS``.
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
from procrastinate import JobContext, RetryStrategy, sql
from procrastinate.jobs import Job, Status
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

from app.db.urls import libpq_url
from app.documents import repository as repo
from app.documents.ingestion import IngestionContext, ingest_document_version, sample_queue_depth
from app.documents.job_records import record_worker_stopped
from app.feedback.retention import purge_feedback
from app.memory.retention import expire_conversations, purge_deleted_history
from app.settings import Settings

logger = structlog.get_logger(__name__)

INGEST_TASK = "ingest_document_version"
INGESTION_QUEUE = "ingestion"
RETENTION_TASK = "expire_conversations"
RETENTION_CRON = "17 * * * *"  # hourly, off the top of the hour
MAINTENANCE_QUEUE = "maintenance"
CONTEXT_KEY = "ingestion"


async def _ingest_task(context: JobContext, job_id: str) -> None:
    ingestion: IngestionContext = context.additional_context[CONTEXT_KEY]
    retries = ingestion.settings.job_max_attempts - 1
    final = context.job.attempts >= retries
    await ingest_document_version(ingestion, uuid.UUID(job_id), final_attempt=final)


async def _retention_task(context: JobContext, timestamp: int) -> None:
    """``timestamp`` is the tick procrastinate deferred the job for; "now" is the worker's clock."""
    worker: IngestionContext = context.additional_context[CONTEXT_KEY]
    settings, now = worker.settings, worker.clock()
    expired = await expire_conversations(worker.session_factory, settings.memory_retention_days, now=now)
    logger.info("conversations_expired", count=expired, tick=timestamp)
    conversations, messages = await purge_deleted_history(
        worker.session_factory, settings.deleted_history_purge_days, now=now
    )
    ratings = await purge_feedback(worker.session_factory, settings.feedback_retention_days, now=now)
    logger.info(
        "user_text_purged", conversations=conversations, messages=messages, ratings=ratings, tick=timestamp
    )


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

    async def retry_stalled_jobs(self, context: IngestionContext) -> int:
        """Settle the jobs of workers that stopped sending heartbeats: back in the queue while
        they have attempts left, failed after the ``JOB_MAX_ATTEMPTS``-th (procrastinate's
        ``attempts`` counts every earlier run, stalled or raised). Returns how many were put back."""
        stalled = await self.app.job_manager.get_stalled_jobs(
            seconds_since_heartbeat=self.settings.worker_stalled_after_s
        )
        count = 0
        for job in stalled:
            if await self._settle_stalled(context, job) == "retried":
                count += 1
        return count

    async def _settle_stalled(self, context: IngestionContext, job: Job) -> str:
        """One stalled job, in one transaction: procrastinate's row (locked, and only if it is
        still the stalled run we listed: another worker's reaper may have been first) and the
        ingestion job's record of it change together. Returns "retried", "failed", "done" (the
        ingestion job had already finished: nothing left to run) or "skipped"."""
        assert job.id is not None
        attempt = job.attempts + 1  # the runs so far, the stalled one included
        max_attempts = self.settings.job_max_attempts
        final = attempt >= max_attempts
        ingestion_job_id = _ingestion_job_id(job)
        async with context.session_factory() as session, session.begin():
            still_stalled = await session.execute(
                text(
                    "SELECT 1 FROM procrastinate_jobs WHERE id = :id AND status = 'doing' "
                    "AND attempts = :attempts AND worker_id IS NOT DISTINCT FROM :worker_id FOR UPDATE"
                ),
                {"id": job.id, "attempts": job.attempts, "worker_id": job.worker_id},
            )
            if still_stalled.first() is None:
                return "skipped"
            outcome = "failed" if final else "retried"
            if ingestion_job_id is not None and not await record_worker_stopped(
                session,
                ingestion_job_id,
                attempt=attempt,
                max_attempts=max_attempts,
                final=final,
                now=context.clock(),
            ):
                outcome = "done"  # stored (or superseded, purged) before the worker stopped
            await _settle_queue_row(session, job.id, outcome)
        log = logger.bind(
            queue_job_id=job.id,
            task=job.task_name,
            ingestion_job_id=str(ingestion_job_id),
            attempt=attempt,
            max_attempts=max_attempts,
        )
        if outcome == "failed":
            log.error("stalled_job_failed")
        else:
            log.warning(f"stalled_job_{outcome}")
        return outcome

    async def run_worker(
        self, context: IngestionContext, *, burst: bool = False, name: str | None = None
    ) -> None:
        """Process jobs until cancelled, or (``burst``) until the queue is empty."""
        await self._prune_and_retry(context)
        options: dict[str, Any] = {
            "queues": [INGESTION_QUEUE, MAINTENANCE_QUEUE],
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
        async with self._reaper(context):
            await self.app.run_worker_async(**options)

    async def _prune_and_retry(self, context: IngestionContext) -> None:
        await self.app.job_manager.prune_stalled_workers(self.settings.worker_stalled_after_s)
        await self.retry_stalled_jobs(context)
        await sample_queue_depth(context)  # also while no job starts or ends (a long one runs)

    @contextlib.asynccontextmanager
    async def _reaper(self, context: IngestionContext) -> AsyncIterator[None]:
        async def loop() -> None:
            while True:
                await asyncio.sleep(self.settings.worker_stalled_after_s / 2)
                try:
                    await self._prune_and_retry(context)
                except Exception:
                    logger.exception("stalled_job_check_failed")

        task = asyncio.create_task(loop(), name="retry-stalled-jobs")
        try:
            yield
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task


async def _settle_queue_row(session: AsyncSession, queue_job_id: int, outcome: str) -> None:
    """procrastinate's row of a stalled job: due again now ("retried"), else finished."""
    connection = await session.connection()
    if outcome == "retried":
        await connection.exec_driver_sql(
            sql.queries["retry_job"],
            {
                "job_id": queue_job_id,
                # procrastinate compares it with the database's now(): the wall clock, not the worker's
                "retry_at": repo.utcnow(),
                "new_priority": None,
                "new_queue_name": None,
                "new_lock": None,
            },
        )
    else:
        status = Status.FAILED if outcome == "failed" else Status.SUCCEEDED
        await connection.exec_driver_sql(
            sql.queries["finish_job"],
            # like the worker's delete_jobs="successful"
            {"job_id": queue_job_id, "status": status.value, "delete_job": outcome == "done"},
        )


def _ingestion_job_id(job: Job) -> uuid.UUID | None:
    if job.task_name != INGEST_TASK:
        return None
    try:
        return uuid.UUID(str(job.task_kwargs.get("job_id")))
    except ValueError:
        return None


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
    app.periodic(cron=RETENTION_CRON)(
        app.task(name=RETENTION_TASK, queue=MAINTENANCE_QUEUE, pass_context=True)(_retention_task)
    )
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
