"""The relevance gate: does anything retrieved actually bear on the question?

Fusion ranks; it never says "nothing matches". Full-text search matches any passage sharing an
informative word with the question, and reciprocal-rank fusion gives the best of any list the same
score (1/61 ≈ 0.016 per list) whether it answers the question or not. So the gate reads the
evidence each passage carried out of its searches (``RetrievedChunk.similarity`` and
``text_rank``), never the fused score:

- the best cosine similarity of the passages to the question (vector and hybrid modes: the full-text
  query computes it for its own hits too), against ``RELEVANCE_MIN_SIMILARITY``;
- the best BM25 score of a full-text match, against ``RELEVANCE_MIN_TEXT_RANK``.

The passages are relevant when one of the signals clears its threshold. A threshold of 0 turns
its signal off, and a signal the search did not produce (no similarity in text mode) is not held
against the passages: with no signal left to judge, they are relevant. When none clears, the chat
service answers "nothing in your documents matches" without a model. The defaults were chosen on
the golden set's answerable and unanswerable questions (``scripts/eval/abstention.py``, README
"Abstention").
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from app.rag.query import RetrievedChunk
from app.settings import Settings


@dataclass(frozen=True)
class Evidence:
    """The strongest evidence among some retrieved passages (None: no passage had that kind)."""

    similarity: float | None
    text_rank: float | None


@dataclass(frozen=True)
class RelevanceGate:
    min_similarity: float = 0.0
    min_text_rank: float = 0.0

    def admits(self, chunks: Sequence[RetrievedChunk]) -> bool:
        """Whether ``chunks`` hold a passage worth answering from: none at all never does."""
        if not chunks:
            return False
        best = evidence(chunks)
        checks = []
        if self.min_similarity > 0 and best.similarity is not None:
            checks.append(best.similarity >= self.min_similarity)
        if self.min_text_rank > 0 and best.text_rank is not None:
            checks.append(best.text_rank >= self.min_text_rank)
        return any(checks) if checks else True


def evidence(chunks: Sequence[RetrievedChunk]) -> Evidence:
    similarities = [c.similarity for c in chunks if c.similarity is not None]
    ranks = [c.text_rank for c in chunks if c.text_rank is not None]
    return Evidence(max(similarities, default=None), max(ranks, default=None))


def relevance_gate(settings: Settings) -> RelevanceGate:
    return RelevanceGate(settings.relevance_min_similarity, settings.relevance_min_text_rank)
