"""`make chaos`, the rows of issue 33: a Sentinel-managed Redis and a PostgreSQL read replica.

A second environment beside the one of ``scripts/chaos.py`` (same service, worker, fake LLM and
load), with the stores the tests use (``tests/support``): a dedicated PostgreSQL primary and a
streaming standby (``pg_basebackup -R``) named in ``DATABASE_REPLICA_URLS``, and a Redis master,
a replica and three sentinels named in ``REDIS_URL=redis+sentinel://…``. The load's chat questions
are all different (never the answer cache: every chat request runs retrieval), and
``pg_stat_statements`` on both servers counts the search statements each one ran.

5. Redis master SIGKILL: Sentinel promotes the replica, requests keep succeeding (limits fail
   open), the limits come back on the new master without a restart (load responses carry the
   rate-limit headers again, and a fresh key is refused 429 after its upload budget).
6. Read replica stopped (fast shutdown), started again 3 s later: retrieval falls back to the
   primary with 0 errors, and the replica serves again once it is back.
7. Read replica lagging (replay paused while writes continue on the primary): once it is more
   than ``REPLICA_MAX_LAG_S`` behind it serves no search at all, until replay resumes.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from contextlib import ExitStack
from typing import Any

import httpx

from app.db.migrations import upgrade_to_head
from scripts.chaos import DOWN_S, RECOVERY_TIMEOUT_S, Chaos, Load, Result, Sample, say, wait_until
from tests.support.replication import Cluster, ReplicatedPostgres, replicated_postgres
from tests.support.sentinel import SentinelRedis, sentinel_redis
from tests.support.server import create_api_key

DATABASE = "ragchat"
MAX_LAG_S = 2.0
CHECK_INTERVAL_S = 0.5
PROBE_UPLOADS = 3  # RATE_LIMIT_UPLOADS per hour: a fresh key's 4th upload is refused
STATEMENTS_CONF = "shared_preload_libraries = 'pg_stat_statements'\n"
# Both search statements (vector and BM25) of app.rag.repository read chunks joined this way.
RETRIEVAL_SQL = "FROM chunks c JOIN documents d"
LAG_DOC = b"# Lagging replica\n\nThis note was written while the replica's replay was paused.\n"


def retrieval_statements(cluster: Cluster) -> int:
    """Search statements ``cluster`` has run (``pg_stat_statements``; the health checks excluded)."""
    calls = cluster.query(
        f"SELECT coalesce(sum(calls), 0) FROM pg_stat_statements WHERE query LIKE '%{RETRIEVAL_SQL}%'",
        DATABASE,
    )
    return int(str(calls))


def limits_resumed(samples: list[Sample], since: float) -> Sample | None:
    """The first response carrying rate-limit headers after the first one without them (the
    limiter failing open), both after ``since``; None while the limits have not come back."""
    gap = next((n for n, s in enumerate(samples) if s.at >= since and s.status and not s.limited), None)
    if gap is None:
        return None
    return next((s for s in samples[gap:] if s.limited), None)


class HAChaos(Chaos):
    unique_questions = True

    def __init__(self, root: Any, interval_s: float) -> None:
        super().__init__(root, interval_s)
        self._stack = ExitStack()
        self.pg: ReplicatedPostgres | None = None
        self.sentinels: SentinelRedis | None = None

    def start_stores(self) -> tuple[str, str]:
        say("starting a PostgreSQL primary + streaming replica, a Redis master + replica + 3 sentinels …")
        self.pg = self._stack.enter_context(replicated_postgres(self.root / "pg", DATABASE, STATEMENTS_CONF))
        database_url = self.pg.primary.url(DATABASE)
        upgrade_to_head(database_url)
        self.pg.primary.query("CREATE EXTENSION IF NOT EXISTS pg_stat_statements", DATABASE)
        self.sentinels = self._stack.enter_context(sentinel_redis(self.root / "redis"))
        return database_url, self.sentinels.url

    def extra_env(self) -> dict[str, str]:
        assert self.pg is not None
        return {
            "DATABASE_REPLICA_URLS": self.pg.replica.url(DATABASE),
            "REPLICA_MAX_LAG_S": str(MAX_LAG_S),
            "REPLICA_CHECK_INTERVAL_S": str(CHECK_INTERVAL_S),
            "RATE_LIMIT_PER_TENANT": "100000/minute",
            "RATE_LIMIT_UPLOADS": f"{PROBE_UPLOADS}/hour",
        }

    def stop(self) -> None:
        super().stop()
        self._stack.close()

    def replica_target(self) -> dict[str, Any] | None:
        """The replica's entry on ``/readyz`` (healthy, lag_s, queries, error)."""
        try:
            body = httpx.get(self.base_url + "/readyz", timeout=5).json()
        except (httpx.HTTPError, ValueError):
            return None
        targets = body.get("checks", {}).get("read_replicas", {}).get("targets", [])
        return next((dict(t) for t in targets if str(t["target"]).startswith("replica-")), None)

    def probe_uploads(self) -> list[int]:
        """A fresh key (its own tenant) uploads one more document than its budget allows."""
        headers = {"X-API-Key": create_api_key(self.env, tenant="probe", role="editor")}
        statuses = []
        for n in range(PROBE_UPLOADS + 1):
            response = httpx.post(
                self.base_url + "/api/v1/docs",
                files={"file": (f"probe-{n}.md", f"# Probe {n}\n\nProbe note {n}.".encode())},
                headers=headers,
                timeout=60,
            )
            statuses.append(response.status_code)
        return statuses


def ha(chaos: Chaos) -> HAChaos:
    assert isinstance(chaos, HAChaos)
    return chaos


def redis_failover(env: Chaos, load: Load, result: Result) -> float | None:
    chaos = ha(env)
    assert chaos.sentinels is not None
    before = chaos.docs_total()
    chaos.sentinels.master.kill()
    killed = time.monotonic()
    try:
        chaos.sentinels.wait_promoted()
    except AssertionError as exc:
        result.violations.append(str(exc))
        return None
    result.notes.append(f"replica promoted {time.monotonic() - killed:.1f} s after the kill")
    resumed = wait_until(lambda: limits_resumed(list(load.samples), killed), RECOVERY_TIMEOUT_S)
    until = float("inf") if resumed is None else resumed.at
    open_ = [s for s in list(load.samples) if killed < s.at < until and s.status and not s.limited]
    result.notes.append(f"{len(open_)} answered without limits (fail-open) until they resumed")
    statuses = chaos.probe_uploads()
    result.notes.append(f"a fresh key's uploads after it: {', '.join(map(str, statuses))}")
    if statuses[-1] != 429:
        result.violations.append("the upload budget was not enforced after the failover")
    result.data_lost = max(0, before - chaos.docs_total())
    return None if resumed is None else resumed.at - killed


def replica_stop(env: Chaos, load: Load, result: Result) -> float | None:
    chaos = ha(env)
    assert chaos.pg is not None
    pg = chaos.pg
    before = chaos.docs_total()
    on_primary = retrieval_statements(pg.primary)
    stopping = time.monotonic()
    pg.replica.stop("fast")
    stopped = time.monotonic()
    skipped = wait_until(lambda: (t := chaos.replica_target()) is not None and not t["healthy"], 30)
    result.notes.append(
        f"replica skipped {time.monotonic() - stopping:.1f} s after the stop began"
        if skipped
        else "never skipped"
    )
    time.sleep(DOWN_S)
    pg.replica.start()
    started = time.monotonic()
    base = retrieval_statements(pg.replica)
    back = wait_until(lambda: retrieval_statements(pg.replica) > base, RECOVERY_TIMEOUT_S, interval=0.1)
    serving = time.monotonic()
    fallback = retrieval_statements(pg.primary) - on_primary
    outage = [s for s in list(load.samples) if stopping <= s.at <= serving and s.kind == "chat"]
    ok = sum(1 for s in outage if 200 <= s.status < 300)
    result.notes.append(
        f"from the stop until it served again: {ok}/{len(outage)} chat 2xx, {fallback} searches on the "
        f"primary (stop took {stopped - stopping:.1f} s, start {started - stopped - DOWN_S:.1f} s)"
    )
    result.data_lost = max(0, before - chaos.docs_total())
    return None if back is None else serving - started


def replica_lag(env: Chaos, load: Load, result: Result) -> float | None:
    chaos = ha(env)
    assert chaos.pg is not None
    pg = chaos.pg
    before = chaos.docs_total()
    pg.pause_replay()
    paused = time.monotonic()
    accepted = chaos.upload("lagging.md", LAG_DOC)  # a write the replica does not replay
    target: dict[str, Any] = {}

    def lagging() -> bool:
        nonlocal target
        target = chaos.replica_target() or {}
        return target.get("healthy") is False and "lags" in str(target.get("error"))

    if not wait_until(lagging, 60, interval=0.1):
        result.violations.append(f"never skipped: {target}")
        pg.resume_replay()
        return None
    result.notes.append(
        f"skipped {time.monotonic() - paused:.1f} s after replay paused (lag {target['lag_s']} s)"
    )
    job = chaos.wait_job(accepted["job_id"], {"succeeded", "failed"}, RECOVERY_TIMEOUT_S)
    time.sleep(1.0)  # searches that picked the replica before the check finish
    at_skip, primary_at_skip = retrieval_statements(pg.replica), retrieval_statements(pg.primary)
    time.sleep(DOWN_S)
    while_skipped = retrieval_statements(pg.replica) - at_skip
    on_primary = retrieval_statements(pg.primary) - primary_at_skip
    result.notes.append(f"searches while skipped: replica {while_skipped}, primary {on_primary}")
    if while_skipped:
        result.violations.append(f"{while_skipped} searches on the lagging replica")
    pg.resume_replay()
    resumed = time.monotonic()
    base = retrieval_statements(pg.replica)
    back = wait_until(lambda: retrieval_statements(pg.replica) > base, RECOVERY_TIMEOUT_S, interval=0.1)
    recovered = time.monotonic() - resumed
    pg.wait_replayed()  # listings may trail by up to REPLICA_MAX_LAG_S
    ingested = job is not None and job["status"] == "succeeded"
    result.data_lost = (0 if ingested else 1) + max(0, before + 1 - chaos.docs_total())
    result.notes.append(f"the document written meanwhile: job {job and job['status']}")
    return None if back is None else recovered


HA_SCENARIOS: dict[str, tuple[str, Callable[[Chaos, Load, Result], float | None]]] = {
    "redis-failover": ("Redis master SIGKILL, Sentinel fails over", redis_failover),
    "replica-stop": ("read replica stopped, started after 3 s", replica_stop),
    "replica-lag": ("read replica lagging (replay paused)", replica_lag),
}
