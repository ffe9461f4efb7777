"""What a retrieval asks for and what it returns."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from enum import StrEnum


class RetrievalMode(StrEnum):
    vector = "vector"
    text = "text"
    hybrid = "hybrid"


@dataclass(frozen=True)
class RetrievalFilters:
    tags: tuple[str, ...] = ()
    document_ids: tuple[uuid.UUID, ...] = ()


@dataclass(frozen=True)
class RetrievalQuery:
    tenant_id: uuid.UUID
    text: str
    vector: Sequence[float] | None
    top_k: int = 5
    mode: RetrievalMode = RetrievalMode.hybrid
    filters: RetrievalFilters = field(default_factory=RetrievalFilters)
    vector_weight: float = 1.0
    text_weight: float = 1.0
    ef_search: int = 100
    min_similarity: float = 0.0  # vector hits below this cosine similarity are not evidence
    # The caller's grants (app.auth.access): only documents with an empty access list or one that
    # shares a grant are searched, in the SQL. None: every document of the tenant (an admin).
    access: tuple[str, ...] | None = None
    # The question's vector while it is still being computed (``vector`` None): a search runs the
    # statements that do not need it first, so the embedding and the database overlap.
    pending_vector: asyncio.Future[tuple[float, ...]] | None = None

    @property
    def has_vector(self) -> bool:
        return self.vector is not None or self.pending_vector is not None

    async def with_vector(self) -> RetrievalQuery:
        """This query with its vector, once computed."""
        if self.pending_vector is None:
            return self
        return replace(self, vector=await self.pending_vector, pending_vector=None)


@dataclass(frozen=True)
class RetrievedChunk:
    chunk_id: int
    document_id: uuid.UUID
    version: int
    title: str
    page: int
    text: str
    tags: tuple[str, ...]
    score: float
    ocr: bool = False  # the page's text was recognised by OCR, not extracted
    # The evidence behind the rank, kept through fusion and reranking (``app.rag.relevance``):
    similarity: float | None = None  # cosine similarity to the question (None without a vector)
    # BM25 of the full-text match over the most the question's terms could score, 0 to 1 (None: no match)
    text_match: float | None = None
    start: int | None = None  # the passage's character span in its page's text (None: older rows)
    end: int | None = None
    # Worked out once at ingestion (None: a chunk stored before revision 0013, worked out per use):
    text_tokens: int | None = None  # WordPiece tokens of ``text`` as a prompt quotes it
    injection_flags: tuple[str, ...] | None = None  # ``detect_injection(text)``
