"""What the MCP tools return (``app.api.mcp_server``): structured results, which the SDK also
publishes as each tool's output schema."""

from __future__ import annotations

from pydantic import BaseModel

from app.chat.types import ChatAnswer
from app.rag.query import RetrievedChunk
from app.rag.sources import readable_relevance

# --- results ----------------------------------------------------------------------------------


class Passage(BaseModel):
    document_id: str
    title: str
    version: int
    page: int
    score: float
    text: str
    tags: list[str]
    ocr: bool = False
    relevance: float | None = None  # cosine similarity to the query, 0 to 1
    start: int | None = None  # the passage's character span in the page's text
    end: int | None = None

    @classmethod
    def of(cls, chunk: RetrievedChunk) -> Passage:
        return cls(
            document_id=str(chunk.document_id),
            title=chunk.title,
            version=chunk.version,
            page=chunk.page,
            score=chunk.score,
            text=chunk.text,
            tags=list(chunk.tags),
            ocr=chunk.ocr,
            relevance=readable_relevance(chunk.similarity),
            start=chunk.start,
            end=chunk.end,
        )


class SearchResult(BaseModel):
    passages: list[Passage]


class AnswerSource(BaseModel):
    number: int
    document_id: str
    title: str
    version: int
    page: int
    score: float
    snippet: str
    cited: bool
    ocr: bool = False
    relevance: float | None = None  # cosine similarity to the question, 0 to 1
    start: int | None = None  # the passage's character span in the page's text
    end: int | None = None


class AskResult(BaseModel):
    answer: str
    sources: list[AnswerSource]
    session_id: str | None
    provider: str
    model: str
    cached: bool
    degraded: bool
    trace_id: str
    # What was searched: the question, or made standalone from the session's earlier turns.
    retrieval_query: str = ""

    @classmethod
    def of(cls, answer: ChatAnswer) -> AskResult:
        return cls(
            answer=answer.answer,
            sources=[
                AnswerSource(
                    number=s.number,
                    document_id=s.document_id,
                    title=s.title,
                    version=s.version,
                    page=s.page,
                    score=s.score,
                    snippet=s.snippet,
                    cited=s.cited,
                    ocr=s.ocr,
                    relevance=s.relevance,
                    start=s.start,
                    end=s.end,
                )
                for s in answer.sources
            ],
            session_id=answer.session_id,
            provider=answer.provider,
            model=answer.model,
            cached=answer.cached,
            degraded=answer.degraded,
            trace_id=answer.trace_id,
            retrieval_query=answer.retrieval_query,
        )


class DocumentSummary(BaseModel):
    id: str
    title: str
    path: str | None
    author: str | None
    tags: list[str]
    current_version: int | None
    updated_at: str


class DocumentList(BaseModel):
    documents: list[DocumentSummary]
    total: int
