"""What the chat pipeline takes and gives: a ``ChatInput``, then a ``ChatAnswer`` or a stream of
``ChatEvent``s."""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field

from app.limits.budgets import Reservation
from app.rag.prompt import Turn
from app.rag.query import RetrievalFilters, RetrievalMode
from app.rag.sources import Source

NO_CONTEXT_ANSWER = (
    "I don't know from your documents: nothing in them matches this question. "
    "Try rephrasing it, or upload a document that covers it."
)


@dataclass(frozen=True)
class ChatInput:
    question: str
    # The client's session id (``app.memory.service.SessionId``); a UUID is read as its text.
    session_id: str | uuid.UUID | None = None
    model: str | None = None
    temperature: float | None = None
    max_tokens: int | None = None
    top_k: int = 5
    filters: RetrievalFilters = field(default_factory=RetrievalFilters)
    mode: RetrievalMode = RetrievalMode.hybrid
    vector_weight: float = 1.0
    text_weight: float = 1.0
    # Earlier turns a stateless client sends itself (the OpenAI-compatible surface); a stored
    # session's window replaces them when ``session_id`` is given.
    history: tuple[Turn, ...] = ()
    # False when the answer is made with the caller's own provider keys (``app.llm.caller_keys``):
    # the turn neither reads nor writes the shared answer cache. Another caller's cached answer
    # would not be what this caller asked their own provider for, and an answer made on their key
    # (with their model, quota and terms) is not the operator's to serve to anyone else.
    shared_cache: bool = True
    # The tokens reserved on the operator's token budgets for this request (``app.limits.budgets``),
    # settled when the turn finishes; None when no budget applies. ``operator_pays`` is False for
    # an answer made with the caller's own provider keys: no budget is drawn on, no usage recorded.
    reservation: Reservation | None = None
    operator_pays: bool = True

    @property
    def session(self) -> str | None:
        """The session id as memory, responses and traces use it (scoped by memory, not here)."""
        return None if self.session_id is None else str(self.session_id)


@dataclass(frozen=True)
class ChatAnswer:
    answer: str
    sources: list[Source]
    provider: str
    model: str
    cached: bool
    degraded: bool
    trace_id: str
    usage: dict[str, int] | None
    latency_ms: float
    session_id: str | None
    # What was embedded and searched: the question, or the follow-up made standalone.
    retrieval_query: str = ""


# --- stream events (rendered as SSE by the API layer) ---------------------------------------------


@dataclass(frozen=True)
class SourcesEvent:
    sources: list[Source]
    retrieval_query: str = ""


@dataclass(frozen=True)
class DeltaEvent:
    """Answer text, with the provider and model that produced it (a stream continued after a
    break has deltas of two providers; the OpenAI surface names each chunk's)."""

    text: str
    provider: str = ""
    model: str = ""


@dataclass(frozen=True)
class DoneEvent:
    provider: str
    model: str
    usage: dict[str, int] | None
    trace_id: str
    cached: bool
    degraded: bool
    cited: list[int]
    latency_ms: float
    session_id: str | None
    # The provider and model that finished an answer ``provider`` broke off part-way (else None).
    continued_by: dict[str, str] | None = None


@dataclass(frozen=True)
class ErrorEvent:
    code: str
    message: str
    trace_id: str


ChatEvent = SourcesEvent | DeltaEvent | DoneEvent | ErrorEvent
