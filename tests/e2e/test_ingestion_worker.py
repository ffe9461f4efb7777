"""Ingestion workers as real processes: a worker SIGKILLed mid-job is replaced and the job
completes once, without duplicate chunks; a 200-page PDF stays under a stated memory bound."""

from __future__ import annotations

import contextlib
import os
import signal
import time
from pathlib import Path
from typing import Any

import httpx
import psutil
import psycopg
import pytest

from tests.support.callers import MakeCaller
from tests.support.documents import make_pdf, page_text
from tests.support.server import start_worker
from tests.support.services import libpq
from tests.support.waiting import wait_for

pytestmark = pytest.mark.e2e

# Peak RSS of one worker process and its PDF parser child (torch + the MiniLM model are ~0.5 GB).
WORKER_RSS_BOUND_MB = 1500


def job_row(database_url: str, job_id: str) -> dict[str, Any]:
    with psycopg.connect(libpq(database_url)) as conn:
        row = conn.execute(
            "SELECT status, stage, progress, attempts, started_at, finished_at "
            "FROM ingestion_jobs WHERE id = %s",
            (job_id,),
        ).fetchone()
    assert row is not None
    keys = ("status", "stage", "progress", "attempts", "started_at", "finished_at")
    return dict(zip(keys, row, strict=True))


def chunk_stats(database_url: str, document_id: str) -> tuple[int, int]:
    with psycopg.connect(libpq(database_url)) as conn:
        row = conn.execute(
            "SELECT count(*), count(DISTINCT (page, position, valid_from_version)) "
            "FROM chunks WHERE document_id = %s",
            (document_id,),
        ).fetchone()
    assert row is not None
    return int(row[0]), int(row[1])


def tree_rss(process: psutil.Process) -> int:
    """The worker's resident memory plus its children's (PDFs are parsed in a child process)."""
    total = process.memory_info().rss
    for child in process.children(recursive=True):
        with contextlib.suppress(psutil.NoSuchProcess):
            total += child.memory_info().rss
    return total


async def test_a_worker_killed_mid_job_is_replaced_and_the_job_completes_without_duplicates(
    client: httpx.AsyncClient, make_caller: MakeCaller, clean_database: str, tmp_path: Path
) -> None:
    caller = await make_caller()
    pdf = make_pdf([page_text(n, sentences=20) for n in range(1, 121)])
    files = {"file": ("big.pdf", pdf, "application/pdf")}
    body = (await client.post("/api/v1/docs", files=files, headers=caller.headers)).json()
    job_id = body["job_id"]

    first = start_worker(clean_database, tmp_path / "worker1.log", EMBEDDING_BATCH_SIZE="4")
    try:
        wait_for(lambda: job_row(clean_database, job_id)["stage"] == "embedding", timeout=120)
    finally:
        os.killpg(first.pid, signal.SIGKILL)
        first.wait()
    killed = job_row(clean_database, job_id)
    assert killed["status"] == "running" and killed["progress"] < 100
    assert chunk_stats(clean_database, body["document_id"]) == (0, 0), "nothing stored before the kill"

    second = start_worker(clean_database, tmp_path / "worker2.log", EMBEDDING_BATCH_SIZE="32")
    try:
        wait_for(
            lambda: job_row(clean_database, job_id)["status"] in {"succeeded", "failed"},
            timeout=180,
            interval=0.2,
        )
    finally:
        os.killpg(second.pid, signal.SIGTERM)
        second.wait(timeout=30)
    done = job_row(clean_database, job_id)
    assert done["status"] == "succeeded", (tmp_path / "worker2.log").read_text()[-3000:]
    assert done["attempts"] == 2
    total, distinct = chunk_stats(clean_database, body["document_id"])
    assert total == distinct > 120
    detail = (await client.get(f"/api/v1/docs/{body['document_id']}", headers=caller.headers)).json()
    assert detail["chunk_count"] == total and detail["page_count"] == 120


async def test_a_200_page_pdf_ingests_under_the_memory_bound(
    client: httpx.AsyncClient, make_caller: MakeCaller, clean_database: str, tmp_path: Path
) -> None:
    caller = await make_caller()
    pdf = make_pdf([page_text(n, sentences=14) for n in range(1, 201)])
    files = {"file": ("handbook.pdf", pdf, "application/pdf")}
    body = (await client.post("/api/v1/docs", files=files, headers=caller.headers)).json()

    worker = start_worker(clean_database, tmp_path / "worker.log", "--burst")
    process = psutil.Process(worker.pid)
    peak = 0
    while worker.poll() is None:
        try:
            peak = max(peak, tree_rss(process))
        except psutil.NoSuchProcess:
            break
        time.sleep(0.05)
    assert worker.returncode == 0, (tmp_path / "worker.log").read_text()[-3000:]
    job = job_row(clean_database, body["job_id"])
    assert job["status"] == "succeeded"
    total, _ = chunk_stats(clean_database, body["document_id"])
    seconds = (job["finished_at"] - job["started_at"]).total_seconds()
    peak_mb = peak / 2**20
    print(
        f"\n200-page PDF: {total} chunks in {seconds:.1f}s ({200 / seconds:.1f} pages/s, "
        f"{total / seconds:.1f} chunks/s), worker peak RSS {peak_mb:.0f} MB"
    )
    assert peak_mb < WORKER_RSS_BOUND_MB
