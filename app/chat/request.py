"""The one request every surface hands the chat pipeline.

``/api/v1/chat``, ``/v1/chat/completions`` and the MCP tools each parse their own wire format into
an ``AskRequest``: what the caller said, with None wherever they left a choice to the service.
``AskRequest.resolve`` fills those in from the settings, in this one place, and gives the
``ChatInput`` the pipeline runs on (the MCP search tool runs only its retrieval stage on it)."""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field

from app.chat.types import ChatInput
from app.rag.prompt import Turn
from app.rag.query import RetrievalFilters, RetrievalMode
from app.settings import Settings

DEFAULT_TOP_K = 5


@dataclass(frozen=True)
class AskRequest:
    question: str
    session_id: str | uuid.UUID | None = None
    model: str | None = None
    temperature: float | None = None
    max_tokens: int | None = None
    top_k: int = DEFAULT_TOP_K
    filters: RetrievalFilters = field(default_factory=RetrievalFilters)
    mode: RetrievalMode | None = None  # None: RETRIEVAL_MODE
    vector_weight: float | None = None  # None: RETRIEVAL_VECTOR_WEIGHT
    text_weight: float | None = None  # None: RETRIEVAL_TEXT_WEIGHT
    # Earlier turns a stateless client sends itself; the last MEMORY_MAX_TURNS are kept.
    history: tuple[Turn, ...] = ()

    def resolve(self, settings: Settings) -> ChatInput:
        """The pipeline's input: the question stripped, every default taken from ``settings``."""
        return ChatInput(
            question=self.question.strip(),
            session_id=self.session_id,
            model=self.model,
            temperature=self.temperature,
            max_tokens=self.max_tokens,
            top_k=self.top_k,
            filters=self.filters,
            mode=self.mode or RetrievalMode(settings.retrieval_mode),
            vector_weight=settings.retrieval_vector_weight
            if self.vector_weight is None
            else self.vector_weight,
            text_weight=settings.retrieval_text_weight if self.text_weight is None else self.text_weight,
            history=self.history[-settings.memory_max_turns :],
        )
