"""A model object outlives event loops (a test session's shared embedder, a worker's restarts):
one inference at a time must hold on whichever loop asks, not only on the first one that waited."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Sequence
from typing import Any

import pytest

from app.rag.embeddings.local import LocalEmbedder

pytestmark = pytest.mark.unit


class CountingEmbedder(LocalEmbedder):
    """Encodes slowly enough for callers to queue, and records the most encodes ever at once."""

    def __init__(self) -> None:
        super().__init__("counting", 2)
        self.running = 0
        self.most_at_once = 0
        self._count_lock = threading.Lock()

    def _load(self) -> Any:
        return object()

    def _encode(self, model: Any, texts: Sequence[str]) -> list[list[float]]:
        with self._count_lock:
            self.running += 1
            self.most_at_once = max(self.most_at_once, self.running)
        time.sleep(0.02)
        with self._count_lock:
            self.running -= 1
        return [[1.0, 0.0] for _ in texts]


async def _ask_at_once(embedder: LocalEmbedder, n: int) -> list[list[float]]:
    """``n`` questions (which share calls) and ``n`` document batches, all at once."""
    questions = [embedder.embed_query(f"q{i}") for i in range(n)]
    documents = [embedder.embed_documents([f"d{i}", f"e{i}"]) for i in range(n)]
    answers = await asyncio.gather(*questions, *documents)
    return answers[:n]  # type: ignore[return-value]


def test_queued_callers_on_a_second_event_loop_are_served_one_at_a_time() -> None:
    embedder = CountingEmbedder()
    assert len(asyncio.run(_ask_at_once(embedder, 4))) == 4
    # Before: the lock was bound to the first loop and this raised "bound to a different event loop".
    assert len(asyncio.run(_ask_at_once(embedder, 4))) == 4
    assert embedder.most_at_once == 1
