"""The last link: answers by quoting the retrieved passages that best match the question.

It needs no model and no network, so the offline default still answers something true, with the
same ``[n]`` citations the prompt uses.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator

from app.llm.errors import NothingToAnswer
from app.llm.provider import Availability
from app.llm.types import ChatRequest, Generation, Passage, ProviderChunk, Usage

EXTRACTIVE = "extractive"
MODEL = "extractive-v1"
MAX_QUOTES = 3
MAX_QUOTE_CHARS = 400

_WORD = re.compile(r"[^\W_]+", re.UNICODE)
_SENTENCE = re.compile(r"(?<=[.!?])\s+")
_STOPWORDS = frozenset(
    [
        "a",
        "an",
        "and",
        "are",
        "as",
        "at",
        "be",
        "by",
        "can",
        "de",
        "der",
        "die",
        "do",
        "does",
        "for",
        "from",
        "had",
        "has",
        "have",
        "how",
        "i",
        "if",
        "in",
        "is",
        "it",
        "its",
        "la",
        "le",
        "of",
        "on",
        "or",
        "our",
        "that",
        "the",
        "their",
        "there",
        "these",
        "this",
        "to",
        "was",
        "we",
        "were",
        "what",
        "when",
        "where",
        "which",
        "who",
        "why",
        "will",
        "with",
        "you",
        "your",
    ]
)


def terms(text: str) -> set[str]:
    return {
        w for w in (m.group(0).lower() for m in _WORD.finditer(text)) if w not in _STOPWORDS and len(w) > 1
    }


def best_sentences(passage: Passage, wanted: set[str]) -> tuple[int, str]:
    """The passage's score (question terms it covers) and its most relevant sentences."""
    sentences = [s.strip() for s in _SENTENCE.split(passage.text.strip()) if s.strip()]
    scored = sorted(
        ((len(terms(sentence) & wanted), index, sentence) for index, sentence in enumerate(sentences)),
        key=lambda item: (-item[0], item[1]),
    )
    chosen = sorted(scored[:2], key=lambda item: item[1]) if scored else []
    quote = " ".join(sentence for _, _, sentence in chosen)
    if len(quote) > MAX_QUOTE_CHARS:
        quote = quote[: MAX_QUOTE_CHARS - 1].rsplit(" ", 1)[0] + "…"
    return len(terms(passage.text) & wanted), quote


def source_label(passage: Passage) -> str:
    label = passage.title or "untitled"
    return f"{label}, p. {passage.page}" if passage.page is not None else label


def extractive_answer(request: ChatRequest) -> str:
    if not request.passages:
        raise NothingToAnswer("there are no retrieved passages to quote")
    wanted = terms(request.question)
    ranked = sorted(
        ((*best_sentences(p, wanted), order, p) for order, p in enumerate(request.passages)),
        key=lambda item: (-item[0], item[2]),  # retrieval order breaks ties
    )
    relevant = [item for item in ranked if item[0] > 0] or ranked[:1]
    quotes = [
        f"> {quote} [{p.number}] ({source_label(p)})" for _, quote, _, p in relevant[:MAX_QUOTES] if quote
    ]
    if not quotes:
        raise NothingToAnswer("the retrieved passages are empty")
    return "No language model is available right now; these passages from your documents match:\n\n" + (
        "\n\n".join(quotes)
    )


class ExtractiveAnswerer:
    @property
    def name(self) -> str:
        return EXTRACTIVE

    @property
    def default_model(self) -> str:
        return MODEL

    async def warm_up(self) -> None:
        return None

    def availability(self) -> Availability:
        return Availability.ready()

    async def complete(self, request: ChatRequest, model: str) -> Generation:
        text = extractive_answer(request)
        return Generation(text=text, model=MODEL, usage=Usage(completion_tokens=len(text.split())))

    async def stream(self, request: ChatRequest, model: str) -> AsyncIterator[ProviderChunk]:
        text = extractive_answer(request)
        for piece in re.findall(r"\S+\s*", text):
            yield piece
        yield Usage(completion_tokens=len(text.split()))

    async def aclose(self) -> None:
        return None
