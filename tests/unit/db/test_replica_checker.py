"""The replica checker stops when the app shuts down, even when the cancel that stops it is lost:
on Python 3.11 a cancel that lands as an inner ``asyncio.wait_for`` finishes is swallowed (fixed
in 3.12), and the app's shutdown then waited for a checker that went on checking."""

from __future__ import annotations

import asyncio
import contextlib

import pytest
from sqlalchemy.ext.asyncio import create_async_engine

from app.db.engine import create_session_factory
from app.db.replicas import ReadSessions, ReadTarget

NOWHERE = "postgresql+psycopg://nobody@/nothing?host=/nonexistent"  # never connected to


class NoMetrics:
    def replica_state(self, target: str, healthy: bool, lag_s: float | None) -> None:
        return None

    def db_query(self, target: str) -> None:
        return None


async def test_a_checker_that_loses_its_cancel_still_stops_on_close(monkeypatch: pytest.MonkeyPatch) -> None:
    primary = create_async_engine(NOWHERE)
    replica = create_async_engine(NOWHERE)
    sessions = ReadSessions(
        primary,
        create_session_factory(primary),
        [ReadTarget("replica-1", replica, create_session_factory(replica))],
        max_lag_s=5.0,
        interval_s=0.01,
        metrics=NoMetrics(),
    )
    checks = 0

    async def check_losing_the_cancel() -> None:
        nonlocal checks
        checks += 1
        # what a 3.11 wait_for does when the cancel races its inner task's end
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.sleep(0.005)

    monkeypatch.setattr(sessions, "check", check_losing_the_cancel)
    await sessions.start()
    while checks < 3:  # the checker runs
        await asyncio.sleep(0.005)
    closing = asyncio.create_task(sessions.aclose())
    done, _ = await asyncio.wait({closing}, timeout=10)
    assert closing in done, "close is still waiting for the checker"  # before the fix: forever
    stopped_at = checks
    await asyncio.sleep(0.05)
    assert checks == stopped_at  # and it checks no more
    await primary.dispose()
    await replica.dispose()
