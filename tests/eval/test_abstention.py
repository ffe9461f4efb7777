"""The unanswerable questions are what they claim, and the abstention rates and floors are right."""

from __future__ import annotations

import json
import uuid

import pytest

from app.rag.query import RetrievedChunk
from app.rag.relevance import RelevanceGate
from scripts.eval.abstention import AbstentionResult, Asked, below_floors, load_unanswerable
from scripts.eval.golden import EVAL_DIR, load

pytestmark = pytest.mark.unit


def test_the_unanswerable_set_is_large_distinct_and_explained() -> None:
    unanswerable = load_unanswerable("sqlite")
    assert len(unanswerable) >= 30
    assert len({qid for qid, _ in unanswerable}) == len(unanswerable)
    answerable = {q.text for q in load("sqlite").questions}
    assert not answerable & {text for _, text in unanswerable}
    rows = [
        json.loads(line) for line in (EVAL_DIR / "sqlite" / "unanswerable.jsonl").read_text().splitlines()
    ]
    assert all(row["note"].strip() for row in rows)  # why no page answers it


def chunk(similarity: float, text_match: float) -> RetrievedChunk:
    return RetrievedChunk(
        1, uuid.uuid4(), 1, "t", 1, "x", (), 0.03, similarity=similarity, text_match=text_match
    )


def asked(qid: str, answerable: bool, abstained: bool, similarity: float, hit5: bool = True) -> Asked:
    return Asked(qid, answerable, abstained, hit5 and answerable, (chunk(similarity, 0.3),))


RESULT = AbstentionResult(
    RelevanceGate(0.35, 0.1),
    (
        asked("u1", False, True, 0.2),
        asked("u2", False, False, 0.5),
        asked("q1", True, False, 0.6),
        asked("q2", True, False, 0.4, hit5=False),
        asked("q3", True, True, 0.3),
        asked("q4", True, False, 0.7),
    ),
)


def test_rates_count_the_service_answers_and_a_swept_gate_rejudges_the_same_passages() -> None:
    assert RESULT.rates() == {
        "unanswerable abstained": 0.5,
        "answerable wrongly abstained": 0.25,
        "answerable hit@5": 0.5,  # q2 missed, q3 refused
    }
    stricter = RESULT.rates(RelevanceGate(0.55, 0.1))
    assert stricter["unanswerable abstained"] == 1.0
    assert stricter["answerable wrongly abstained"] == 0.5


def test_every_rate_past_its_floor_is_named() -> None:
    assert below_floors(RESULT) == [
        "answerable hit@5 0.500 < 0.92",
        "answerable wrongly abstained 0.250 > 0.02",
    ]
