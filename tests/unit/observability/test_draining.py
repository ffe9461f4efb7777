"""The stop's budgets stay inside gunicorn's grace, and a stream running when the drain time is
over ends with an ``error`` event and closes its producer (the provider's stream)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import aclosing

import pytest

from app.api.streaming import with_heartbeats
from app.chat.types import ChatEvent, DeltaEvent, ErrorEvent
from app.observability.draining import SHUTDOWN, SHUTTING_DOWN_CODE, drain_budgets

pytestmark = pytest.mark.unit


@pytest.mark.parametrize("grace_s", [2, 4, 6, 10, 30, 120])
def test_streams_end_then_tasks_are_cancelled_before_the_grace_is_over(grace_s: float) -> None:
    budgets = drain_budgets(grace_s)
    assert 0 < budgets.stream_drain_s < budgets.tasks_s < grace_s
    assert budgets.stream_drain_s >= grace_s / 2, "streams get at least half the grace"


async def test_a_stream_still_running_when_the_drain_is_over_ends_with_an_error_event() -> None:
    closed = asyncio.Event()

    async def stalled() -> AsyncIterator[ChatEvent]:
        try:
            yield DeltaEvent("On the")
            await asyncio.Event().wait()  # a provider that never sends the rest
        finally:
            closed.set()

    async with aclosing(with_heartbeats(stalled(), every_s=60)) as items:
        assert await anext(items) == DeltaEvent("On the")
        SHUTDOWN.begin(0)
        last = await anext(items)
        assert isinstance(last, ErrorEvent) and last.code == SHUTTING_DOWN_CODE
        with pytest.raises(StopAsyncIteration):
            await anext(items)
    assert closed.is_set(), "the provider's stream was left open"


async def test_without_a_stop_the_stream_is_untouched() -> None:
    async def answer() -> AsyncIterator[ChatEvent]:
        yield DeltaEvent("a")
        yield DeltaEvent("b")

    async with aclosing(with_heartbeats(answer(), every_s=60)) as items:
        seen = [item async for item in items]
    assert seen[:2] == [DeltaEvent("a"), DeltaEvent("b")]
    assert isinstance(seen[-1], ErrorEvent) and seen[-1].code != SHUTTING_DOWN_CODE  # ended without done
