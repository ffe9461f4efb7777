"""What an ingestion job writes about itself in its row (``ingestion_jobs``) as it runs: its stage
and progress, a failure (for good, or queued again for the queue to retry), and the stalled-job
reaper's record of a worker that stopped. Times come from the caller (the worker's clock,
``IngestionContext.clock``)."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Awaitable, Callable
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


class ProgressReporter:
    """A running job's stage and progress, written at most once per ``interval_s``
    (``JOB_PROGRESS_INTERVAL_S``; 0 writes every change at once).

    A change within the interval since the last write waits, replaced by any later change, and is
    written when the interval has passed. So a client polling a long job sees where it is at most
    ``interval_s`` late, and a job that finishes sooner (most documents: one or two pages) writes
    none of its intermediate stages: three to five transactions fewer per job. The job's claim
    counts as the first write; its end (stored, failed) is written by the job itself, after
    ``close``."""

    def __init__(
        self,
        session_factory: async_sessionmaker[AsyncSession],
        job_id: uuid.UUID,
        *,
        interval_s: float,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self._session_factory = session_factory
        self._job_id = job_id
        self._interval_s = interval_s
        self._clock = clock
        self._sleep = sleep
        self._last_write = clock()
        self._pending: tuple[str, int, tuple[int, int] | None] | None = None
        self._flusher: asyncio.Task[None] | None = None
        self._writing = False
        self._closed = False

    async def __aenter__(self) -> ProgressReporter:
        return self

    async def __aexit__(self, *_: object) -> None:
        await self.close()

    async def record(self, stage: str, progress: int, *, pages: tuple[int, int] | None = None) -> None:
        self._pending = (stage, progress, pages)
        if self._flusher is not None:
            return  # the waiting write takes this state
        wait = self._last_write + self._interval_s - self._clock()
        if wait <= 0:
            await self._write_pending()
        else:
            self._flusher = asyncio.create_task(self._write_after(wait))

    async def close(self) -> None:
        """Drop a write still waiting (the job's end supersedes it); let one under way finish, so
        it can never land after the job's final state."""
        self._closed = True
        flusher, self._flusher = self._flusher, None
        if flusher is None:
            return
        if not self._writing:
            flusher.cancel()
        try:
            await flusher
        except asyncio.CancelledError:
            # The dropped write's own cancel ends here; the job's (a worker shutting down while
            # this waits for a write under way) goes on to the job.
            current = asyncio.current_task()
            if current is not None and current.cancelling():
                raise

    async def _write_after(self, wait: float) -> None:
        # Changes recorded while a write is under way wait one more interval.
        while self._pending is not None and not self._closed:
            await self._sleep(wait)
            self._writing = True
            try:
                await self._write_pending()
            finally:
                self._writing = False
            wait = self._interval_s
        self._flusher = None

    async def _write_pending(self) -> None:
        if self._pending is None:
            return
        stage, progress, pages = self._pending
        self._pending = None
        self._last_write = self._clock()
        await record_progress(self._session_factory, self._job_id, stage, progress, pages=pages)


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
