"""A failed ingestion job in the demo: its readable error where the progress bar stopped.

A job fails for real here: the API accepts a two-page PDF (its own DOC_MAX_PAGES is the default),
and the only ingestion worker, a separate `python -m app worker` whose operator set
DOC_MAX_PAGES=1, refuses it, as after a limit was lowered on the workers alone."""

from __future__ import annotations

import os
import signal
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.demo.conftest import MakeDemo
from tests.fakes.fake_llm_server import FakeLLMServer
from tests.support.demo import DemoApi, running_demo_api
from tests.support.documents import make_pdf
from tests.support.server import start_worker
from tests.support.services import RedisForTests
from tests.support.waiting import wait_for

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def demo_api(
    database_url: str,
    redis_server: RedisForTests,
    fake_llm_server: FakeLLMServer,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[DemoApi]:
    workdir = tmp_path_factory.mktemp("demo-api-strict-worker")
    with running_demo_api(
        database_url, redis_server.url, fake_llm_server, workdir, RUN_WORKER_IN_PROCESS="false"
    ) as api:
        log = workdir / "worker.log"
        worker = start_worker(database_url, log, DOC_MAX_PAGES="1", EMBEDDING_WARM_UP="false")
        try:
            wait_for(lambda: "worker ready" in log.read_text(), timeout=120, what="the strict worker")
            yield api
        finally:
            os.killpg(worker.pid, signal.SIGTERM)
            worker.wait(timeout=60)


def test_a_failed_job_shows_its_readable_error(make_demo: MakeDemo, tmp_path: Path) -> None:
    at = make_demo()
    at.run()
    at.radio[0].set_value(at.radio[0].options[1]).run()  # Documents
    at.get("file_uploader")[0].upload("two-pages.pdf", make_pdf(["First page.", "Second page."]))
    at.run()
    at.button(key="process_new").click().run()
    assert not at.exception
    (failed,) = at.error
    assert failed.value == (
        "Ingestion failed: the document has 2 pages (limit 1, DOC_MAX_PAGES) (too_many_pages)"
    )
    at.run()
    assert any(":red-badge[failed]" in markdown.value for markdown in at.markdown)
