"""The gunicorn worker class of ``python -m app serve``: uvicorn's, with a bounded, clean stop
(``app.observability.draining``): uvicorn alone waits for every open connection without limit, so
one stalled answer stream kept the worker until gunicorn SIGKILLed it."""

from __future__ import annotations

import asyncio
import sys
from types import FrameType

from gunicorn.arbiter import Arbiter
from uvicorn.server import Server
from uvicorn_worker import UvicornWorker

from app.observability.draining import SHUTDOWN, drain_budgets


class _DrainingServer(Server):
    """Starts the streams' drain on the event loop when the stop signal arrives."""

    loop: asyncio.AbstractEventLoop | None = None
    stream_drain_s: float = 0.0

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        if not self.should_exit and self.loop is not None:
            self.loop.call_soon_threadsafe(SHUTDOWN.begin, self.stream_drain_s)
        super().handle_exit(sig, frame)


class DrainingUvicornWorker(UvicornWorker):  # type: ignore[misc]  # uvicorn-worker ships no type hints
    def __init__(self, *args: object, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)
        budgets = drain_budgets(float(self.cfg.graceful_timeout))
        self.config.timeout_graceful_shutdown = budgets.tasks_s
        self._stream_drain_s = budgets.stream_drain_s

    async def _serve(self) -> None:  # UvicornWorker._serve, with the draining server
        self.config.app = self.wsgi
        server = _DrainingServer(config=self.config)
        server.loop = asyncio.get_running_loop()
        server.stream_drain_s = self._stream_drain_s
        self._install_sigquit_handler()
        await server.serve(sockets=self.sockets)
        if not server.started:
            sys.exit(Arbiter.WORKER_BOOT_ERROR)
