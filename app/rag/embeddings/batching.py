"""Micro-batching of query embeddings: concurrent questions on one event loop share a model call."""

from __future__ import annotations

import asyncio
import weakref
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from app.rag.local_models import InferenceLock

Encode = Callable[[list[str]], list[list[float]]]
Sleep = Callable[[float], Awaitable[None]]


@dataclass
class _Waiting:
    """The questions of one event loop waiting for a model call, and the task that makes them."""

    items: list[tuple[str, asyncio.Future[list[float]]]] = field(default_factory=list)
    drainer: asyncio.Task[None] | None = None


class QueryBatcher:
    """Concurrent ``embed`` calls share model calls, as embedding servers batch: the first waiting
    question starts a drainer, which waits ``window_s`` for company (0: not at all), takes the
    inference lock (the one document batches take too) and embeds every waiting question, up to
    ``max_batch``, in one blocking ``encode`` call in a thread. Questions that arrive meanwhile go in
    the next call, so under load the queue that forms while the model is busy is the batch, and
    the window only matters when the model was idle. State is per event loop, like the lock's."""

    def __init__(
        self,
        encode: Encode,
        lock: InferenceLock,
        *,
        window_s: float = 0.0,
        max_batch: int = 32,
        sleep: Sleep = asyncio.sleep,
    ) -> None:
        self._encode = encode
        self._lock = lock
        self._window_s = window_s
        self._max_batch = max(1, max_batch)
        self._sleep = sleep
        self._waiting: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _Waiting] = (
            weakref.WeakKeyDictionary()
        )

    async def embed(self, text: str) -> list[float]:
        loop = asyncio.get_running_loop()
        waiting = self._waiting.get(loop)
        if waiting is None:
            waiting = self._waiting[loop] = _Waiting()
        future: asyncio.Future[list[float]] = loop.create_future()
        waiting.items.append((text, future))
        if waiting.drainer is None:
            waiting.drainer = loop.create_task(self._drain(waiting), name="embed-queries")
        return await future

    async def _drain(self, waiting: _Waiting) -> None:
        try:
            if self._window_s > 0:
                await self._sleep(self._window_s)
            while waiting.items:
                async with self._lock.current():
                    taken = waiting.items[: self._max_batch]
                    del waiting.items[: self._max_batch]
                    await self._run([item for item in taken if not item[1].done()])
        finally:
            waiting.drainer = None
            for _, future in waiting.items:  # only when this task was cancelled (loop shutting down)
                future.cancel()
            waiting.items.clear()

    async def _run(self, taken: list[tuple[str, asyncio.Future[list[float]]]]) -> None:
        if not taken:
            return
        try:
            vectors = await asyncio.to_thread(self._encode, [text for text, _ in taken])
        except Exception as exc:
            for _, future in taken:
                if not future.done():
                    future.set_exception(exc)
            return
        except BaseException:
            for _, future in taken:
                future.cancel()
            raise
        for (_, future), vector in zip(taken, vectors, strict=True):
            if not future.done():
                future.set_result(vector)
