"""Sentence-aware chunking with overlap, one page at a time so every chunk keeps its page number.

Ingestion counts tokens with the embedding model's own WordPiece tokenizer, so a chunk of
``CHUNK_MAX_TOKENS`` (plus its context line) fits the local model's 256-token window and no tail
of it goes unembedded; ``estimate_tokens`` (words and punctuation marks) is the dependency-free
default. Both counts are additive over whitespace-separated words, which keeps cutting a very long
sentence linear in its length.
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
    context: str = ""  # the document title and the page's heading (``chunk_context``)
    ocr: bool = False  # the page's text was recognised by OCR
    start: int = 0  # ``text`` is the page's text[start:end]
    end: int = 0

    @property
    def embedding_input(self) -> str:
        return embedding_input(self.context, self.text)


def embedding_input(context: str, text: str) -> str:
    """What the model embeds (and full-text search indexes) for a chunk: its context line, then
    its text. Passages shown to the model and to clients are the text alone."""
    return f"{context}\n{text}" if context else text


_FILE_SUFFIX = re.compile(r"\.(?:pdf|docx|txt|md|markdown|mdown|html?)$", re.IGNORECASE)
_HEADING = re.compile(r"^\s*#{1,6}\s+(.+)")
CONTEXT_MAX_CHARS = 200


def chunk_context(title: str, page_text: str) -> str:
    """A chunk's context: the document title (without a file extension) and, when the page opens
    with a Markdown heading (parsed HTML, DOCX and Markdown sections do), that heading."""
    parts = [_FILE_SUFFIX.sub("", title.strip())]
    heading = _HEADING.match(page_text)
    if heading and heading.group(1).strip().lower() not in parts[0].lower():
        parts.append(heading.group(1).strip())
    return " — ".join(part for part in parts if part)[:CONTEXT_MAX_CHARS]


def split_sentences(text: str) -> list[str]:
    return [text[start:end] for start, end in sentence_spans(text)]


Span = tuple[int, int]  # [start, end) character offsets in a page's text


def sentence_spans(text: str) -> list[Span]:
    """Each sentence's span in ``text``, surrounding whitespace excluded."""
    spans: list[Span] = []
    position = 0
    for boundary in [*_SENTENCE_END.finditer(text), None]:
        stop = len(text) if boundary is None else boundary.start()
        piece = text[position:stop]
        if piece.strip():
            start = position + len(piece) - len(piece.lstrip())
            spans.append((start, position + len(piece.rstrip())))
        if boundary is not None:
            position = boundary.end()
    return spans


_WORD = re.compile(r"\S+")


def _split_long(text: str, span: Span, max_tokens: int, count: TokenCount) -> list[tuple[Span, int]]:
    """A sentence longer than a chunk is cut into word windows of at most ``max_tokens``."""
    pieces: list[tuple[Span, int]] = []
    first = last = -1
    tokens = 0
    for word in _WORD.finditer(text, span[0], span[1]):
        size = count(word.group())
        if first >= 0 and tokens + size > max_tokens:
            pieces.append(((first, last), tokens))
            first, tokens = -1, 0
        if first < 0:
            first = word.start()
        last = word.end()
        tokens += size
    if first >= 0:
        pieces.append(((first, last), tokens))
    return pieces


def chunk_text(
    text: str, *, max_tokens: int, overlap_tokens: int, count: TokenCount = estimate_tokens
) -> list[str]:
    """The chunks of ``chunk_spans``, as text."""
    spans = chunk_spans(text, max_tokens=max_tokens, overlap_tokens=overlap_tokens, count=count)
    return [text[start:end] for start, end in spans]


def chunk_spans(
    text: str, *, max_tokens: int, overlap_tokens: int, count: TokenCount = estimate_tokens
) -> list[Span]:
    """Greedy packing of whole sentences up to ``max_tokens``; each chunk after the first starts
    with the previous chunk's trailing sentences worth at most ``overlap_tokens``. A chunk is the
    page's text from its first sentence's start to its last sentence's end, so ``text[start:end]``
    is the passage exactly (the whitespace between its sentences as the page has it)."""
    units: list[tuple[Span, int]] = []
    for span in sentence_spans(text):
        size = count(text[span[0] : span[1]])
        if size > max_tokens:
            units.extend(_split_long(text, span, max_tokens, count))
        else:
            units.append((span, size))

    chunks: list[Span] = []
    window: list[tuple[Span, int]] = []
    window_tokens = 0
    fresh = 0  # units in the window that no earlier chunk contained
    for unit in units:
        if window and window_tokens + unit[1] > max_tokens:
            if fresh:
                chunks.append((window[0][0][0], window[-1][0][1]))
            window, window_tokens = _overlap_tail(window, overlap_tokens, max_tokens - unit[1])
            fresh = 0
        window.append(unit)
        window_tokens += unit[1]
        fresh += 1
    if window and fresh:
        chunks.append((window[0][0][0], window[-1][0][1]))
    return chunks


def _overlap_tail(
    window: list[tuple[Span, int]], overlap_tokens: int, room: int
) -> tuple[list[tuple[Span, int]], int]:
    budget = min(overlap_tokens, room)
    tail: list[tuple[Span, int]] = []
    total = 0
    for unit in reversed(window):
        if total + unit[1] > budget:
            break
        tail.insert(0, unit)
        total += unit[1]
    return tail, total


def chunk_pages(
    pages: Iterable[Page],
    *,
    max_tokens: int,
    overlap_tokens: int,
    count: TokenCount = estimate_tokens,
    title: str | None = None,
) -> list[ChunkDraft]:
    """Chunks of every page. With a ``title``, each chunk carries its context line and the chunk
    text gets the room the context leaves in ``max_tokens`` (at least half of it)."""
    drafts: list[ChunkDraft] = []
    for page in pages:
        context = chunk_context(title, page.text) if title is not None else ""
        room = max(max_tokens // 2, max_tokens - count(context)) if context else max_tokens
        spans = chunk_spans(
            page.text, max_tokens=room, overlap_tokens=min(overlap_tokens, room // 2), count=count
        )
        drafts.extend(
            ChunkDraft(
                page=page.number,
                position=index,
                text=page.text[start:end],
                page_sha256=page.sha256,
                context=context,
                ocr=page.ocr,
                start=start,
                end=end,
            )
            for index, (start, end) in enumerate(spans)
        )
    return drafts
