"""Scale-out on one machine: what `docker compose up --scale api=3 --scale worker=4` or the
Kubernetes Deployments run, as processes. Three API servers (`python -m app serve`, no in-process
worker) and two ingestion workers (`python -m app worker`) share ONE PostgreSQL and ONE Redis, and
behave as one service: one rate-limit budget, one router state, one answer cache that a document
edit through any API invalidates for all, and ingestion done by the workers only.

One cluster serves the whole module (starting five processes is most of the run time); each test
uses its own API key and its own question, so none depends on another's traffic."""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import signal
import subprocess
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest

from tests.fakes.fake_llm_server import FakeLLMServer
from tests.support.server import (
    ServerProcess,
    create_api_key,
    fake_router_env,
    start_server,
    start_worker,
    upload_and_wait,
)
from tests.support.services import PostgresForTests, RedisForTests, libpq
from tests.support.waiting import wait_for

pytestmark = pytest.mark.e2e

API_COUNT = 3
WORKER_COUNT = 2
# Chat requests per API key and hour, for the whole cluster. Every test stays under it with its
# own key except the one that exhausts it.
CHAT_LIMIT = 10

DOCUMENTS = {
    "archive.md": "# Archive\n\nThe archive floor is the basement, behind the loading dock.",
    "backups.md": "# Backups\n\nBackups are taken nightly at 02:00 and kept for thirty days.",
    "badges.md": "# Badges\n\nVisitor badges are collected at the front desk on the ground floor.",
}


@dataclass
class Cluster:
    apis: list[ServerProcess]
    workers: list[subprocess.Popen[bytes]]
    worker_logs: list[Path]
    fake: FakeLLMServer
    database_url: str
    admin: dict[str, str]
    uploads: dict[str, dict[str, Any]]  # file name → the upload's 202 body

    def issue_key(self, role: str = "editor") -> dict[str, str]:
        response = httpx.post(
            self.apis[0].base_url + "/api/v1/keys",
            json={"role": role, "name": f"scale-{secrets.token_hex(3)}"},
            headers=self.admin,
            timeout=10,
        )
        assert response.status_code == 201, response.text
        return {"X-API-Key": response.json()["key"]}


@pytest.fixture(scope="module")
def database_url(postgres_server: PostgresForTests, worker_name: str) -> str:
    """The module's own database: the cluster outlives each test's truncation of the shared one."""
    return postgres_server.create_database(f"ragchat_test_scale_{worker_name}_{os.getpid()}")


@pytest.fixture(scope="module")
def cluster_prefix(redis_server: RedisForTests, worker_name: str) -> Iterator[str]:
    prefix = f"test:{worker_name}:scale:{secrets.token_hex(4)}:"
    yield prefix
    redis_server.delete_prefixed(prefix)


def stop_worker(worker: subprocess.Popen[bytes]) -> None:
    if worker.poll() is None:
        os.killpg(worker.pid, signal.SIGTERM)
    try:
        worker.wait(timeout=30)
    except subprocess.TimeoutExpired:
        os.killpg(worker.pid, signal.SIGKILL)
        worker.wait()


@pytest.fixture(scope="module")
def cluster(
    database_url: str,
    redis_server: RedisForTests,
    cluster_prefix: str,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Cluster]:
    logs = tmp_path_factory.mktemp("scale-out")
    with contextlib.ExitStack() as stack:
        fake = FakeLLMServer().start()
        stack.callback(fake.stop)
        env = {
            "DATABASE_URL": database_url,
            "REDIS_URL": redis_server.url,  # the answer cache shares it (no CACHE_REDIS_URL)
            "REDIS_KEY_PREFIX": cluster_prefix,
            "LOG_JSON": "true",
            "RUN_WORKER_IN_PROCESS": "false",  # what compose and Kubernetes set: workers ingest
            "RATE_LIMIT_PER_PRINCIPAL": f"{CHAT_LIMIT}/hour",
            "RATE_LIMIT_PER_IP": "100000/minute",  # every test request comes from 127.0.0.1
            **fake_router_env(fake, cooldown_s=600, providers=("gemini", "openai")),
        }
        workers = []
        for n in range(1, WORKER_COUNT + 1):
            log = logs / f"worker-{n}.log"
            worker = start_worker(
                database_url,
                log,
                "--name",
                f"worker-{n}",
                **env,
                DATA_DIR=str(logs / f"worker-{n}"),
                WORKER_HEARTBEAT_S="5",
                WORKER_STALLED_AFTER_S="30",
            )
            stack.callback(stop_worker, worker)
            workers.append(worker)
        # Five processes importing the app on two cores: start the servers side by side.
        with ThreadPoolExecutor(max_workers=API_COUNT + 1) as pool:
            starting = [
                pool.submit(
                    start_server,
                    {**env, "DATA_DIR": str(logs / f"api-{n}")},
                    logs / f"api-{n}.log",
                    workers=1,
                    ready_path="/readyz",
                )
                for n in range(1, API_COUNT + 1)
            ]
            cli_env = {**env, "DATA_DIR": str(logs / "cli")}
            admin_key = pool.submit(create_api_key, cli_env, tenant="acme", role="admin")
        apis = _started(stack, starting)
        admin = {"X-API-Key": admin_key.result()}
        worker_logs = [logs / f"worker-{n}.log" for n in range(1, WORKER_COUNT + 1)]
        wait_for(
            lambda: all("worker ready" in log.read_text(errors="replace") for log in worker_logs),
            timeout=120,
            interval=0.2,
            what="both workers to load their model",
        )
        # One upload through each API, all at once, so both workers can take jobs.
        with ThreadPoolExecutor(max_workers=len(DOCUMENTS)) as pool:
            uploading = {
                name: pool.submit(upload_and_wait, api.base_url, admin, text, filename=name)
                for api, (name, text) in zip(apis, DOCUMENTS.items(), strict=True)
            }
        uploads = {name: future.result() for name, future in uploading.items()}
        yield Cluster(apis, workers, worker_logs, fake, database_url, admin, uploads)
        # Side by side here too; the stack's stops are then no-ops (or clean up after a failure).
        stops = [*(api.stop for api in apis), *(partial(stop_worker, worker) for worker in workers)]
        with ThreadPoolExecutor(max_workers=len(stops)) as pool:
            list(pool.map(lambda stop: stop(), stops))


def _started(stack: contextlib.ExitStack, starting: list[Future[ServerProcess]]) -> list[ServerProcess]:
    """The servers that started, each stopped by ``stack``; then the first failure, if any."""
    servers, failures = [], []
    for future in starting:
        try:
            server = future.result()
        except Exception as exc:
            failures.append(exc)
            continue
        stack.callback(server.stop)
        servers.append(server)
    if failures:
        raise failures[0]
    return servers


def json_records(text: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in text.splitlines() if line.startswith("{")]


def ask(api: ServerProcess, headers: dict[str, str], question: str) -> httpx.Response:
    return httpx.post(
        api.base_url + "/api/v1/chat",
        json={"question": question, "mode": "text"},  # full-text retrieval: no model in the APIs
        headers=headers,
        timeout=30,
    )


def answer(api: ServerProcess, headers: dict[str, str], question: str) -> dict[str, Any]:
    response = ask(api, headers, question)
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def cites(api: ServerProcess, headers: dict[str, str], question: str, title: str) -> bool:
    return bool(answer(api, headers, question)["sources"][0]["title"] == title)


def test_ingestion_is_done_by_the_worker_processes_not_by_the_apis(cluster: Cluster) -> None:
    worker_records = [json_records(log.read_text(errors="replace")) for log in cluster.worker_logs]
    for name, upload in cluster.uploads.items():
        done_by = [
            (worker.pid, record["pid"])
            for worker, records in zip(cluster.workers, worker_records, strict=True)
            for record in records
            if record.get("event") == "ingestion_succeeded" and record.get("job_id") == upload["job_id"]
        ]
        assert len(done_by) == 1, f"{name}: ingested by {done_by}"
        worker_pid, logged_pid = done_by[0]
        assert logged_pid == worker_pid  # the worker process itself, not a child or an API
    for api in cluster.apis:
        events = [str(record.get("event")) for record in json_records(api.log())]
        assert any(event.startswith("Deferred") for event in events)  # the APIs only enqueue
        ran = [event for event in events if event.startswith(("Starting job", "ingestion_"))]
        assert not ran, f"{api.base_url} ran jobs: {ran}"
    with psycopg.connect(libpq(cluster.database_url)) as conn:
        row = conn.execute("SELECT count(*) FROM procrastinate_workers").fetchone()
    assert row is not None
    assert row[0] == WORKER_COUNT  # an API running a worker in-process would register one too


def test_a_rate_limit_is_one_budget_across_the_three_apis(cluster: Cluster) -> None:
    headers = cluster.issue_key()
    statuses = []
    for n in range(API_COUNT * CHAT_LIMIT):
        response = ask(cluster.apis[n % API_COUNT], headers, "Where are visitor badges collected?")
        statuses.append(response.status_code)
        if response.status_code == 429:
            assert response.json()["code"] == "rate_limited"
            assert int(response.headers["Retry-After"]) > 0
    assert statuses.count(200) == CHAT_LIMIT, statuses  # not CHAT_LIMIT per API
    assert statuses == [200] * CHAT_LIMIT + [429] * (API_COUNT - 1) * CHAT_LIMIT


def provider_state(api: ServerProcess, headers: dict[str, str], name: str) -> dict[str, Any]:
    response = httpx.get(api.base_url + "/api/v1/providers", headers=headers, timeout=10)
    assert response.status_code == 200, response.text
    state: dict[str, Any] = {p["name"]: p for p in response.json()["providers"]}[name]
    return state


def test_a_cooldown_set_through_one_api_is_seen_by_the_others(cluster: Cluster) -> None:
    headers = cluster.issue_key()
    first, *others = cluster.apis
    cluster.fake.configure("gemini", mode="error", status=503)
    try:
        assert answer(first, headers, "When are backups taken?")["provider"] == "openai"
    finally:
        cluster.fake.configure("gemini", mode="ok")
    gemini_calls = cluster.fake.stats()["gemini"]["chat_requests"]

    for api in cluster.apis:
        gemini = provider_state(api, cluster.admin, "gemini")
        assert gemini["state"] == "cooling_down" and not gemini["healthy"], gemini
        assert gemini["last_error_code"] == "server_error"
    # Gemini answers again, but the other APIs keep to the cooldown they read from Redis.
    for n, api in enumerate(others):
        assert answer(api, headers, f"How long are backups kept? ({n})")["provider"] == "openai"
    assert cluster.fake.stats()["gemini"]["chat_requests"] == gemini_calls


def test_a_document_edit_through_one_api_invalidates_cached_answers_on_all_three_within_a_second(
    cluster: Cluster,
) -> None:
    headers = cluster.issue_key()
    question = "Which floor hosts the archive?"
    first = answer(cluster.apis[0], headers, question)
    assert first["cached"] is False and first["sources"][0]["title"] == "archive.md"
    for api in cluster.apis:
        cached = answer(api, headers, question)
        assert cached["cached"] is True and cached["sources"][0]["title"] == "archive.md"

    document_id = cluster.uploads["archive.md"]["document_id"]
    patched = httpx.patch(
        f"{cluster.apis[-1].base_url}/api/v1/docs/{document_id}",
        json={"title": "Archive (moved to floor -2)"},
        headers=headers,
        timeout=10,
    )
    assert patched.status_code == 200, patched.text

    for n, api in enumerate(cluster.apis, start=1):
        # The cache key holds the tenant's corpus version, bumped in the edit's transaction.
        wait_for(
            partial(cites, api, headers, question, "Archive (moved to floor -2)"),
            timeout=1.0,
            interval=0.05,
            what=f"API {n} to stop serving the answer cached before the edit",
        )
