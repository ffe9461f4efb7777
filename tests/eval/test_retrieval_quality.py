"""The retrieval quality floor: the whole golden set (eval/sqlite: 418 pages, 119 paraphrased
questions) through the real service, as `make eval` runs it. A change that makes ranking worse
than these floors fails the build; the numbers it measured are printed either way."""

from __future__ import annotations

import pytest

from app.rag.embeddings import LocalEmbedder
from app.rag.query import RetrievalMode
from app.settings import Settings
from scripts.eval.golden import load
from scripts.eval.harness import Configuration, evaluate, table

pytestmark = [pytest.mark.integration, pytest.mark.pgvector]

# Measured with `make eval` on the shipped defaults (README "Retrieval quality"), less a margin
# of about two questions for run-to-run noise (HNSW, float rounding): hit@5 and MRR of the ranked
# documents, and what a client asking for five passages gets.
FLOORS = {
    RetrievalMode.vector: {"hit5": 0.92, "mrr": 0.78},
    RetrievalMode.text: {"hit5": 0.84, "mrr": 0.67},
    RetrievalMode.hybrid: {"hit5": 0.93, "mrr": 0.81, "served_hit5": 0.92},
}


@pytest.mark.timeout(1800)
async def test_ranking_stays_above_the_floors_on_the_golden_set(
    settings: Settings, embedder: LocalEmbedder
) -> None:
    result = await evaluate(settings, load("sqlite"), Configuration("default"), embedder=embedder)
    print("\n" + table([result]))
    measured = {mode.mode: mode for mode in result.modes}
    below = []
    for mode, floors in FLOORS.items():
        ranked, served = measured[mode].ranked, measured[mode].served5
        values = {"hit5": ranked.hits[5], "mrr": ranked.mrr, "served_hit5": served.hits[5]}
        below += [
            f"{mode.value} {name} {values[name]:.3f} < {floor}"
            for name, floor in floors.items()
            if values[name] < floor
        ]
    assert below == [], "retrieval quality regressed: " + "; ".join(below)
