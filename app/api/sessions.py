"""Conversation history: read it, or reset it."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from fastapi import APIRouter, Response, status
from pydantic import BaseModel

from app.api.deps import ResourcesDep
from app.auth.dependencies import ReaderPrincipal
from app.memory.service import ConversationMemory

router = APIRouter(prefix="/api/v1/sessions", tags=["sessions"])


class MessageOut(BaseModel):
    id: int
    role: str
    content: str
    sources: list[dict[str, Any]]
    status: str
    provider: str | None
    model: str | None
    trace_id: str | None
    created_at: datetime


class SessionMessagesOut(BaseModel):
    session_id: uuid.UUID
    messages: list[MessageOut]


def _memory(resources: ResourcesDep) -> ConversationMemory:
    return resources.memory


@router.get("/{session_id}/messages", response_model=SessionMessagesOut, summary="Conversation history")
async def session_messages(
    session_id: uuid.UUID, principal: ReaderPrincipal, resources: ResourcesDep
) -> SessionMessagesOut:
    stored = await _memory(resources).messages(principal, session_id)
    return SessionMessagesOut(
        session_id=session_id, messages=[MessageOut.model_validate(m.__dict__) for m in stored]
    )


@router.delete("/{session_id}", status_code=status.HTTP_204_NO_CONTENT, summary="Reset a conversation")
async def reset_session(
    session_id: uuid.UUID, principal: ReaderPrincipal, resources: ResourcesDep
) -> Response:
    await _memory(resources).delete(principal, session_id)
    return Response(status_code=status.HTTP_204_NO_CONTENT)
