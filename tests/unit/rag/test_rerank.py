"""The rerank stage (app/rag/rerank.py): a cross-encoder orders the retrieved candidates exactly by
the scores the model itself gives each (question, passage) pair, computed here independently with
transformers; its ONNX export and the torch directory give the same order; ``RERANKER=none``
changes nothing; a cross-encoder without a usable directory is refused before anything loads. The
cross-encoders are tiny random-weight BERTs written at test time (tests/support/tiny_models.py)."""

from __future__ import annotations

import asyncio
import threading
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from app.observability.metrics import DomainMetrics
from app.observability.metrics.prometheus import PrometheusBackend
from app.observability.telemetry import Telemetry
from app.rag.query import RetrievedChunk
from app.rag.rerank import (
    CrossEncoderReranker,
    NoReranker,
    RerankerError,
    build_reranker,
    relevance,
    rerank_stage,
    retrieval_depth,
)
from app.settings import Settings
from tests.support.tiny_models import TinyModels, cross_encoder_scores

pytestmark = [pytest.mark.unit, pytest.mark.pgvector]

QUESTION = "How long are database backups kept?"
PASSAGES = [
    "Backups of customer databases are kept for exactly 35 days before deletion.",
    "Staff parking is on level two of the garage. Bicycles go in the courtyard racks.",
    "The support desk is open from nine to five on weekdays.",
    "A nightly purge job enforces retention; backups older than 35 days are removed.",
    "Restoring a snapshot takes about an hour for a 100 GB database.",
    "The cafeteria serves lasagne every Thursday. " * 40,  # past the model's 512 tokens with the question
]


def chunks() -> list[RetrievedChunk]:
    """Retrieval's order: the passages as listed, with descending fusion scores."""
    document = uuid.uuid4()
    return [
        RetrievedChunk(
            chunk_id=index + 1,
            document_id=document,
            version=1,
            title=f"Passage {index + 1}",
            page=1,
            text=text,
            tags=(),
            score=round(0.05 - index * 0.001, 6),
        )
        for index, text in enumerate(PASSAGES)
    ]


def model_scores(torch_directory: Path) -> Any:
    return np.array(cross_encoder_scores(torch_directory, QUESTION, PASSAGES))


MODELS = {
    # reranker directory → the torch directory with the same weights
    "one logit, torch": ("cross_encoder", "cross_encoder"),
    "one logit, onnx": ("cross_encoder_onnx", "cross_encoder"),
    "two logits, torch": ("cross_encoder_two_logits", "cross_encoder_two_logits"),
    "two logits, onnx": ("cross_encoder_two_logits_onnx", "cross_encoder_two_logits"),
}


@pytest.mark.parametrize("model", MODELS)
async def test_candidates_come_back_in_the_order_of_the_models_own_scores(
    tiny_models: TinyModels, model: str
) -> None:
    directory, twin = (getattr(tiny_models, name) for name in MODELS[model])
    expected = model_scores(twin)
    ranking = sorted(range(len(PASSAGES)), key=lambda i: -expected[i])
    gaps = np.diff(sorted(expected))
    assert gaps.min() > 1e-4, "the fixed-seed model should not give near-ties"

    reranker = CrossEncoderReranker(directory)
    assert reranker.backend == ("onnx" if model.endswith("onnx") else "torch")
    ranked = await reranker.rerank(QUESTION, chunks(), top_k=4)
    assert [c.chunk_id for c in ranked] == [i + 1 for i in ranking[:4]]
    assert [c.score for c in ranked] == pytest.approx([expected[i] for i in ranking[:4]], abs=1e-5)
    assert [c.text for c in ranked] == [PASSAGES[i] for i in ranking[:4]]
    everything = await reranker.rerank(QUESTION, chunks(), top_k=50)
    assert [c.chunk_id for c in everything] == [i + 1 for i in ranking]
    await reranker.aclose()


async def test_the_onnx_export_and_the_torch_directory_agree_on_the_order(tiny_models: TinyModels) -> None:
    onnx = await CrossEncoderReranker(tiny_models.cross_encoder_onnx).rerank(QUESTION, chunks(), top_k=6)
    torch = await CrossEncoderReranker(tiny_models.cross_encoder).rerank(QUESTION, chunks(), top_k=6)
    assert [c.chunk_id for c in onnx] == [c.chunk_id for c in torch]
    assert [c.score for c in onnx] == pytest.approx([c.score for c in torch], abs=1e-5)


async def test_no_reranker_keeps_retrievals_order_and_scores() -> None:
    retrieved = chunks()
    assert await NoReranker().rerank(QUESTION, retrieved, top_k=3) == retrieved[:3]
    assert retrieval_depth(NoReranker(), 5, 20) == 5


class GatedReranker(CrossEncoderReranker):
    """A cross-encoder whose inference holds until the test opens ``gate``: the question of
    another tenant keeping the reranker busy."""

    def __init__(self, directory: Path, *, wait_s: float) -> None:
        super().__init__(directory, wait_s=wait_s)
        self.entered = threading.Event()
        self.gate = threading.Event()

    def scores(self, question: str, passages: Sequence[str]) -> list[float]:
        self.entered.set()
        self.gate.wait(timeout=30)
        return super().scores(question, passages)


async def test_a_question_does_not_queue_behind_a_busy_reranker(tiny_models: TinyModels) -> None:
    """While one question holds the reranker, another waits at most RERANKER_WAIT_S and then keeps
    the retrieval order (counted in rerank_skipped_total) instead of queueing behind it."""
    reranker = GatedReranker(tiny_models.cross_encoder_onnx, wait_s=0.05)
    backend = PrometheusBackend()
    telemetry = Telemetry(metrics=DomainMetrics(backend))
    retrieved = chunks()
    busy = asyncio.create_task(rerank_stage(reranker, QUESTION, retrieved, 3, telemetry))
    assert await asyncio.to_thread(reranker.entered.wait, 30)
    try:
        waited = await asyncio.wait_for(rerank_stage(reranker, QUESTION, retrieved, 3, telemetry), 20)
    finally:
        reranker.gate.set()
    ranked = await busy
    assert waited == retrieved[:3]  # retrieval's order and scores
    assert [c.score for c in ranked] != [c.score for c in waited]  # the busy one was reranked
    skipped = backend.registry.get_sample_value("rerank_skipped_total", {"reranker": "cross-encoder"})
    assert skipped == 1
    # idle again: the next question is reranked, like the first
    assert await rerank_stage(reranker, QUESTION, retrieved, 3, telemetry) == ranked


async def test_a_cross_encoder_sees_at_least_top_k_candidates(tiny_models: TinyModels) -> None:
    reranker = CrossEncoderReranker(tiny_models.cross_encoder_onnx)
    assert retrieval_depth(reranker, 5, 20) == 20
    assert retrieval_depth(reranker, 20, 8) == 20
    assert await reranker.rerank(QUESTION, [], top_k=5) == []


def test_relevance_is_a_probability_for_one_or_two_logits() -> None:
    assert relevance(np.array([[0.0], [2.0]])) == pytest.approx([0.5, 1 / (1 + np.exp(-2))])
    assert relevance(np.array([[0.0, 0.0], [0.0, np.log(3)]])) == pytest.approx([0.5, 0.75])
    with pytest.raises(RerankerError, match="1 or 2 logits"):
        relevance(np.zeros((2, 3)))


def test_the_settings_build_the_reranker_or_refuse_with_what_is_missing(
    tiny_models: TinyModels, tmp_path: Path
) -> None:
    def build(**values: Any) -> Any:
        return build_reranker(Settings(**values, _env_file=None))

    assert isinstance(build(), NoReranker)
    assert isinstance(
        build(reranker="cross-encoder", reranker_model_path=tiny_models.cross_encoder), CrossEncoderReranker
    )
    with pytest.raises(RerankerError, match="RERANKER=cross-encoder needs RERANKER_MODEL_PATH"):
        build(reranker="cross-encoder")
    with pytest.raises(RerankerError, match=r"RERANKER_MODEL_PATH=.*missing is not a directory"):
        build(reranker="cross-encoder", reranker_model_path=tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(RerankerError, match="holds neither an ONNX export of a cross-encoder"):
        build(reranker="cross-encoder", reranker_model_path=tmp_path / "empty")
    (tmp_path / "graph-only").mkdir()
    (tmp_path / "graph-only" / "model.onnx").write_bytes(
        (tiny_models.cross_encoder_onnx / "model.onnx").read_bytes()
    )
    with pytest.raises(RerankerError, match=r"model\.onnx but no tokenizer\.json"):
        build(reranker="cross-encoder", reranker_model_path=tmp_path / "graph-only")
