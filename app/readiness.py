"""Readiness: can this process serve traffic right now? Each dependency is checked alone so the
answer names exactly what is down."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

from sqlalchemy import text

from app.resources import Resources

CHECK_TIMEOUT_S = 2.0


@dataclass
class ReadinessReport:
    checks: dict[str, dict[str, object]] = field(default_factory=dict)

    @property
    def ready(self) -> bool:
        return all(check["ok"] for check in self.checks.values())

    @property
    def failing(self) -> list[str]:
        return [name for name, check in self.checks.items() if not check["ok"]]


async def _check_postgres(resources: Resources, report: ReadinessReport) -> None:
    try:
        async with resources.engine.connect() as conn:
            server_version = (await conn.execute(text("SHOW server_version"))).scalar_one()
            report.checks["postgres"] = {"ok": True, "version": str(server_version).split()[0]}
            pgvector = (
                await conn.execute(text("SELECT extversion FROM pg_extension WHERE extname = 'vector'"))
            ).scalar_one_or_none()
            report.checks["pgvector"] = (
                {"ok": True, "version": pgvector}
                if pgvector
                else {"ok": False, "error": "the vector extension is not installed"}
            )
            has_table = (
                await conn.execute(text("SELECT to_regclass('alembic_version') IS NOT NULL"))
            ).scalar_one()
            current = (
                (await conn.execute(text("SELECT version_num FROM alembic_version"))).scalar_one_or_none()
                if has_table
                else None
            )
            at_head = current == resources.migration_head
            report.checks["migrations"] = {
                "ok": at_head,
                "current": current,
                "head": resources.migration_head,
                **({} if at_head else {"error": "run `make migrate`"}),
            }
    except Exception as exc:  # any driver/pool error means "not reachable"
        report.checks.setdefault("postgres", {"ok": False, "error": type(exc).__name__})
        report.checks.setdefault("pgvector", {"ok": False, "error": "postgres unreachable"})
        report.checks.setdefault("migrations", {"ok": False, "error": "postgres unreachable"})


async def _check_redis(resources: Resources, report: ReadinessReport) -> None:
    try:
        await resources.redis.ping()
        report.checks["redis"] = {"ok": True}
    except Exception as exc:
        report.checks["redis"] = {"ok": False, "error": type(exc).__name__}


async def check_readiness(resources: Resources) -> ReadinessReport:
    report = ReadinessReport()

    async def bounded(name: str, check: object) -> None:
        try:
            await asyncio.wait_for(check, CHECK_TIMEOUT_S)  # type: ignore[arg-type]
        except TimeoutError:
            report.checks.setdefault(name, {"ok": False, "error": "timed out"})

    await asyncio.gather(
        bounded("postgres", _check_postgres(resources, report)),
        bounded("redis", _check_redis(resources, report)),
    )
    return report
