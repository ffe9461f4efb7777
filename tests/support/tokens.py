"""A token counter for pure unit tests."""

from __future__ import annotations


class WhitespaceTokenCounter:
    """Deterministic stand-in for the WordPiece counter: one token per whitespace-separated word."""

    def count(self, text: str) -> int:
        return len(text.split())
