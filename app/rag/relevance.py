"""The relevance gate: does anything retrieved actually bear on the question?

Fusion ranks; it never says "nothing matches". Full-text search matches any passage sharing an
informative word with the question, and reciprocal-rank fusion gives the best of any list the same
score (1/61 ≈ 0.016 per list) whether it answers the question or not. So the gate reads the
evidence each passage carried out of its searches (``RetrievedChunk.similarity`` and
``text_match``), never the fused score:

- the best cosine similarity of the passages to the question (the full-text query computes it for
  its own hits too), against ``RELEVANCE_MIN_SIMILARITY``;
- the best text match: BM25 over the most the question's terms could score (0 to 1, whatever the
  corpus size), against ``RELEVANCE_MIN_TEXT_MATCH``.

Each signal the retrieval mode searched must clear its threshold (hybrid: both; vector: the
similarity; text: the text match); a threshold of 0 turns its signal off, and a signal no passage
carries (no vector, no full-text match) is not judged. When a signal falls short, the chat service answers
"nothing in your documents matches" without a model. The defaults were chosen on the golden set's
answerable and unanswerable questions (``scripts/eval/abstention.py``, README "Abstention").
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from app.rag.query import RetrievalMode, RetrievedChunk
from app.settings import Settings


@dataclass(frozen=True)
class Evidence:
    """The strongest evidence among some retrieved passages (None: no passage had that kind)."""

    similarity: float | None
    text_match: float | None


@dataclass(frozen=True)
class RelevanceGate:
    min_similarity: float = 0.0
    min_text_match: float = 0.0

    def admits(self, chunks: Sequence[RetrievedChunk], mode: RetrievalMode = RetrievalMode.hybrid) -> bool:
        """Whether ``chunks``, retrieved in ``mode``, hold a passage worth answering from: none at
        all never does."""
        if not chunks:
            return False
        best = evidence(chunks)
        judged = mode is not RetrievalMode.text and best.similarity is not None
        if judged and (best.similarity or 0.0) < self.min_similarity:
            return False
        if mode is not RetrievalMode.vector and best.text_match is not None:
            return best.text_match >= self.min_text_match
        return True


def evidence(chunks: Sequence[RetrievedChunk]) -> Evidence:
    similarities = [c.similarity for c in chunks if c.similarity is not None]
    ranks = [c.text_match for c in chunks if c.text_match is not None]
    return Evidence(max(similarities, default=None), max(ranks, default=None))


def relevance_gate(settings: Settings) -> RelevanceGate:
    return RelevanceGate(settings.relevance_min_similarity, settings.relevance_min_text_match)
