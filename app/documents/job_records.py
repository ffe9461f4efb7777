"""What an ingestion job writes about itself in its row (``ingestion_jobs``) as it runs: its stage
and progress, a failure (for good, or queued again for the queue to retry), and the stalled-job
reaper's record of a worker that stopped. Times come from the caller (the worker's clock,
``IngestionContext.clock``)."""

from __future__ import annotations

import uuid
from datetime import datetime

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.documents import repository as repo
from app.documents.errors import WORKER_STOPPED

FINISHED = frozenset({"succeeded", "failed"})


async def record_progress(
    session_factory: async_sessionmaker[AsyncSession],
    job_id: uuid.UUID,
    stage: str,
    progress: int,
    *,
    pages: tuple[int, int] | None = None,
) -> None:
    """Record the job's stage and progress; ``pages`` (done, of) for a stage that goes page by page."""
    done, total = pages if pages is not None else (None, None)
    async with session_factory() as session, session.begin():
        await repo.update_job(
            session,
            job_id,
            stage=stage,
            progress=max(0, min(100, progress)),
            stage_page=done,
            stage_pages=total,
        )


async def record_failure(
    session_factory: async_sessionmaker[AsyncSession],
    job_id: uuid.UUID,
    version_id: uuid.UUID,
    *,
    error: str,
    code: str,
    final: bool,
    now: datetime,
) -> None:
    """The job failed with ``error``: for good when ``final``, else queued for the queue to retry."""
    async with session_factory() as session, session.begin():
        values: dict[str, object] = {"error": error, "error_code": code}
        if final:
            values |= {"status": "failed", "finished_at": now}
            await repo.set_version_status(session, version_id, "failed")
        else:
            values |= {"status": "queued"}  # the queue retries it
            await repo.set_version_status(session, version_id, "queued")
        await repo.update_job(session, job_id, **values)


async def record_worker_stopped(
    session: AsyncSession,
    job_id: uuid.UUID,
    *,
    attempt: int,
    max_attempts: int,
    final: bool,
    now: datetime,
) -> bool:
    """The stalled-job reaper's record, in its transaction, that the worker running ``job_id``
    stopped (no heartbeat: killed, out of memory, lost) during its ``attempt``-th run: queued
    again with the reason or, after the last attempt, failed for good. False when the job had
    already finished (nothing to record)."""
    job = await repo.get_job_for_update(session, job_id)
    if job is None or job.status in FINISHED:
        return False
    job.attempts = max(job.attempts, attempt)  # a run that died before its claim still counts
    job.error_code = WORKER_STOPPED
    if final:
        job.status = "failed"
        job.finished_at = now
        job.error = (
            f"the worker processing this document stopped during attempt {attempt} of "
            f"{max_attempts} (JOB_MAX_ATTEMPTS); giving up"
        )
        await repo.set_version_status(session, job.version_id, "failed")
    else:
        job.status = "queued"
        job.error = (
            f"the worker processing this document stopped (attempt {attempt} of {max_attempts}); "
            "it will be retried"
        )
        await repo.set_version_status(session, job.version_id, "queued")
    return True
