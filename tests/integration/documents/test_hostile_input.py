"""Hostile input end to end: document limits at upload and in the worker, a poison document that
stops every worker, job errors that leak nothing, deleted documents for editors only."""

from __future__ import annotations

import logging
import uuid
from collections.abc import Sequence

import httpx
import pytest
from sqlalchemy import text

from app.auth.principal import Role
from app.db.models import Document, DocumentVersion, IngestionJob
from app.documents.ingestion import IngestionContext, _claim
from app.documents.queue import INGESTION_QUEUE
from app.resources import Resources
from app.settings import Settings
from tests.support.callers import MakeCaller
from tests.support.documents import (
    count_rows,
    make_pdf,
    make_raw_pdf,
    page_text,
    run_jobs,
    text_operators,
    upload,
)
from tests.support.embedders import CountingEmbedder

pytestmark = pytest.mark.integration

PAGES = [page_text(n) for n in range(1, 5)]
FAST_PAGE = b"BT /F1 12 Tf 72 720 Td (a quick page) Tj ET\n"


@pytest.fixture
def settings(settings: Settings) -> Settings:
    return settings.model_copy(
        update={"doc_max_pages": 5, "doc_max_chars": 20_000, "doc_page_parse_timeout_s": 2.0}
    )


# --- DOC_MAX_PAGES, DOC_MAX_CHARS, DOC_PAGE_PARSE_TIMEOUT_S -----------------------------------

OVER_LIMITS = {
    "too many pages": ("many.pdf", make_pdf([page_text(n) for n in range(1, 7)]), "too_many_pages"),
    "too much text": ("long.txt", b"word " * 5000, "document_too_large"),
    # ~600k text operators: tens of seconds of pypdf work on page 2 of a 30 KB file
    "slow page": ("slow.pdf", make_raw_pdf([FAST_PAGE, text_operators(600_000)]), "page_parse_timeout"),
}


@pytest.mark.parametrize("case", list(OVER_LIMITS), ids=list(OVER_LIMITS))
async def test_uploads_over_the_document_limits_are_refused_with_their_codes(
    case: str, client: httpx.AsyncClient, make_caller: MakeCaller, resources: Resources
) -> None:
    filename, data, code = OVER_LIMITS[case]
    caller = await make_caller()
    response = await upload(client, caller.headers, data, filename=filename)
    assert (response.status_code, response.json()["code"]) == (422, code), response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    assert any(name in response.json()["detail"] for name in ("DOC_MAX_PAGES", "DOC_MAX_CHARS", "DOC_PAGE"))
    for model in (Document, DocumentVersion, IngestionJob):
        assert await count_rows(resources, model) == 0


async def test_a_job_over_the_workers_limits_fails_with_its_code_and_is_not_retried(
    client: httpx.AsyncClient, make_caller: MakeCaller, resources: Resources
) -> None:
    caller = await make_caller()
    doc = (await upload(client, caller.headers, make_pdf(PAGES))).json()
    strict = resources.settings.model_copy(update={"doc_max_pages": 2})
    await resources.job_queue.run_worker(
        IngestionContext(resources.session_factory, resources.embedder, strict), burst=True
    )
    job = (await client.get(doc["status_url"], headers=caller.headers)).json()
    assert (job["status"], job["error_code"], job["attempts"]) == ("failed", "too_many_pages", 1)
    assert job["error"] == "the document has 4 pages (limit 2, DOC_MAX_PAGES)"


# --- poison documents -------------------------------------------------------------------------


async def stale_heartbeat(resources: Resources, worker_id: int) -> None:
    async with resources.session_factory() as session, session.begin():
        await session.execute(
            text(
                "UPDATE procrastinate_workers SET last_heartbeat = now() - interval '1 hour' WHERE id = :id"
            ),
            {"id": worker_id},
        )


async def queue_job_status(resources: Resources, job_id: str) -> str:
    async with resources.session_factory() as session:
        row = await session.execute(
            text("SELECT status FROM procrastinate_jobs WHERE args->>'job_id' = :job_id"), {"job_id": job_id}
        )
        return str(row.scalar_one())


async def test_a_document_that_stops_every_worker_fails_after_job_max_attempts_and_the_queue_moves_on(
    client: httpx.AsyncClient, make_caller: MakeCaller, resources: Resources
) -> None:
    poisoner = await make_caller(tenant="poisoner")
    bystander = await make_caller(tenant="bystander")
    poison = (await upload(client, poisoner.headers, make_pdf(PAGES), filename="poison.pdf")).json()
    queued_after = (
        await upload(client, bystander.headers, b"Plain text that ingests.", filename="a.txt")
    ).json()
    queue = resources.job_queue
    context = IngestionContext(resources.session_factory, resources.embedder, resources.settings)
    max_attempts = resources.settings.job_max_attempts
    assert max_attempts == 3

    for attempt in range(1, max_attempts + 1):
        # A worker takes the head of the FIFO queue (the poison document, every time), starts it
        # and dies (killed for memory): its heartbeat goes stale; a live worker's reaper runs.
        worker_id = await queue.app.job_manager.register_worker()
        taken = await queue.app.job_manager.fetch_job(queues=[INGESTION_QUEUE], worker_id=worker_id)
        assert taken is not None and taken.task_kwargs["job_id"] == poison["job_id"]
        assert await _claim(context, uuid.UUID(poison["job_id"])) is not None
        await stale_heartbeat(resources, worker_id)

        put_back = await queue.retry_stalled_jobs(context)

        job = (await client.get(poison["status_url"], headers=poisoner.headers)).json()
        assert job["attempts"] == attempt and job["error_code"] == "worker_stopped"
        if attempt < max_attempts:
            assert put_back == 1 and job["status"] == "queued"
            assert job["error"] == (
                f"the worker processing this document stopped (attempt {attempt} of 3); it will be retried"
            )
    assert put_back == 0
    assert job["status"] == "failed" and job["finished_at"] is not None
    assert job["error"] == (
        "the worker processing this document stopped during attempt 3 of 3 (JOB_MAX_ATTEMPTS); giving up"
    )
    assert await queue_job_status(resources, poison["job_id"]) == "failed"
    assert await queue.retry_stalled_jobs(context) == 0, "settled once"

    await run_jobs(resources)

    after = (await client.get(queued_after["status_url"], headers=bystander.headers)).json()
    assert after["status"] == "succeeded", after
    assert (await client.get(poison["status_url"], headers=poisoner.headers)).json()["status"] == "failed"
    versions = (
        await client.get(f"/api/v1/docs/{poison['document_id']}/versions", headers=poisoner.headers)
    ).json()
    assert [v["status"] for v in versions] == ["failed"]


async def test_a_stalled_job_that_already_succeeded_is_left_alone(
    client: httpx.AsyncClient, make_caller: MakeCaller, resources: Resources
) -> None:
    """The worker stored the result and died before telling the queue: nothing is rerun."""
    caller = await make_caller()
    doc = (await upload(client, caller.headers, b"Some notes.", filename="a.txt")).json()
    queue = resources.job_queue
    context = IngestionContext(resources.session_factory, resources.embedder, resources.settings)
    worker_id = await queue.app.job_manager.register_worker()
    assert await queue.app.job_manager.fetch_job(queues=[INGESTION_QUEUE], worker_id=worker_id)
    async with resources.session_factory() as session, session.begin():
        await session.execute(
            text("UPDATE ingestion_jobs SET status = 'succeeded', attempts = 1 WHERE id = :id"),
            {"id": doc["job_id"]},
        )
    await stale_heartbeat(resources, worker_id)
    assert await queue.retry_stalled_jobs(context) == 0
    job = (await client.get(doc["status_url"], headers=caller.headers)).json()
    assert (job["status"], job["error"]) == ("succeeded", None)
    async with resources.session_factory() as session:
        left = await session.execute(text("SELECT count(*) FROM procrastinate_jobs"))
        assert left.scalar_one() == 0, "finished like a successful run, nothing left to rerun"


# --- job errors leak nothing ------------------------------------------------------------------

RAW = 'could not connect to "/var/run/postgresql/.s.PGSQL.5432": SELECT embedding FROM chunks'


async def test_an_unexpected_failure_is_shown_generically_and_logged_in_full(
    client: httpx.AsyncClient,
    make_caller: MakeCaller,
    resources: Resources,
    counting_embedder: CountingEmbedder,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caller = await make_caller(role=Role.reader)
    editor = await make_caller()
    doc = (await upload(client, editor.headers, b"Notes to embed.", filename="a.txt")).json()

    async def broken(texts: Sequence[str]) -> list[list[float]]:
        raise RuntimeError(RAW)

    monkeypatch.setattr(counting_embedder, "embed_documents", broken)
    logging.getLogger().addHandler(caplog.handler)  # the app's logging setup replaced the root handlers
    try:
        await run_jobs(resources)
    finally:
        logging.getLogger().removeHandler(caplog.handler)

    response = await client.get(doc["status_url"], headers=caller.headers)
    job = response.json()
    assert job["error"] == f"ingestion failed; quote the job id {doc['job_id']} when reporting it"
    assert job["error_code"] == "ingestion_error"
    for internal in ("RuntimeError", "/var/run", "SELECT", "Traceback"):
        assert internal not in response.text
    logged = [
        record.msg
        for record in caplog.records
        if isinstance(record.msg, dict) and record.msg.get("event") == "ingestion_failed"
    ]
    assert logged and RAW in logged[0]["error"] and logged[0]["job_id"] == doc["job_id"]


async def test_stored_errors_that_show_internals_are_replaced_by_their_title(
    client: httpx.AsyncClient, make_caller: MakeCaller, resources: Resources
) -> None:
    """Rows written before errors were cleaned up still show nothing internal."""
    caller = await make_caller(role=Role.reader)
    editor = await make_caller()
    doc = (await upload(client, editor.headers, b"Notes.", filename="a.txt")).json()
    async with resources.session_factory() as session, session.begin():
        await session.execute(
            text(
                "UPDATE ingestion_jobs SET status = 'failed', error_code = 'corrupt_document', "
                "error = 'the PDF cannot be read (PdfReadError)' WHERE id = :id"
            ),
            {"id": doc["job_id"]},
        )
    job = (await client.get(doc["status_url"], headers=caller.headers)).json()
    assert (job["error_code"], job["error"]) == ("corrupt_document", "The document cannot be read")


# --- deleted documents ------------------------------------------------------------------------


async def test_only_editors_may_see_deleted_documents(
    client: httpx.AsyncClient, make_caller: MakeCaller
) -> None:
    editor = await make_caller(role=Role.editor)
    reader = await make_caller(role=Role.reader)
    doc = (await upload(client, editor.headers, b"Old policy.", filename="policy.txt")).json()
    assert (
        await client.delete(f"/api/v1/docs/{doc['document_id']}", headers=editor.headers)
    ).status_code == 204

    for url in (
        "/api/v1/docs?include_deleted=true",
        f"/api/v1/docs/{doc['document_id']}?include_deleted=true",
    ):
        refused = await client.get(url, headers=reader.headers)
        assert refused.status_code == 403, url
        assert refused.headers["content-type"].startswith("application/problem+json")
        body = refused.json()
        assert body["code"] == "forbidden" and "editor role" in body["detail"]

    assert (await client.get("/api/v1/docs", headers=reader.headers)).json()["total"] == 0
    assert (await client.get("/api/v1/docs?include_deleted=false", headers=reader.headers)).status_code == 200
    listed = (await client.get("/api/v1/docs?include_deleted=true", headers=editor.headers)).json()
    assert [item["id"] for item in listed["items"]] == [doc["document_id"]]
    detail = await client.get(
        f"/api/v1/docs/{doc['document_id']}?include_deleted=true", headers=editor.headers
    )
    assert detail.status_code == 200 and detail.json()["deleted_at"] is not None
