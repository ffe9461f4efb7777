"""A chat turn once it is prepared, and how it ended.

A turn is either a ``FixedTurn``, answered without the router (a cache hit, or the "nothing
matches" answer), or a ``RoutedTurn``, whose prompt goes to the provider chain. Either ends in an
``Outcome``, which the one finishing step (``app.chat.finish``) records."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from enum import StrEnum

from app.cache.answers import CacheKey
from app.chat.types import ChatInput
from app.memory.service import TurnRecord
from app.rag.prompt import Prompt, Turn
from app.rag.sources import Source


class TurnStatus(StrEnum):
    ok = "ok"
    failed = "failed"  # degraded (the apology), or the stream broke
    cancelled = "cancelled"  # the client went away


@dataclass(frozen=True)
class Outcome:
    """The answer the client received, who made it, and how the turn ended."""

    text: str
    provider: str
    model: str
    usage: dict[str, int] | None
    status: TurnStatus
    cacheable: bool = False  # the chain says the answer may be served again
    cached: bool = False  # served from the answer cache

    @property
    def degraded(self) -> bool:
        return self.status is TurnStatus.failed


@dataclass(frozen=True)
class _Prepared:
    trace_id: str
    started: float
    cache_key: CacheKey | None
    history: list[Turn]
    sources: list[Source]
    # What was embedded and searched: the question, or a follow-up made standalone
    # (``app.chat.rewrite``); the question itself on a cache hit, where nothing was searched.
    retrieval_query: str = field(default="", kw_only=True)

    def elapsed_ms(self) -> float:
        return round((time.perf_counter() - self.started) * 1000, 2)


@dataclass(frozen=True)
class FixedTurn(_Prepared):
    """Answered without the router, and already finished (recorded) by the preparation: its
    ``sources`` and ``cited`` are as the finishing step marked them."""

    outcome: Outcome
    cited: list[int] = field(default_factory=list)


@dataclass(frozen=True)
class RoutedTurn(_Prepared):
    """The prompt the provider chain answers."""

    prompt: Prompt


PreparedTurn = FixedTurn | RoutedTurn


def turn_record(chat: ChatInput, outcome: Outcome, sources: list[Source], trace_id: str) -> TurnRecord:
    """What memory keeps of a turn: the question, and the answer with the sources as sent."""
    return TurnRecord(
        question=chat.question,
        answer=outcome.text,
        sources=[s.to_dict() for s in sources],
        status=outcome.status.value,
        provider=outcome.provider,
        model=outcome.model,
        trace_id=trace_id,
    )
