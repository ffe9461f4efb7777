"""Questions asked at once share one model call (``QueryBatcher``): one trip to the model's thread
(and, on the float32 graph, one ONNX batch), each question's vector the one it gets alone, one
inference at a time with document batches, and a failure or a cancelled caller affecting nobody
else. No timing: calls are counted, waits are
events, the batching window is an injected sleep."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Sequence
from typing import Any

import numpy as np
import pytest

from app.rag.embeddings import OnnxEmbedder
from app.rag.embeddings.batching import QueryBatcher
from app.rag.local_models import InferenceLock, OnnxSession

pytestmark = pytest.mark.unit

QUESTIONS = [
    "How do I rotate an admin key?",
    "What does /readyz check?",
    "Why did my chat answer come back degraded, and what should I change so it does not?",
    "Can I pin a specific model per request?",
    "limits",
    "Where does the service keep its PostgreSQL data by default when nothing is configured?",
    "How is the answer cache invalidated when a document changes?",
    "Wie lade ich eine neue Version hoch?",
    "Which endpoint lists my API keys?",
    "What happens when an ingestion worker dies in the middle of a job?",
    "?",
    "How are rate limits enforced across several servers behind one load balancer?",
]


class RecordingEncoder:
    """A blocking encoder that records each call's texts; ``hold`` keeps a call running until
    ``release`` is set, so a test can ask questions while the model is busy."""

    def __init__(self, *, hold: bool = False, fail: bool = False) -> None:
        self.calls: list[list[str]] = []
        self.started = threading.Event()
        self.release = threading.Event()
        if not hold:
            self.release.set()
        self.fail = fail

    def __call__(self, texts: list[str]) -> list[list[float]]:
        self.calls.append(list(texts))
        self.started.set()
        self.release.wait(timeout=30)
        if self.fail:
            raise RuntimeError("model failed")
        return [[float(len(text)), 1.0] for text in texts]


@pytest.mark.parametrize("graph", ["weights", "dynamic"])
async def test_concurrent_questions_share_one_model_call_with_the_vectors_each_gets_alone(
    graph: str,
    embedder: OnnxEmbedder,
    weights_embedder: OnnxEmbedder,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    model = weights_embedder if graph == "weights" else embedder
    alone = np.array([model.encode_queries([question])[0] for question in QUESTIONS])
    calls: list[int] = []
    runs: list[int] = []
    real_encode, real_run = OnnxEmbedder._encode_queries, OnnxSession.run

    def encode(self: OnnxEmbedder, loaded: Any, texts: Sequence[str]) -> list[list[float]]:
        calls.append(len(texts))
        return real_encode(self, loaded, texts)

    def run(session: OnnxSession, encodings: Sequence[Any]) -> list[Any]:
        runs.append(len(encodings))
        return real_run(session, encodings)

    monkeypatch.setattr(OnnxEmbedder, "_encode_queries", encode)
    monkeypatch.setattr(OnnxSession, "run", run)
    together = np.array(await asyncio.gather(*(model.embed_query(q) for q in QUESTIONS)))

    assert calls == [len(QUESTIONS)]  # one trip to the model's thread, under one lock
    if graph == "weights":
        assert runs == [len(QUESTIONS)]  # one batch of EMBEDDING_BATCH_SIZE (32)
        assert np.allclose(alone, together, atol=1e-5)
    else:
        # int8 activations are scaled per call: each question runs alone, so its vector is the
        # one it gets asked alone, exactly, whoever asks at the same time
        assert runs == [1] * len(QUESTIONS)
        assert np.array_equal(alone, together)


async def test_a_batch_holds_at_most_max_batch_questions() -> None:
    encoder = RecordingEncoder()
    batcher = QueryBatcher(encoder, InferenceLock(), max_batch=4)
    vectors = await asyncio.gather(*(batcher.embed(f"q{i}" * (i + 1)) for i in range(10)))
    assert [len(call) for call in encoder.calls] == [4, 4, 2]
    assert vectors == [[float(len(f"q{i}" * (i + 1))), 1.0] for i in range(10)]  # each its own


async def test_questions_asked_while_the_model_is_busy_share_the_next_call() -> None:
    encoder = RecordingEncoder(hold=True)
    batcher = QueryBatcher(encoder, InferenceLock())
    first = asyncio.create_task(batcher.embed("first"))
    await asyncio.to_thread(encoder.started.wait, 30)
    later = [asyncio.create_task(batcher.embed(f"later {i}")) for i in range(5)]
    await asyncio.sleep(0)
    encoder.release.set()
    await asyncio.gather(first, *later)
    assert encoder.calls == [["first"], [f"later {i}" for i in range(5)]]


async def test_the_window_lets_questions_arriving_one_by_one_share_a_call() -> None:
    encoder = RecordingEncoder()
    waited: list[float] = []
    window_over = asyncio.Event()

    async def sleep(seconds: float) -> None:  # the window, ended by the test instead of a clock
        waited.append(seconds)
        await window_over.wait()

    batcher = QueryBatcher(encoder, InferenceLock(), window_s=0.002, sleep=sleep)
    tasks = []
    for i in range(6):
        tasks.append(asyncio.create_task(batcher.embed(f"q{i}")))
        await asyncio.sleep(0)  # each question arrives on its own turn of the loop
    window_over.set()
    await asyncio.gather(*tasks)
    assert waited == [0.002]
    assert encoder.calls == [[f"q{i}" for i in range(6)]]


async def test_a_failed_call_fails_its_questions_only_and_the_next_call_works() -> None:
    encoder = RecordingEncoder(fail=True)
    batcher = QueryBatcher(encoder, InferenceLock())
    results = await asyncio.gather(*(batcher.embed(f"q{i}") for i in range(3)), return_exceptions=True)
    assert all(isinstance(r, RuntimeError) for r in results)
    encoder.fail = False
    assert await batcher.embed("again") == [5.0, 1.0]


async def test_a_cancelled_question_leaves_the_others_answered() -> None:
    encoder = RecordingEncoder(hold=True)
    batcher = QueryBatcher(encoder, InferenceLock())
    first = asyncio.create_task(batcher.embed("first"))
    await asyncio.to_thread(encoder.started.wait, 30)
    gone = asyncio.create_task(batcher.embed("gone"))
    kept = asyncio.create_task(batcher.embed("kept"))
    await asyncio.sleep(0)
    gone.cancel()
    encoder.release.set()
    assert await first == [5.0, 1.0] and await kept == [4.0, 1.0]
    assert gone.cancelled()
    assert encoder.calls == [["first"], ["kept"]]


def test_each_event_loop_batches_its_own_questions() -> None:
    encoder = RecordingEncoder()
    batcher = QueryBatcher(encoder, InferenceLock())

    async def ask(prefix: str) -> list[list[float]]:
        return await asyncio.gather(*(batcher.embed(f"{prefix}{i}") for i in range(3)))

    assert len(asyncio.run(ask("a"))) == 3
    assert len(asyncio.run(ask("b"))) == 3  # a second loop: no state bound to the first
    assert encoder.calls == [["a0", "a1", "a2"], ["b0", "b1", "b2"]]
