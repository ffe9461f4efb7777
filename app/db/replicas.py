"""Read replicas: a read-only session source that is a healthy streaming replica, or the primary.

``ReadSessions.session()`` opens a session on the next healthy replica in turn (round robin),
or on the primary when none is configured or none is healthy. Retrieval and the read-only
listings use it; writes, and reads that must see the caller's own write, keep the primary's
session (``app.api.deps.SessionDep``, the units of work).

Health is checked in the background every ``REPLICA_CHECK_INTERVAL_S``, never per request. A
replica is skipped while it is unreachable, no longer in recovery (promoted: a second primary
would be a split brain to read from), or further behind than ``REPLICA_MAX_LAG_S``. Lag is
``now() - pg_last_xact_replay_timestamp()`` on the replica, except when its replay position has
reached the primary's current WAL position: an idle primary writes nothing, so the last replayed
transaction ages while the replica is in fact fully caught up.

Every query is counted per target (``db_queries_total{target}``), and each replica's lag is a
gauge (``db_replica_lag_seconds{target}``), also shown on ``/readyz``.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import structlog
from sqlalchemy import event, text
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from app.errors import InternalError

logger = structlog.get_logger(__name__)

PRIMARY = "primary"
CHECK_TIMEOUT_S = 2.0

_REPLICA_STATE_SQL = text(
    """
    SELECT pg_is_in_recovery() AS in_recovery,
           coalesce(pg_last_wal_replay_lsn() >= CAST(:primary_lsn AS pg_lsn), false) AS caught_up,
           EXTRACT(EPOCH FROM now() - pg_last_xact_replay_timestamp()) AS replay_age_s
    """
)


class ReplicaMetrics(Protocol):
    """What the replica set reports (``DomainMetrics`` implements it)."""

    def db_query(self, target: str) -> None: ...

    def replica_state(self, target: str, healthy: bool, lag_s: float | None) -> None: ...


class ReplicaError(InternalError):
    """A replica that cannot serve at all (startup refuses it); the message is one sentence."""


def target_name(url: str, index: int) -> str:
    """``replica-1@host`` without credentials: safe for logs, metrics and ``/readyz``."""
    parsed = make_url(url)
    host = parsed.host or parsed.query.get("host") or "local"
    return f"replica-{index}@{host if isinstance(host, str) else host[0]}"


@dataclass
class ReadTarget:
    name: str
    engine: AsyncEngine
    sessions: async_sessionmaker[AsyncSession]
    healthy: bool = False
    lag_s: float | None = None
    error: str | None = "not checked yet"
    queries: int = field(default=0)

    def describe(self) -> dict[str, object]:
        described: dict[str, object] = {
            "target": self.name,
            "healthy": self.healthy,
            "lag_s": None if self.lag_s is None else round(self.lag_s, 3),
            "queries": self.queries,
        }
        if self.error is not None:
            described["error"] = self.error
        return described


def count_queries(
    engine: AsyncEngine, name: str, counted: ReadTarget | None, metrics: ReplicaMetrics
) -> None:
    """Count every statement ``engine`` runs as a query on ``name``."""

    def on_execute(*_: Any) -> None:
        if counted is not None:
            counted.queries += 1
        metrics.db_query(name)

    event.listen(engine.sync_engine, "before_cursor_execute", on_execute)


async def replica_state(replica: AsyncEngine, primary_lsn: str) -> tuple[bool, float]:
    """``(in_recovery, lag_s)`` of one replica, against the primary's current WAL position."""
    async with replica.connect() as conn:
        row = (await conn.execute(_REPLICA_STATE_SQL, {"primary_lsn": primary_lsn})).one()
    if row.caught_up:
        return bool(row.in_recovery), 0.0
    # Behind, and nothing replayed since it started: as stale as can be.
    lag = float("inf") if row.replay_age_s is None else max(0.0, float(row.replay_age_s))
    return bool(row.in_recovery), lag


async def primary_position(primary: AsyncEngine) -> str:
    async with primary.connect() as conn:
        return str((await conn.execute(text("SELECT pg_current_wal_lsn()"))).scalar_one())


class ReadSessions:
    """Read-only sessions on a healthy replica, else on the primary (see the module doc)."""

    def __init__(
        self,
        primary: AsyncEngine,
        primary_sessions: async_sessionmaker[AsyncSession],
        replicas: Sequence[ReadTarget],
        *,
        max_lag_s: float,
        interval_s: float,
        metrics: ReplicaMetrics,
    ) -> None:
        self._primary = primary
        self._primary_sessions = primary_sessions
        self.primary = ReadTarget(PRIMARY, primary, primary_sessions, healthy=True, lag_s=0.0, error=None)
        self.replicas = list(replicas)
        self._max_lag_s = max_lag_s
        self._interval_s = interval_s
        self._metrics = metrics
        self._turn = itertools.count()
        self._task: asyncio.Task[None] | None = None
        self._stopping = asyncio.Event()
        count_queries(primary, PRIMARY, self.primary, metrics)
        for replica in self.replicas:
            count_queries(replica.engine, replica.name, replica, metrics)

    @property
    def configured(self) -> bool:
        return bool(self.replicas)

    def pick(self) -> ReadTarget | None:
        """The next healthy replica in turn; None when the primary must serve."""
        healthy = [replica for replica in self.replicas if replica.healthy]
        if not healthy:
            return None
        return healthy[next(self._turn) % len(healthy)]

    def mark_down(self, target: ReadTarget, error: BaseException) -> None:
        """A query failed on ``target``: skip it until the next check finds it healthy again."""
        target.healthy = False
        target.error = type(error).__name__
        self._metrics.replica_state(target.name, False, target.lag_s)
        logger.warning("replica_skipped", target=target.name, error=target.error)

    @contextlib.asynccontextmanager
    async def session(self) -> AsyncIterator[AsyncSession]:
        """A read-only session (a ``UnitOfWork``): a healthy replica's, else the primary's. A
        replica that fails to connect is marked down and the primary serves instead."""
        target = self.pick()
        if target is not None:
            session = target.sessions()
            try:
                await session.connection()
            except Exception as exc:  # unreachable since the last check
                await session.close()
                self.mark_down(target, exc)
            else:
                async with session:
                    yield session
                return
        async with self._primary_sessions() as session:
            yield session

    async def check(self) -> None:
        """Check every replica once, concurrently; each bounded by ``CHECK_TIMEOUT_S``."""
        if not self.replicas:
            return
        try:
            position = await asyncio.wait_for(primary_position(self._primary), CHECK_TIMEOUT_S)
        except Exception as exc:  # the primary is down: readiness says so; replicas keep their state
            logger.warning("replica_check_skipped", error=type(exc).__name__)
            return
        await asyncio.gather(*(self._check_one(replica, position) for replica in self.replicas))

    async def _check_one(self, replica: ReadTarget, primary_lsn: str) -> None:
        try:
            in_recovery, lag = await asyncio.wait_for(
                replica_state(replica.engine, primary_lsn), CHECK_TIMEOUT_S
            )
        except Exception as exc:
            was = replica.healthy
            replica.healthy, replica.lag_s, replica.error = False, None, type(exc).__name__
            if was:
                logger.warning("replica_down", target=replica.name, error=replica.error)
        else:
            replica.lag_s = lag
            if not in_recovery:
                replica.healthy, replica.error = False, "not in recovery (promoted?)"
            elif lag > self._max_lag_s:
                replica.healthy, replica.error = False, f"lags more than {self._max_lag_s:g}s"
            else:
                replica.healthy, replica.error = True, None
        self._metrics.replica_state(replica.name, replica.healthy, replica.lag_s)

    async def _run(self) -> None:
        while True:
            # Waits on the stop flag, not only for the cancel: on Python 3.11 a cancel that lands as
            # the check's own ``wait_for`` finishes is lost (fixed in 3.12), and the checker would
            # go on checking while ``aclose`` waits for it (``tests/unit/db/test_replica_checker.py``).
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), self._interval_s)
            if self._stopping.is_set():
                return
            try:
                await self.check()
            except Exception:  # never let the checker die
                logger.exception("replica_check_failed")

    async def start(self) -> None:
        """Check once now (so the first requests already use the replicas), then periodically."""
        if not self.replicas:
            return
        await self.check()
        self._task = asyncio.create_task(self._run(), name="replica-check")

    async def aclose(self) -> None:
        if self._task is not None:
            self._stopping.set()
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        for replica in self.replicas:
            await replica.engine.dispose()

    def describe(self) -> list[dict[str, object]]:
        """Each target, with its queries and lag (``/readyz``)."""
        return [self.primary.describe(), *(replica.describe() for replica in self.replicas)]


async def verify_replica(url: str, name: str) -> None:
    """Refuse, in one sentence, a replica that cannot be reached or that is a primary."""
    from sqlalchemy.ext.asyncio import create_async_engine

    engine = create_async_engine(url, connect_args={"connect_timeout": 5})
    try:
        async with engine.connect() as conn:
            in_recovery = (await conn.execute(text("SELECT pg_is_in_recovery()"))).scalar_one()
    except Exception as exc:
        reason = str(getattr(exc, "orig", None) or exc).strip().splitlines()
        raise ReplicaError(
            f"cannot reach the read replica {name} in DATABASE_REPLICA_URLS: "
            f"{reason[0] if reason else type(exc).__name__}"
        ) from exc
    finally:
        await engine.dispose()
    if not in_recovery:
        raise ReplicaError(
            f"the read replica {name} in DATABASE_REPLICA_URLS is a primary (pg_is_in_recovery() is "
            "false); name a streaming standby"
        )
