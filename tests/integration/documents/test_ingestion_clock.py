"""Every time an ingestion job records is read from the worker's clock (``IngestionContext.clock``),
so a worker whose clock is fixed writes that time, whatever the wall clock says."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest

from app.documents.ingestion import IngestionContext
from app.documents.job_records import record_worker_stopped
from app.resources import Resources
from app.settings import Settings
from tests.support.callers import Caller, MakeCaller
from tests.support.documents import make_pdf, page_text, upload

pytestmark = [pytest.mark.integration, pytest.mark.pgvector]

NOW = datetime(2001, 2, 3, 4, 5, 6, tzinfo=UTC)


async def run_jobs_at(resources: Resources, now: datetime, settings: Settings | None = None) -> None:
    context = IngestionContext(
        resources.session_factory, resources.embedder, settings or resources.settings, clock=lambda: now
    )
    await resources.job_queue.run_worker(context, burst=True)


async def job_of(client: httpx.AsyncClient, caller: Caller, accepted: httpx.Response) -> dict[str, Any]:
    body: dict[str, Any] = (await client.get(accepted.json()["status_url"], headers=caller.headers)).json()
    return body


def at(value: str | None) -> datetime | None:
    return None if value is None else datetime.fromisoformat(value)


async def test_a_stored_version_records_the_start_and_end_the_worker_clock_gives(
    client: httpx.AsyncClient, make_caller: MakeCaller, resources: Resources
) -> None:
    caller = await make_caller()
    accepted = await upload(client, caller.headers, make_pdf([page_text(1), page_text(2)]))
    assert accepted.status_code == 202, accepted.text

    await run_jobs_at(resources, NOW)

    job = await job_of(client, caller, accepted)
    assert job["status"] == "succeeded", job
    assert at(job["started_at"]) == NOW and at(job["finished_at"]) == NOW


async def test_a_document_the_worker_refuses_records_its_end_at_the_worker_clock(
    client: httpx.AsyncClient, make_caller: MakeCaller, resources: Resources
) -> None:
    caller = await make_caller()
    accepted = await upload(client, caller.headers, make_pdf([page_text(n) for n in range(1, 4)]))
    assert accepted.status_code == 202, accepted.text

    await run_jobs_at(resources, NOW, resources.settings.model_copy(update={"doc_max_pages": 2}))

    job = await job_of(client, caller, accepted)
    assert (job["status"], job["error_code"]) == ("failed", "too_many_pages"), job
    assert at(job["started_at"]) == NOW and at(job["finished_at"]) == NOW


async def test_the_reaper_records_a_stopped_worker_at_the_time_it_is_given(
    client: httpx.AsyncClient, make_caller: MakeCaller, resources: Resources
) -> None:
    caller = await make_caller()
    accepted = await upload(client, caller.headers, make_pdf([page_text(1)]))
    job_id = uuid.UUID(accepted.json()["job_id"])

    async with resources.session_factory() as session, session.begin():
        recorded = await record_worker_stopped(
            session, job_id, attempt=1, max_attempts=1, final=True, now=NOW
        )

    assert recorded
    job = await job_of(client, caller, accepted)
    assert job["status"] == "failed" and job["error_code"] == "worker_stopped", job
    assert at(job["finished_at"]) == NOW
