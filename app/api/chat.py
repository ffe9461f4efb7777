"""POST /api/v1/chat: JSON answer, or Server-Sent Events with ``stream: true`` /
``Accept: text/event-stream``."""

from __future__ import annotations

import json
import uuid
from dataclasses import asdict
from typing import Annotated, Any

from fastapi import APIRouter, Request
from fastapi.responses import StreamingResponse
from pydantic import BaseModel, ConfigDict, Field, field_validator

from app.api.asking import ChatEntryDep
from app.chat.request import AskRequest
from app.chat.types import ChatAnswer, ChatEvent, DeltaEvent, DoneEvent, ErrorEvent
from app.memory.service import SessionId
from app.rag.query import RetrievalFilters, RetrievalMode
from app.security.text import PlainText

router = APIRouter(prefix="/api/v1", tags=["chat"])

MAX_QUESTION_CHARS = 4000


class ChatFilters(BaseModel):
    model_config = ConfigDict(extra="forbid")

    tags: list[Annotated[PlainText, Field(min_length=1, max_length=64)]] = Field(
        default_factory=list, max_length=20
    )
    document_ids: list[uuid.UUID] = Field(default_factory=list, max_length=50)


class ChatBody(BaseModel):
    model_config = ConfigDict(extra="forbid")

    question: PlainText = Field(min_length=1, max_length=MAX_QUESTION_CHARS)
    session_id: SessionId | None = None
    model: PlainText | None = Field(default=None, max_length=200)
    temperature: float | None = Field(default=None, ge=0, le=2)
    max_tokens: int | None = Field(default=None, ge=1, le=4096)
    top_k: int = Field(default=5, ge=1, le=20)
    filters: ChatFilters = Field(default_factory=ChatFilters)
    mode: RetrievalMode | None = None
    vector_weight: float | None = Field(default=None, ge=0, le=10)
    text_weight: float | None = Field(default=None, ge=0, le=10)
    stream: bool = False

    @field_validator("question")
    @classmethod
    def _not_blank(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("the question is empty")
        return value.strip()

    def ask(self) -> AskRequest:
        return AskRequest(
            question=self.question,
            session_id=self.session_id,
            model=self.model,
            temperature=self.temperature,
            max_tokens=self.max_tokens,
            top_k=self.top_k,
            filters=RetrievalFilters(
                tags=tuple(self.filters.tags), document_ids=tuple(self.filters.document_ids)
            ),
            mode=self.mode,
            vector_weight=self.vector_weight,
            text_weight=self.text_weight,
        )


def _sse(event: str, data: dict[str, Any]) -> bytes:
    return f"event: {event}\ndata: {json.dumps(data, separators=(',', ':'))}\n\n".encode()


def _render(event: ChatEvent) -> bytes:
    if isinstance(event, DeltaEvent):
        return _sse("delta", {"text": event.text})
    if isinstance(event, DoneEvent):
        return _sse("done", asdict(event))
    if isinstance(event, ErrorEvent):
        return _sse("error", asdict(event))
    return _sse(
        "sources",
        {"sources": [s.to_dict() for s in event.sources], "retrieval_query": event.retrieval_query},
    )


def _wants_stream(body: ChatBody, request: Request) -> bool:
    return body.stream or "text/event-stream" in request.headers.get("accept", "")


@router.post(
    "/chat",
    response_model=ChatAnswer,
    summary="Ask a question about your documents",
    responses={200: {"content": {"text/event-stream": {}}}},
)
async def chat(body: ChatBody, request: Request, entry: ChatEntryDep) -> ChatAnswer | StreamingResponse:
    admitted = await entry.admit(body.ask())
    if not _wants_stream(body, request):
        return await entry.answer(admitted)
    return await entry.stream(admitted, _render)
