"""Sentence-aware chunking with overlap, one page at a time so every chunk keeps its page number.

Tokens are counted with a cheap, deterministic estimate (words and punctuation marks), which tracks
WordPiece counts closely for prose; ``CHUNK_MAX_TOKENS`` defaults well under the local model's
256-token window to leave room for the difference.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from app.documents.parsing import Page

TokenCount = Callable[[str], int]

_TOKEN = re.compile(r"\w+|[^\w\s]")
# A sentence ends at . ! ? (optionally followed by quotes/brackets) before whitespace, or at a
# blank line / list item boundary.
_SENTENCE_END = re.compile(r"(?<=[.!?])[\"')\]]*\s+|\n\s*\n|\n(?=\s*(?:[-*+] |\d+[.)] |#))")


def estimate_tokens(text: str) -> int:
    return len(_TOKEN.findall(text))


@dataclass(frozen=True)
class ChunkDraft:
    page: int
    position: int  # order within the page, from 0
    text: str
    page_sha256: str


def split_sentences(text: str) -> list[str]:
    return [part.strip() for part in _SENTENCE_END.split(text) if part and part.strip()]


def _split_long(sentence: str, max_tokens: int, count: TokenCount) -> list[str]:
    """A sentence longer than a chunk is cut into word windows of at most ``max_tokens``."""
    words = sentence.split()
    pieces: list[str] = []
    current: list[str] = []
    for word in words:
        if current and count(" ".join([*current, word])) > max_tokens:
            pieces.append(" ".join(current))
            current = []
        current.append(word)
    if current:
        pieces.append(" ".join(current))
    return pieces


def chunk_text(
    text: str, *, max_tokens: int, overlap_tokens: int, count: TokenCount = estimate_tokens
) -> list[str]:
    """Greedy packing of whole sentences up to ``max_tokens``; each chunk after the first starts
    with the previous chunk's trailing sentences worth at most ``overlap_tokens``."""
    units: list[tuple[str, int]] = []
    for sentence in split_sentences(text):
        size = count(sentence)
        if size > max_tokens:
            units.extend((piece, count(piece)) for piece in _split_long(sentence, max_tokens, count))
        else:
            units.append((sentence, size))

    chunks: list[str] = []
    window: list[tuple[str, int]] = []
    window_tokens = 0
    fresh = 0  # units in the window that no earlier chunk contained
    for unit in units:
        if window and window_tokens + unit[1] > max_tokens:
            if fresh:
                chunks.append(" ".join(part for part, _ in window))
            window, window_tokens = _overlap_tail(window, overlap_tokens, max_tokens - unit[1])
            fresh = 0
        window.append(unit)
        window_tokens += unit[1]
        fresh += 1
    if window and fresh:
        chunks.append(" ".join(part for part, _ in window))
    return chunks


def _overlap_tail(
    window: list[tuple[str, int]], overlap_tokens: int, room: int
) -> tuple[list[tuple[str, int]], int]:
    budget = min(overlap_tokens, room)
    tail: list[tuple[str, int]] = []
    total = 0
    for unit in reversed(window):
        if total + unit[1] > budget:
            break
        tail.insert(0, unit)
        total += unit[1]
    return tail, total


def chunk_pages(
    pages: Iterable[Page], *, max_tokens: int, overlap_tokens: int, count: TokenCount = estimate_tokens
) -> list[ChunkDraft]:
    drafts: list[ChunkDraft] = []
    for page in pages:
        texts = chunk_text(page.text, max_tokens=max_tokens, overlap_tokens=overlap_tokens, count=count)
        drafts.extend(
            ChunkDraft(page=page.number, position=index, text=text, page_sha256=page.sha256)
            for index, text in enumerate(texts)
        )
    return drafts
