"""A clean stop: what a worker does between SIGTERM (or Ctrl-C) and its exit.

gunicorn gives a stopping worker ``SHUTDOWN_GRACE_S`` before it SIGKILLs it. Within that grace:

1. at once, the listening sockets close (gunicorn and uvicorn): no new request is taken;
2. requests and answer streams in flight go on; a stream still running after ``stream_drain_s``
   (``drain_budgets``) ends with an ``error`` event ``server_shutting_down`` (``app.api.chat``'s
   ``with_heartbeats`` watches ``SHUTDOWN``), so its client learns why and can ask again;
3. after ``tasks_s``, uvicorn cancels whatever still runs (a request stuck on a dependency), and
   the lifespan closes the pools, all before gunicorn's SIGKILL.

``DrainingUvicornWorker`` (``app.observability.gunicorn_worker``) starts the drain on the worker's
event loop when the stop signal arrives.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

SHUTTING_DOWN_CODE = "server_shutting_down"
SHUTTING_DOWN_MESSAGE = "The server is restarting; ask again."


@dataclass(frozen=True)
class DrainBudgets:
    stream_drain_s: float  # streams may run this long after the stop signal
    tasks_s: float  # uvicorn cancels what still runs after this


def drain_budgets(grace_s: float) -> DrainBudgets:
    """Streams get half the grace (at most all but 3 s of it); the rest is for the error events,
    uvicorn's cancellation and the lifespan's shutdown, which end before gunicorn's SIGKILL."""
    return DrainBudgets(
        stream_drain_s=max(grace_s / 2, grace_s - 3), tasks_s=max(grace_s * 0.75, grace_s - 1.5)
    )


class ShutdownSignal:
    """Set once per worker event loop: "the streams' drain time is over"."""

    def __init__(self) -> None:
        self._loop: asyncio.AbstractEventLoop | None = None
        self._over: asyncio.Event | None = None

    def _event(self) -> asyncio.Event:
        loop = asyncio.get_running_loop()
        if self._loop is not loop or self._over is None:  # a new loop (tests build many apps)
            self._loop, self._over = loop, asyncio.Event()
        return self._over

    def begin(self, stream_drain_s: float) -> None:
        """Called on the worker's loop when the stop signal arrives."""
        asyncio.get_running_loop().call_later(stream_drain_s, self._event().set)

    def is_over(self) -> bool:
        return self._event().is_set()

    async def wait(self) -> None:
        await self._event().wait()


SHUTDOWN = ShutdownSignal()
