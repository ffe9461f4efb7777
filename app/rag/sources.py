"""The sources of an answer: the retrieved passages the prompt numbered, as clients see them."""

from __future__ import annotations

from dataclasses import dataclass, replace

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
    score: float
    snippet: str
    tags: list[str]
    cited: bool = False
    ocr: bool = False  # the passage was recognised by OCR (a scan, an image), not extracted


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
    )


def mark_cited(sources: list[Source], answer: str) -> tuple[list[Source], list[int]]:
    """The sources with ``cited`` set from the answer's ``[n]`` markers, and those numbers."""
    cited = cited_numbers(answer, len(sources))
    return [replace(s, cited=s.number in cited) for s in sources], cited
