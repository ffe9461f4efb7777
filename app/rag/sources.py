"""The sources of an answer: the retrieved passages the prompt numbered, as clients see them."""

from __future__ import annotations

from dataclasses import dataclass, replace
from dataclasses import fields as dataclass_fields
from typing import Any

from app.rag.citations import cited_numbers
from app.rag.query import RetrievedChunk

SNIPPET_CHARS = 300


@dataclass(frozen=True)
class Source:
    number: int
    document_id: str
    version: int
    title: str
    page: int
    chunk_id: int
    score: float  # the rank score that ordered the passages (fusion / reranker): machine-only
    snippet: str
    tags: list[str]
    cited: bool = False
    ocr: bool = False  # the passage was recognised by OCR (a scan, an image), not extracted
    # What a person reads: the passage's cosine similarity to the question, 0 to 1 (None in text mode).
    relevance: float | None = None
    # The passage's character span in the page's text: page_text[start:end] is the passage (None
    # for passages stored before spans were kept).
    start: int | None = None
    end: int | None = None

    def to_dict(self) -> dict[str, Any]:
        """The source as JSON-ready fields: what ``dataclasses.asdict`` gives, without its deep
        copy of every value (its fields are flat; ``tags`` is copied as a new list)."""
        fields = {name: getattr(self, name) for name in _SOURCE_FIELDS}
        fields["tags"] = list(self.tags)
        return fields


_SOURCE_FIELDS = tuple(field.name for field in dataclass_fields(Source))


def readable_relevance(similarity: float | None) -> float | None:
    """A cosine similarity as a 0 to 1 relevance, 3 decimals (negative similarity reads as 0)."""
    return None if similarity is None else round(min(1.0, max(0.0, similarity)), 3)


def source_for(number: int, chunk: RetrievedChunk) -> Source:
    snippet = chunk.text if len(chunk.text) <= SNIPPET_CHARS else chunk.text[: SNIPPET_CHARS - 1] + "…"
    return Source(
        number=number,
        document_id=str(chunk.document_id),
        version=chunk.version,
        title=chunk.title,
        page=chunk.page,
        chunk_id=chunk.chunk_id,
        score=round(chunk.score, 6),
        snippet=snippet,
        tags=list(chunk.tags),
        ocr=chunk.ocr,
        relevance=readable_relevance(chunk.similarity),
        start=chunk.start,
        end=chunk.end,
    )


def mark_cited(sources: list[Source], answer: str) -> tuple[list[Source], list[int]]:
    """The sources with ``cited`` set from the answer's ``[n]`` markers, and those numbers."""
    cited = cited_numbers(answer, len(sources))
    return [replace(s, cited=s.number in cited) for s in sources], cited
