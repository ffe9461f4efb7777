"""Conversation history: read it, or reset it.

``{session_id}`` is the client's session id (1-128 characters of ``[A-Za-z0-9._:-]``, or a UUID),
scoped to the caller. An admin reaches another principal's conversation of the tenant by its
``conversation_id`` (a UUID, returned with the history).
"""

from __future__ import annotations

import uuid

from fastapi import APIRouter, Response, status
from pydantic import BaseModel
from starlette.convertors import PathConvertor, register_url_convertor

from app.api.auth import ReaderPrincipal
from app.api.deps import MemoryDep, ReadSessionDep, SessionDep
from app.memory.service import SessionId, StoredMessage

router = APIRouter(prefix="/api/v1/sessions", tags=["sessions"])


class _RawSegmentConvertor(PathConvertor):
    """Captures everything up to the route's next literal, newlines and "/" (or "%2F") included,
    so any malformed id reaches validation and is a 422 ``invalid_session_id``: with ``{id}`` an
    id with "/" would be an unmatched route, and with ``{id:path}`` (``.*``) "test%0A" would be
    captured as "test"."""

    regex = r"[\s\S]*"


register_url_convertor("raw_session_id", _RawSegmentConvertor())


class SessionMessagesOut(BaseModel):
    session_id: str
    conversation_id: uuid.UUID
    messages: list[StoredMessage]


@router.get(
    "/{session_id:raw_session_id}/messages", response_model=SessionMessagesOut, summary="Conversation history"
)
async def session_messages(
    session_id: SessionId, principal: ReaderPrincipal, memory: MemoryDep, db: ReadSessionDep
) -> SessionMessagesOut:
    stored = await memory.messages(db, principal, session_id)
    return SessionMessagesOut(
        session_id=stored.session_id, conversation_id=stored.conversation_id, messages=stored.messages
    )


@router.delete(
    "/{session_id:raw_session_id}", status_code=status.HTTP_204_NO_CONTENT, summary="Reset a conversation"
)
async def reset_session(
    session_id: SessionId, principal: ReaderPrincipal, memory: MemoryDep, db: SessionDep
) -> Response:
    await memory.delete(db, principal, session_id)
    return Response(status_code=status.HTTP_204_NO_CONTENT)
