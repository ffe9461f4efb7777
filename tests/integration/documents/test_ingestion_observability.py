"""What operators see of ingestion: its metrics on /metrics and log lines that lead back to the upload."""

from __future__ import annotations

import asyncio
import contextvars
import re
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from app.observability.logging import configure_logging
from app.resources import Resources
from app.settings import Settings
from tests.support.callers import MakeCaller
from tests.support.documents import make_pdf, page_text, run_jobs, upload
from tests.support.embedders import GatedEmbedder
from tests.support.logs import read_json_lines

pytestmark = [pytest.mark.integration, pytest.mark.metrics]

NOTES = b"Backups run nightly at two. Restores are tested every month on a spare server."


@pytest.fixture
def settings(settings: Settings, tmp_path: Path) -> Iterator[Settings]:
    yield settings.model_copy(update={"log_to_file": tmp_path / "logs"})
    configure_logging(settings)  # close this test's log file


def sample(text: str, name: str, **labels: str) -> float:
    for line in text.splitlines():
        match = re.match(rf"^{name}\{{(.*)\}} (\S+)$", line)
        if match and all(f'{key}="{value}"' in match.group(1) for key, value in labels.items()):
            return float(match.group(2))
    raise AssertionError(f"no sample {name}{labels}")


async def test_ingestion_jobs_duration_and_queue_depth_move_on_metrics(
    client: httpx.AsyncClient, make_caller: MakeCaller, resources: Resources
) -> None:
    caller = await make_caller()
    for name in ("backups.txt", "restores.txt"):
        response = await upload(client, caller.headers, NOTES + name.encode(), filename=name)
        assert response.status_code == 202, response.text
    gated = GatedEmbedder(resources.embedder)
    worker = asyncio.create_task(run_jobs(resources, embedder=gated))
    await asyncio.wait_for(gated.embedding.wait(), timeout=60)

    during = (await client.get("/metrics")).text
    assert sample(during, "ingestion_queue_depth", state="queued") == 1
    assert sample(during, "ingestion_queue_depth", state="running") == 1
    gated.release.set()
    await asyncio.wait_for(worker, timeout=120)

    after = (await client.get("/metrics")).text
    assert sample(after, "ingestion_queue_depth", state="queued") == 0
    assert sample(after, "ingestion_queue_depth", state="running") == 0
    assert sample(after, "ingestion_jobs_total", outcome="succeeded") == 2
    assert sample(after, "ingestion_job_duration_seconds_count", outcome="succeeded") == 2
    assert sample(after, "ingestion_job_duration_seconds_sum", outcome="succeeded") > 0

    too_long = await upload(client, caller.headers, make_pdf([page_text(n) for n in range(1, 4)]))
    assert too_long.status_code == 202, too_long.text
    await run_jobs(resources, settings=resources.settings.model_copy(update={"doc_max_pages": 2}))
    failed = (await client.get("/metrics")).text
    assert sample(failed, "ingestion_jobs_total", outcome="failed") == 1
    assert sample(failed, "ingestion_jobs_total", outcome="succeeded") == 2


async def test_ingestion_log_lines_carry_the_request_and_trace_id_of_the_upload(
    client: httpx.AsyncClient, make_caller: MakeCaller, resources: Resources, settings: Settings
) -> None:
    caller = await make_caller()
    response = await upload(
        client, {**caller.headers, "X-Request-ID": "upload-req-7"}, NOTES, filename="notes.txt"
    )
    assert response.status_code == 202, response.text
    job_id, trace_id = response.json()["job_id"], response.headers["X-Trace-ID"]

    # A worker serves no request: run it in a context of its own, as a worker process would.
    await asyncio.create_task(run_jobs(resources), context=contextvars.Context())

    assert settings.log_to_file is not None
    lines = [line for line in read_json_lines(settings.log_to_file) if line.get("job_id") == job_id]
    assert "ingestion_succeeded" in {line["event"] for line in lines}
    assert {(line.get("request_id"), line.get("trace_id")) for line in lines} == {("upload-req-7", trace_id)}
