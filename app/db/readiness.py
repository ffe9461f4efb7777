"""Readiness: can this process serve traffic right now? Each dependency is checked alone so the
answer names exactly what is down.

``/readyz`` needs no credentials and no budget, so its answer is kept for ``CACHE_S`` (one
second): any number of calls within that second, concurrent ones included, run the checks (three
catalogue queries and a Redis PING) once. A probe every few seconds still sees every change.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from redis.asyncio import Redis
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from app.db.replicas import ReadSessions

CHECK_TIMEOUT_S = 2.0
CACHE_S = 1.0


@dataclass
class ReadinessReport:
    checks: dict[str, dict[str, object]] = field(default_factory=dict)

    @property
    def ready(self) -> bool:
        return all(check["ok"] for check in self.checks.values())

    @property
    def failing(self) -> list[str]:
        return [name for name, check in self.checks.items() if not check["ok"]]


class SchemaProbe:
    """The catalogue queries readiness asks, on one connection."""

    def __init__(self, connection: AsyncConnection) -> None:
        self._connection = connection

    async def server_version(self) -> str:
        return str((await self._connection.execute(text("SHOW server_version"))).scalar_one())

    async def pgvector_version(self) -> str | None:
        return (
            await self._connection.execute(
                text("SELECT extversion FROM pg_extension WHERE extname = 'vector'")
            )
        ).scalar_one_or_none()

    async def migration_revision(self) -> str | None:
        has_table = (
            await self._connection.execute(text("SELECT to_regclass('alembic_version') IS NOT NULL"))
        ).scalar_one()
        if not has_table:
            return None
        return (
            await self._connection.execute(text("SELECT version_num FROM alembic_version"))
        ).scalar_one_or_none()


class ReadinessProbe:
    def __init__(
        self,
        engine: AsyncEngine,
        redis: Redis,
        migration_head: str,
        *,
        cache_s: float = CACHE_S,
        clock: Callable[[], float] = time.monotonic,
        read_sessions: ReadSessions | None = None,
    ) -> None:
        self._engine = engine
        self._read_sessions = read_sessions
        self._redis = redis
        self.migration_head = migration_head
        self._cache_s = cache_s
        self._clock = clock
        self._lock = asyncio.Lock()
        self._cached: tuple[float, ReadinessReport] | None = None

    async def _check_postgres(self, report: ReadinessReport) -> None:
        try:
            async with self._engine.connect() as conn:
                probe = SchemaProbe(conn)
                report.checks["postgres"] = {"ok": True, "version": (await probe.server_version()).split()[0]}
                pgvector = await probe.pgvector_version()
                report.checks["pgvector"] = (
                    {"ok": True, "version": pgvector}
                    if pgvector
                    else {"ok": False, "error": "the vector extension is not installed"}
                )
                current = await probe.migration_revision()
                at_head = current == self.migration_head
                report.checks["migrations"] = {
                    "ok": at_head,
                    "current": current,
                    "head": self.migration_head,
                    **({} if at_head else {"error": "run `make migrate`"}),
                }
        except Exception as exc:  # any driver/pool error means "not reachable"
            report.checks.setdefault("postgres", {"ok": False, "error": type(exc).__name__})
            report.checks.setdefault("pgvector", {"ok": False, "error": "postgres unreachable"})
            report.checks.setdefault("migrations", {"ok": False, "error": "postgres unreachable"})

    async def _check_redis(self, report: ReadinessReport) -> None:
        try:
            await self._redis.ping()
            report.checks["redis"] = {"ok": True}
        except Exception as exc:
            report.checks["redis"] = {"ok": False, "error": type(exc).__name__}

    async def check(self) -> ReadinessReport:
        """The last report if it is younger than ``cache_s``; otherwise a fresh one. Callers that
        arrive while a check runs wait for it rather than starting their own."""
        async with self._lock:
            if self._cached is not None and self._clock() - self._cached[0] < self._cache_s:
                return self._cached[1]
            started = self._clock()
            report = await self._check_now()
            self._cached = (started, report)
            return report

    async def _check_now(self) -> ReadinessReport:
        report = ReadinessReport()

        async def bounded(name: str, check: object) -> None:
            try:
                await asyncio.wait_for(check, CHECK_TIMEOUT_S)  # type: ignore[arg-type]
            except TimeoutError:
                report.checks.setdefault(name, {"ok": False, "error": "timed out"})

        await asyncio.gather(
            bounded("postgres", self._check_postgres(report)),
            bounded("redis", self._check_redis(report)),
        )
        if self._read_sessions is not None and self._read_sessions.configured:
            # Informational: a skipped replica never makes the service unready (the primary serves).
            report.checks["read_replicas"] = {"ok": True, "targets": self._read_sessions.describe()}
        return report
