"""Conversation memory.

PostgreSQL (`conversations`, `messages`) is the record; Redis keeps the last ``MEMORY_MAX_TURNS``
answered turns of each session for speed. A Redis flush or outage loses nothing: the window is
rebuilt from PostgreSQL on the next read.

Session ids are chosen by the client (``SessionId``: 1-128 characters of ``[A-Za-z0-9._:-]``, or a
UUID) and scoped to the caller: a conversation is found by (tenant, principal, client id), so two
principals using "test" have two conversations. Each conversation also has an internal UUID
(``conversations.id``; equal to the session id for conversations started with a UUID). A UUID
session id that is not one of the caller's own client ids names a conversation by that internal
id: its owner may use it, an admin of the tenant may read or reset it, anyone else gets 404, so
ids cannot be probed. Redis windows are keyed by the internal id, never by the client's string.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Annotated, Any, Protocol

from pydantic import AfterValidator, StringConstraints
from sqlalchemy.ext.asyncio import AsyncSession

from app.auth.access import UNRESTRICTED, AccessSet, tenant_restricts_documents
from app.auth.principal import Principal, Role
from app.db.models import Conversation, Message
from app.errors import NotFoundError
from app.memory.access import hidden_message_ids
from app.memory.repository import ConversationRepository
from app.memory.window import WindowStore
from app.rag.prompt import Turn

SESSION_ID_MAX_CHARS = 128
SESSION_ID_PATTERN = r"^[A-Za-z0-9._:-]+$"
_UUID_FORMS = re.compile(
    r"(?:urn:uuid:)?(?:[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}|[0-9a-f]{32})",
    re.IGNORECASE,
)


_SESSION_ID = re.compile(rf"[A-Za-z0-9._:-]{{1,{SESSION_ID_MAX_CHARS}}}")


def canonical_session_id(value: str) -> str:
    """A UUID (in any form a UUID field accepted before: upper case, no hyphens, ``urn:uuid:``) as
    its canonical text, so it keeps naming the same conversation; any other id unchanged."""
    if not _SESSION_ID.fullmatch(value):  # also where a ``$`` pattern would let "id\n" through
        raise ValueError("a session id is 1-128 characters of A-Z a-z 0-9 . _ : -")
    if _UUID_FORMS.fullmatch(value):
        return str(uuid.UUID(value))
    return value


def _as_uuid(session_id: str) -> uuid.UUID | None:
    try:
        return uuid.UUID(session_id) if _UUID_FORMS.fullmatch(session_id) else None
    except ValueError:
        return None


SessionId = Annotated[
    str,
    StringConstraints(min_length=1, max_length=SESSION_ID_MAX_CHARS, pattern=SESSION_ID_PATTERN),
    AfterValidator(canonical_session_id),
]
"""A client-chosen session id, for request bodies and paths (422 ``invalid_session_id`` else)."""


class SessionNotFoundError(NotFoundError):
    code = "session_not_found"
    title = "Session not found"


@dataclass(frozen=True)
class StoredMessage:
    id: int
    role: str
    content: str
    sources: list[dict[str, Any]]
    status: str
    provider: str | None
    model: str | None
    trace_id: str | None
    created_at: datetime


@dataclass(frozen=True)
class SessionHistory:
    conversation_id: uuid.UUID
    session_id: str
    messages: list[StoredMessage]


@dataclass(frozen=True)
class TurnRecord:
    """A question and the answer the client received, with how it ended ("ok", "failed" or
    "cancelled")."""

    question: str
    answer: str
    sources: list[dict[str, Any]]
    status: str
    provider: str | None
    model: str | None
    trace_id: str | None


@dataclass(frozen=True)
class RecordedTurn:
    """A turn written in a unit of work; ``ConversationMemory.publish`` it once that commits."""

    conversation_id: uuid.UUID
    turn: TurnRecord


class AnswerRecords(Protocol):
    """Where else a conversation's answers are kept (the answer ledger, for feedback): a reset
    forgets them there too."""

    async def forget(self, tenant_id: uuid.UUID, trace_ids: Sequence[str]) -> None: ...


class _NoAnswerRecords:
    async def forget(self, tenant_id: uuid.UUID, trace_ids: Sequence[str]) -> None:
        return None


class ConversationMemory:
    """Every method that reads or writes PostgreSQL takes the caller's session (its unit of work)
    and never commits; Redis is touched only for the window, and never before a write commits."""

    def __init__(self, window: WindowStore, *, max_turns: int, answers: AnswerRecords | None = None) -> None:
        self._window = window
        self._max_turns = max_turns
        self._answers: AnswerRecords = answers or _NoAnswerRecords()

    async def _owned(
        self, db: AsyncSession, principal: Principal, session_id: str, *, admin_may_read: bool
    ) -> Conversation | None:
        """The caller's conversation with this client id; else, for a UUID, the conversation with
        that internal id if the caller owns it (or may read it as the tenant's admin). None when
        nothing answers to the id; 404 when it names a conversation the caller may not use."""
        conversations = ConversationRepository(db)
        row = await conversations.by_client_id(principal.tenant_id, principal.id, session_id)
        if row is not None:
            return row
        internal = _as_uuid(session_id)
        if internal is None:
            return None
        row = await conversations.by_id(internal)
        if row is None:
            return None
        same_tenant = row.tenant_id == principal.tenant_id
        owner = same_tenant and row.principal_id == principal.id
        if owner or (admin_may_read and same_tenant and principal.role is Role.admin):
            return row
        raise SessionNotFoundError(f"no session {session_id}")

    async def window(self, db: AsyncSession, principal: Principal, session_id: str) -> list[Turn]:
        """The last answered turns of a session the principal owns; [] for a new session id."""
        row = await self._owned(db, principal, session_id, admin_may_read=False)
        if row is None or row.deleted_at is not None:
            return []
        access = AccessSet.of(principal)
        # A caller who may not see every document gets a window checked against the documents'
        # access lists now, in PostgreSQL; while the tenant restricts none, the Redis copy serves.
        if access.restricted and await tenant_restricts_documents(db, row.tenant_id):
            return await self._load_window(db, row.id, access, row.tenant_id)
        cached = await self._window.read(row.id)
        if cached is not None:
            return cached
        turns = await self._load_window(db, row.id)
        await self._window.write(row.id, turns)
        return turns

    async def _load_window(
        self,
        db: AsyncSession,
        conversation_id: uuid.UUID,
        access: AccessSet = UNRESTRICTED,
        tenant_id: uuid.UUID | None = None,
    ) -> list[Turn]:
        messages = await ConversationRepository(db).latest_messages(conversation_id, self._max_turns * 4)
        hidden = set() if tenant_id is None else await hidden_message_ids(db, tenant_id, access, messages)
        turns: list[Turn] = []
        pending_question: str | None = None
        for message in messages:
            if message.id in hidden:
                continue
            if message.role == "user":
                pending_question = message.content
            elif pending_question is not None:
                if message.status == "ok":
                    turns.append(Turn(pending_question, message.content))
                pending_question = None
        return turns[-self._max_turns :]

    async def record_turn(
        self, db: AsyncSession, principal: Principal, session_id: str, turn: TurnRecord
    ) -> RecordedTurn:
        """Write a question and its answer in ``db``'s transaction; ``publish`` the result after
        the commit to extend the Redis window."""
        conversations = ConversationRepository(db)
        row = await self._owned(db, principal, session_id, admin_may_read=False)
        if row is None:
            # A UUID session id becomes the internal id too (as before client ids existed);
            # a concurrent first turn with the same id makes this insert a no-op.
            await conversations.create_if_absent(
                _as_uuid(session_id) or uuid.uuid4(), principal.tenant_id, principal.id, session_id
            )
            row = await self._owned(db, principal, session_id, admin_may_read=False)
            if row is None:  # unreachable: whatever the insert collided with answers to the id
                raise SessionNotFoundError(f"no session {session_id}")
        row.deleted_at = None
        row.last_active_at = datetime.now(UTC)
        conversations.add_messages(
            [
                Message(
                    conversation_id=row.id,
                    tenant_id=principal.tenant_id,
                    role="user",
                    content=turn.question,
                    trace_id=turn.trace_id,
                ),
                Message(
                    conversation_id=row.id,
                    tenant_id=principal.tenant_id,
                    role="assistant",
                    content=turn.answer,
                    sources=turn.sources,
                    status=turn.status,
                    provider=turn.provider,
                    model=turn.model,
                    trace_id=turn.trace_id,
                ),
            ]
        )
        await db.flush()
        return RecordedTurn(row.id, turn)

    async def publish(self, recorded: RecordedTurn) -> None:
        """Extend the Redis window with an answered turn that has committed."""
        if recorded.turn.status == "ok":
            await self._window.append(
                recorded.conversation_id, Turn(recorded.turn.question, recorded.turn.answer)
            )

    async def messages(self, db: AsyncSession, principal: Principal, session_id: str) -> SessionHistory:
        row = await self._owned(db, principal, session_id, admin_may_read=True)
        if row is None or row.deleted_at is not None:
            raise SessionNotFoundError(f"no session {session_id}")
        live = await ConversationRepository(db).live_messages(row.id)
        hidden = await hidden_message_ids(db, row.tenant_id, AccessSet.of(principal), live)
        stored = [
            StoredMessage(
                id=m.id,
                role=m.role,
                content=m.content,
                sources=m.sources,
                status=m.status,
                provider=m.provider,
                model=m.model,
                trace_id=m.trace_id,
                created_at=m.created_at,
            )
            for m in live
            if m.id not in hidden
        ]
        return SessionHistory(conversation_id=row.id, session_id=row.client_id, messages=stored)

    async def delete(self, db: AsyncSession, principal: Principal, session_id: str) -> None:
        """Soft-delete the session's history (purged for good after ``DELETED_HISTORY_PURGE_DAYS``)
        and forget its answers' ledger records; the id may be used again and starts empty."""
        now = datetime.now(UTC)
        row = await self._owned(db, principal, session_id, admin_may_read=True)
        if row is None or row.deleted_at is not None:
            raise SessionNotFoundError(f"no session {session_id}")
        conversations = ConversationRepository(db)
        answered = await conversations.answered_trace_ids(row.id)
        row.deleted_at = now
        await conversations.soft_delete_messages([row.id], now)
        await db.flush()
        # Dropped before the commit: a commit that then fails leaves a window the next read
        # rebuilds from PostgreSQL, never one that outlives the deletion (and answers that can no
        # longer be rated, rather than a question and answer kept after the reset).
        await self._window.drop(row.id)
        await self._answers.forget(row.tenant_id, answered)
