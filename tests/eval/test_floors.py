"""`make test` fails when retrieval falls below the floor, and names what fell."""

from __future__ import annotations

import pytest

from app.rag.query import RetrievalMode
from scripts.eval.floors import FLOORS, below_floors
from scripts.eval.golden import Scores
from scripts.eval.harness import Configuration, ModeResult, Result

pytestmark = pytest.mark.unit


def _result(hit5: float, mrr: float) -> Result:
    scores = Scores(119, {1: 0.5, 3: 0.8, 5: hit5, 10: 0.97}, mrr, 0.8)
    modes = [ModeResult(mode, scores, scores, 40.0) for mode in RetrievalMode]
    return Result(Configuration("default"), 418, 1181, 100.0, modes)


def test_a_result_at_the_measured_numbers_passes() -> None:
    assert below_floors(_result(hit5=0.958, mrr=0.838)) == []


def test_each_metric_under_its_floor_is_named() -> None:
    below = below_floors(_result(hit5=0.90, mrr=0.80))
    assert "hybrid hit@5 0.900 < 0.93" in below
    assert "hybrid MRR 0.800 < 0.81" in below
    assert "hybrid served@5 hit 0.900 < 0.92" in below
    assert "vector hit@5 0.900 < 0.92" in below
    assert not any(line.startswith("text hit@5") for line in below)  # 0.90 is above text's 0.84


def test_every_mode_has_a_floor() -> None:
    assert set(FLOORS) == set(RetrievalMode)
