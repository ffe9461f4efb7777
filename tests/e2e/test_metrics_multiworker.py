from __future__ import annotations

import re
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import psutil
import pytest
from prometheus_client.multiprocess import MultiProcessCollector

from tests.support.server import ServerProcess, create_api_key

pytestmark = [pytest.mark.e2e, pytest.mark.metrics]

BATCH = 30
MAX_BATCHES = 40


def healthz_total(text: str) -> float:
    pattern = re.compile(
        r'^http_requests_total\{(?=[^}]*handler="/healthz")(?=[^}]*status="2xx")[^}]*\} (\S+)$'
    )
    return sum(float(m.group(1)) for line in text.splitlines() if (m := pattern.match(line)))


def worker_pids(server: ServerProcess) -> set[int]:
    master = next(
        p
        for p in psutil.Process(server.process.pid).children(recursive=True)
        if "gunicorn" in " ".join(p.cmdline())
    )
    return {child.pid for child in master.children()}


def worker_sample(file: Path, name: str, **labels: str) -> float:
    """One worker's value of a sample, from its own multiprocess file (0 before its first)."""
    for metric in MultiProcessCollector.merge([str(file)], accumulate=True):
        for sample in metric.samples:
            if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                return float(sample.value)
    return 0.0


def test_metrics_aggregates_requests_served_by_both_workers(served: ServerProcess) -> None:
    before = healthz_total(httpx.get(served.base_url + "/metrics", timeout=10).text)
    pids = worker_pids(served)
    assert len(pids) == 2
    directory = Path(psutil.Process(next(iter(pids))).environ()["PROMETHEUS_MULTIPROC_DIR"])

    def call(_: int) -> int:
        # A fresh connection per request, so either of gunicorn's workers may accept it.
        return httpx.get(served.base_url + "/healthz", timeout=10).status_code

    # Which worker accepts a connection is the kernel's choice: on a busy machine one worker
    # can take a whole batch. Send batches until both have served (the aggregation is what
    # this test checks, not the balance).
    sent = 0
    per_worker: dict[int, float] = {}
    with ThreadPoolExecutor(max_workers=12) as pool:
        for _ in range(MAX_BATCHES):
            assert set(pool.map(call, range(BATCH))) == {200}
            sent += BATCH
            per_worker = {
                pid: worker_sample(directory / f"counter_{pid}.db", "http_requests_total", handler="/healthz")
                for pid in pids
            }
            if all(count > 0 for count in per_worker.values()):
                break
    assert all(count > 0 for count in per_worker.values()), per_worker  # both workers served

    # Every scrape, whichever worker answers it, reports the sum over all workers.
    for _ in range(6):
        text = httpx.get(served.base_url + "/metrics", timeout=10).text
        assert healthz_total(text) == before + sent
    assert sum(per_worker.values()) == before + sent

    # Domain families are exposed in multiprocess mode before their first sample.
    assert "# TYPE vector_search_duration_seconds histogram" in text
    assert 'vector_search_duration_seconds_count{mode="hybrid"} 0.0' in text
    assert "# TYPE vector_search_requests_total counter" in text


CHAT_BATCH = 10
MAX_CHAT_BATCHES = 10


def search_count(text: str, mode: str) -> float:
    pattern = re.compile(rf'^vector_search_duration_seconds_count\{{mode="{mode}"\}} (\S+)$')
    return sum(float(m.group(1)) for line in text.splitlines() if (m := pattern.match(line)))


def test_vector_search_latency_is_counted_across_both_workers(served: ServerProcess) -> None:
    headers = {"X-API-Key": create_api_key(served.env, role="reader")}
    before = search_count(httpx.get(served.base_url + "/metrics", timeout=10).text, "text")
    pids = worker_pids(served)
    directory = Path(psutil.Process(next(iter(pids))).environ()["PROMETHEUS_MULTIPROC_DIR"])

    def chat(n: int) -> int:
        body = {"question": f"What is in document number {n}?", "mode": "text"}
        return httpx.post(
            served.base_url + "/api/v1/chat", json=body, headers=headers, timeout=30
        ).status_code

    # As above: batches until both workers have searched, whichever the kernel gave them to.
    sent = 0
    per_worker: dict[int, float] = {}
    with ThreadPoolExecutor(max_workers=6) as pool:
        for _ in range(MAX_CHAT_BATCHES):
            assert set(pool.map(chat, range(sent, sent + CHAT_BATCH))) == {200}
            sent += CHAT_BATCH
            per_worker = {
                pid: worker_sample(
                    directory / f"histogram_{pid}.db", "vector_search_duration_seconds_count", mode="text"
                )
                for pid in pids
            }
            if all(count > 0 for count in per_worker.values()):
                break
    assert len(per_worker) == 2 and all(count > 0 for count in per_worker.values()), per_worker
    text = httpx.get(served.base_url + "/metrics", timeout=10).text
    assert search_count(text, "text") == before + sent
