"""The relevance gate judges the evidence each passage carried out of its searches (cosine
similarity, BM25), never the fused rank score."""

from __future__ import annotations

import uuid

import pytest

from app.rag.query import RetrievalMode, RetrievedChunk
from app.rag.relevance import RelevanceGate, evidence
from app.rag.retrieval import reciprocal_rank_fusion

pytestmark = pytest.mark.unit

DOC = uuid.uuid4()


def chunk(n: int, *, similarity: float | None = None, text_match: float | None = None) -> RetrievedChunk:
    return RetrievedChunk(
        n, DOC, 1, "Doc", 1, f"passage {n}", (), score=0.5, similarity=similarity, text_match=text_match
    )


GATE = RelevanceGate(min_similarity=0.4, min_text_match=0.2)


def test_nothing_retrieved_is_never_relevant() -> None:
    assert not GATE.admits([])
    assert not RelevanceGate().admits([])


def test_in_hybrid_mode_both_signals_must_clear_on_some_passage() -> None:
    assert GATE.admits([chunk(1, similarity=0.2, text_match=0.3), chunk(2, similarity=0.5)])
    assert not GATE.admits([chunk(1, similarity=0.2, text_match=0.5)])  # words shared, meaning far
    assert not GATE.admits([chunk(1, similarity=0.6, text_match=0.1)])  # close, but its rare words absent
    assert GATE.admits([chunk(1, similarity=0.6)])  # no full-text match: judged on the similarity
    assert GATE.admits([chunk(1)])  # no evidence at all (a retriever that keeps none): not judged


def test_weak_evidence_on_every_passage_is_not_relevant_whatever_the_fused_score() -> None:
    weak = [chunk(n, similarity=0.3, text_match=0.1) for n in range(5)]
    assert not GATE.admits(weak)
    fused = reciprocal_rank_fusion([(1.0, weak), (1.0, weak)], 5)
    assert fused[0].score > 0.03  # the best fused score any query gets
    assert not GATE.admits(fused)


def test_each_mode_is_judged_on_the_signal_it_searched() -> None:
    assert GATE.admits([chunk(1, similarity=0.5)], RetrievalMode.vector)
    assert not GATE.admits([chunk(1, similarity=0.3, text_match=0.9)], RetrievalMode.vector)
    assert GATE.admits([chunk(1, text_match=0.3)], RetrievalMode.text)
    assert not GATE.admits([chunk(1, similarity=0.9, text_match=0.1)], RetrievalMode.text)


def test_thresholds_of_zero_turn_the_gate_off() -> None:
    assert RelevanceGate().admits([chunk(1, similarity=0.01)])
    assert RelevanceGate(min_similarity=0.4).admits([chunk(1, similarity=0.45)])


def test_fusion_keeps_the_evidence_of_both_searches() -> None:
    by_vector = [chunk(1, similarity=0.6), chunk(2, similarity=0.4)]
    by_text = [chunk(2, text_match=0.4, similarity=0.4), chunk(3, text_match=0.2, similarity=0.1)]
    fused = {c.chunk_id: c for c in reciprocal_rank_fusion([(1.0, by_vector), (1.0, by_text)], 5)}
    assert (fused[2].similarity, fused[2].text_match) == (0.4, 0.4)
    assert (fused[1].similarity, fused[1].text_match) == (0.6, None)
    assert evidence(list(fused.values())) == evidence([chunk(0, similarity=0.6, text_match=0.4)])
