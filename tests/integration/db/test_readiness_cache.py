"""``/readyz`` needs no credentials and pays no budget: its checks run at most once a second,
however many calls arrive (the clock is injected, so the second never passes by accident)."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import pytest
from sqlalchemy import event
from sqlalchemy.ext.asyncio import AsyncEngine

from app.db.migrations import head_revision
from app.db.readiness import CACHE_S, ReadinessProbe
from app.resources import Resources
from tests.support.clock import SteppedClock

pytestmark = pytest.mark.integration


@pytest.fixture
def statements(resources: Resources) -> Iterator[list[str]]:
    """Every SQL statement the app's engine sends while the test runs."""
    sent: list[str] = []

    def record(_conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        sent.append(statement)

    engine: AsyncEngine = resources.engine
    event.listen(engine.sync_engine, "before_cursor_execute", record)
    yield sent
    event.remove(engine.sync_engine, "before_cursor_execute", record)


async def test_calls_within_a_second_run_the_checks_once(resources: Resources, statements: list[str]) -> None:
    clock = SteppedClock(base=lambda: 1000.0)  # stands still unless the test moves it
    probe = ReadinessProbe(resources.engine, resources.redis, head_revision(), clock=clock)

    first = await probe.check()
    assert first.ready and first.checks["migrations"]["ok"] is True
    queries_per_check = len(statements)
    assert queries_per_check >= 3

    reports = await asyncio.gather(*(probe.check() for _ in range(20)))  # concurrent callers
    for _ in range(20):
        reports.append(await probe.check())
    clock.advance(CACHE_S * 0.99)
    reports.append(await probe.check())
    assert len(statements) == queries_per_check, "40 calls within the second ran the checks again"
    assert all(report.checks == first.checks for report in reports)

    clock.advance(CACHE_S * 0.02)  # the second is over
    assert (await probe.check()).ready
    assert len(statements) == 2 * queries_per_check
