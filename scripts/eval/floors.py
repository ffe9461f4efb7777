"""The retrieval quality floor `make test` holds the service to (`python -m scripts.eval --check`).

Set from `make eval` on the shipped defaults (README "Retrieval quality") less a margin of about
three questions of the 119 for run-to-run noise (HNSW, float rounding): a change that ranks worse
than this fails the build.
"""

from __future__ import annotations

from app.rag.query import RetrievalMode
from scripts.eval.harness import Result

FLOORS: dict[RetrievalMode, dict[str, float]] = {
    RetrievalMode.vector: {"hit@5": 0.92, "MRR": 0.78},
    RetrievalMode.text: {"hit@5": 0.84, "MRR": 0.67},
    RetrievalMode.hybrid: {"hit@5": 0.93, "MRR": 0.81, "served@5 hit": 0.92},
}


def below_floors(result: Result, floors: dict[RetrievalMode, dict[str, float]] = FLOORS) -> list[str]:
    """Every metric of ``result`` under its floor, e.g. "hybrid MRR 0.790 < 0.81"; [] when none."""
    below = []
    for mode in result.modes:
        values = {"hit@5": mode.ranked.hits[5], "MRR": mode.ranked.mrr, "served@5 hit": mode.served5.hits[5]}
        for name, floor in floors.get(mode.mode, {}).items():
            if values[name] < floor:
                below.append(f"{mode.mode.value} {name} {values[name]:.3f} < {floor}")
    return below
