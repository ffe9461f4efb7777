"""The golden set (pages and questions under eval/<corpus>/) and the ranking metrics.

A question's ranking is the list of distinct documents in the order the service's ``sources``
first name them, which is what a client of ``POST /api/v1/chat`` sees. Relevance is binary: a
document is relevant when its page is among the question's ``relevant`` pages.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

EVAL_DIR = Path(__file__).resolve().parents[2] / "eval"
CUTOFFS = (1, 3, 5, 10)


@dataclass(frozen=True)
class Page:
    id: str
    title: str
    text: str


@dataclass(frozen=True)
class Question:
    id: str
    text: str
    relevant: frozenset[str]


@dataclass(frozen=True)
class GoldenSet:
    name: str
    pages: tuple[Page, ...]
    questions: tuple[Question, ...]


def _jsonl(path: Path) -> list[dict[str, object]]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def load(name: str = "sqlite") -> GoldenSet:
    folder = EVAL_DIR / name
    pages = tuple(
        Page(id=str(row["id"]), title=str(row["title"]), text=str(row["text"]))
        for row in _jsonl(folder / "pages.jsonl")
    )
    questions = tuple(
        Question(id=str(row["id"]), text=str(row["question"]), relevant=frozenset(map(str, row["relevant"])))  # type: ignore[call-overload]
        for row in _jsonl(folder / "questions.jsonl")
    )
    return GoldenSet(name, pages, questions)


def distinct(ranked: Iterable[str]) -> list[str]:
    """The first occurrence of each item, in order."""
    seen: dict[str, None] = {}
    for item in ranked:
        seen.setdefault(item, None)
    return list(seen)


@dataclass(frozen=True)
class Scores:
    """Mean metrics over questions; ``hits[k]`` is hit@k."""

    questions: int
    hits: dict[int, float]
    mrr: float
    ndcg10: float


def score(rankings: Sequence[tuple[Sequence[str], frozenset[str]]]) -> Scores:
    """``rankings``: per question, its ranked page ids (distinct) and its relevant page ids."""
    hits = {k: 0.0 for k in CUTOFFS}
    mrr = ndcg = 0.0
    for ranked, relevant in rankings:
        first = next((rank for rank, page in enumerate(ranked, start=1) if page in relevant), None)
        for k in CUTOFFS:
            hits[k] += first is not None and first <= k
        mrr += 1.0 / first if first is not None else 0.0
        dcg = sum(
            1.0 / math.log2(rank + 1) for rank, page in enumerate(ranked[:10], start=1) if page in relevant
        )
        ideal = sum(1.0 / math.log2(rank + 1) for rank in range(1, min(len(relevant), 10) + 1))
        ndcg += dcg / ideal if ideal else 0.0
    n = max(1, len(rankings))
    return Scores(len(rankings), {k: v / n for k, v in hits.items()}, mrr / n, ndcg / n)
