"""What a client polling an ingestion job sees of its progress, and what that costs the job: stages
are written at most every ``JOB_PROGRESS_INTERVAL_S``, so a short job writes none of them and a long
one shows where it is."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import httpx
import pytest
from sqlalchemy import text

from app.documents import job_records
from app.documents.job_records import ProgressReporter
from app.resources import Resources
from tests.support.callers import MakeCaller
from tests.support.clock import SteppedClock
from tests.support.documents import run_jobs, upload
from tests.support.embedders import GatedEmbedder
from tests.support.waiting import wait_for_async

pytestmark = [pytest.mark.integration]

INTERVAL_S = 30.0  # longer than any step here takes, however busy the machine: only the clock moves it
NOTES = b"Backups run nightly at two. Restores are tested every month on a spare server."


class HeldSleeps:
    """A ``sleep`` for the reporter: each call waits until the test releases it."""

    def __init__(self) -> None:
        self.calls: list[tuple[float, asyncio.Event]] = []
        self.cancelled: list[int] = []

    async def __call__(self, seconds: float) -> None:
        gate, index = asyncio.Event(), len(self.calls)
        self.calls.append((seconds, gate))
        try:
            await gate.wait()
        except asyncio.CancelledError:
            self.cancelled.append(index)
            raise

    def release(self, index: int) -> None:
        self.calls[index][1].set()


async def job_of(client: httpx.AsyncClient, url: str, headers: dict[str, str]) -> dict[str, Any]:
    response = await client.get(url, headers=headers)
    assert response.status_code == 200, response.text
    return dict(response.json())


async def test_a_short_job_writes_no_intermediate_stage_and_ends_at_100(
    client: httpx.AsyncClient, make_caller: MakeCaller, resources: Resources, monkeypatch: pytest.MonkeyPatch
) -> None:
    writes: list[tuple[str, int]] = []
    record_progress = job_records.record_progress

    async def counted(session_factory: Any, job_id: uuid.UUID, stage: str, progress: int, **kw: Any) -> None:
        writes.append((stage, progress))
        await record_progress(session_factory, job_id, stage, progress, **kw)

    monkeypatch.setattr(job_records, "record_progress", counted)
    caller = await make_caller()
    response = await upload(client, caller.headers, NOTES, filename="notes.txt")
    assert response.status_code == 202, response.text
    # An interval no job of one short page outlasts, however busy the machine.
    await run_jobs(resources, settings=resources.settings.model_copy(update={"job_progress_interval_s": 60}))

    job = await job_of(client, response.json()["status_url"], caller.headers)
    assert job["status"] == "succeeded" and job["progress"] == 100 and job["stage_page"] is None, job
    assert writes == []  # chunking, embedding (twice) and storing came within the claim's interval


async def test_a_client_polling_a_long_job_sees_the_stage_it_is_in(
    client: httpx.AsyncClient, make_caller: MakeCaller, resources: Resources
) -> None:
    caller = await make_caller()
    response = await upload(client, caller.headers, NOTES, filename="notes.txt")
    assert response.status_code == 202, response.text
    url = response.json()["status_url"]
    gated = GatedEmbedder(resources.embedder)
    worker = asyncio.create_task(run_jobs(resources, embedder=gated))
    try:
        await asyncio.wait_for(gated.embedding.wait(), timeout=60)

        async def shows_embedding() -> bool:
            job = await job_of(client, url, caller.headers)
            return job["status"] == "running" and job["stage"] == "embedding" and job["progress"] == 20

        await wait_for_async(shows_embedding, timeout=30, what="the job's embedding stage")
    finally:
        gated.release.set()
        await asyncio.wait_for(worker, timeout=120)
    job = await job_of(client, url, caller.headers)
    assert job["status"] == "succeeded" and job["progress"] == 100, job


async def test_changes_within_the_interval_wait_and_the_latest_is_written(
    client: httpx.AsyncClient, make_caller: MakeCaller, resources: Resources
) -> None:
    caller = await make_caller()
    response = await upload(client, caller.headers, NOTES, filename="notes.txt")
    url, job_id = response.json()["status_url"], uuid.UUID(response.json()["job_id"])
    clock, sleeps = SteppedClock(), HeldSleeps()
    reporter = ProgressReporter(
        resources.session_factory, job_id, interval_s=INTERVAL_S, clock=clock, sleep=sleeps
    )

    await reporter.record("chunking", 15)
    await reporter.record("embedding", 20)
    assert (await job_of(client, url, caller.headers))["progress"] == 0  # nothing written yet
    assert len(sleeps.calls) == 1 and 0 < sleeps.calls[0][0] <= INTERVAL_S

    sleeps.release(0)

    async def shows(stage: str, progress: int) -> bool:
        job = await job_of(client, url, caller.headers)
        return job["stage"] == stage and job["progress"] == progress

    await wait_for_async(lambda: shows("embedding", 20), timeout=10, what="the waiting write")

    clock.advance(INTERVAL_S)  # an interval after that write: the next one goes at once
    await reporter.record("embedding", 60)
    assert await shows("embedding", 60)
    assert len(sleeps.calls) == 1

    await reporter.record("storing", 95)  # within the interval again: waits ...
    await asyncio.sleep(0)
    assert len(sleeps.calls) == 2
    await reporter.close()  # ... and the job's end supersedes it: the waiting write is dropped
    assert sleeps.cancelled == [1]
    assert await shows("embedding", 60)


async def test_a_job_cancelled_while_its_progress_write_waits_on_a_lock_stays_cancelled(
    client: httpx.AsyncClient, make_caller: MakeCaller, resources: Resources
) -> None:
    caller = await make_caller()
    response = await upload(client, caller.headers, NOTES, filename="notes.txt")
    job_id = uuid.UUID(response.json()["job_id"])
    sleeps = HeldSleeps()
    reporter = ProgressReporter(
        resources.session_factory, job_id, interval_s=INTERVAL_S, clock=SteppedClock(), sleep=sleeps
    )
    await reporter.record("embedding", 20)

    async with resources.session_factory() as holder, holder.begin():
        # Another transaction holds the job's row, so the progress write, once under way, waits.
        await holder.execute(text("SELECT 1 FROM ingestion_jobs WHERE id = :id FOR UPDATE"), {"id": job_id})
        await asyncio.sleep(0)
        sleeps.release(0)

        async def write_waits() -> bool:
            async with resources.session_factory() as session:
                waiting = await session.execute(
                    text(
                        "SELECT count(*) FROM pg_stat_activity "
                        "WHERE datname = current_database() AND wait_event_type = 'Lock'"
                    )
                )
                return bool(waiting.scalar_one())

        await wait_for_async(write_waits, timeout=30, what="the progress write waiting on the row lock")
        closing = asyncio.create_task(reporter.close())  # what the job's end does
        await asyncio.sleep(0)  # it runs up to its wait for the write under way
        assert not closing.done()
        closing.cancel()  # the worker stops the job meanwhile
        with pytest.raises(asyncio.CancelledError):
            await closing
