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

import json
import re
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any

import structlog
from pydantic import AfterValidator, StringConstraints
from redis.asyncio import Redis
from sqlalchemy import select, update
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.auth.principal import Principal, Role
from app.db.models import Conversation, Message
from app.errors import NotFoundError
from app.rag.prompt import Turn
from app.resources import redis_key
from app.settings import Settings

logger = structlog.get_logger(__name__)

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


class ConversationMemory:
    def __init__(self, redis: Redis, sessions: async_sessionmaker[AsyncSession], settings: Settings) -> None:
        self._redis = redis
        self._sessions = sessions
        self._settings = settings

    def _window_key(self, conversation_id: uuid.UUID) -> str:
        # The internal id: unique per (tenant, principal, client id), unlike the client's string.
        return redis_key(self._settings, "memory", str(conversation_id))

    async def _owned(
        self, db: AsyncSession, principal: Principal, session_id: str, *, admin_may_read: bool
    ) -> Conversation | None:
        """The caller's conversation with this client id; else, for a UUID, the conversation with
        that internal id if the caller owns it (or may read it as the tenant's admin). None when
        nothing answers to the id; 404 when it names a conversation the caller may not use."""
        row = (
            await db.execute(
                select(Conversation).where(
                    Conversation.tenant_id == principal.tenant_id,
                    Conversation.principal_id == principal.id,
                    Conversation.client_id == session_id,
                )
            )
        ).scalar_one_or_none()
        if row is not None:
            return row
        internal = _as_uuid(session_id)
        if internal is None:
            return None
        row = await db.get(Conversation, internal)
        if row is None:
            return None
        same_tenant = row.tenant_id == principal.tenant_id
        owner = same_tenant and row.principal_id == principal.id
        if owner or (admin_may_read and same_tenant and principal.role is Role.admin):
            return row
        raise SessionNotFoundError(f"no session {session_id}")

    async def window(self, principal: Principal, session_id: str) -> list[Turn]:
        """The last answered turns of a session the principal owns; [] for a new session id."""
        async with self._sessions() as db:
            row = await self._owned(db, principal, session_id, admin_may_read=False)
            if row is None or row.deleted_at is not None:
                return []
            conversation_id = row.id
        cached = await self._read_window(conversation_id)
        if cached is not None:
            return cached
        turns = await self._load_window(conversation_id)
        await self._write_window(conversation_id, turns)
        return turns

    async def _read_window(self, session_id: uuid.UUID) -> list[Turn] | None:
        try:
            raw = await self._redis.lrange(self._window_key(session_id), 0, -1)
            exists = bool(raw) or bool(await self._redis.exists(self._window_key(session_id) + ":built"))
        except Exception:
            logger.warning("memory_redis_unavailable")
            return None
        if not exists:
            return None
        return [Turn(**json.loads(item)) for item in raw]

    async def _write_window(self, session_id: uuid.UUID, turns: list[Turn]) -> None:
        key = self._window_key(session_id)
        ttl = self._settings.memory_retention_days * 86400
        try:
            async with self._redis.pipeline(transaction=True) as pipe:
                pipe.delete(key)
                if turns:
                    pipe.rpush(key, *[json.dumps(turn.__dict__) for turn in turns])
                    pipe.expire(key, ttl)
                pipe.set(key + ":built", 1, ex=ttl)
                await pipe.execute()
        except Exception:
            logger.warning("memory_redis_unavailable")

    async def _load_window(self, session_id: uuid.UUID) -> list[Turn]:
        limit = self._settings.memory_max_turns * 2
        async with self._sessions() as db:
            rows = (
                await db.execute(
                    select(Message)
                    .where(Message.conversation_id == session_id, Message.deleted_at.is_(None))
                    .order_by(Message.id.desc())
                    .limit(limit * 2)
                )
            ).scalars()
            messages = list(reversed(list(rows)))
        turns: list[Turn] = []
        pending_question: str | None = None
        for message in messages:
            if message.role == "user":
                pending_question = message.content
            elif pending_question is not None:
                if message.status == "ok":
                    turns.append(Turn(pending_question, message.content))
                pending_question = None
        return turns[-self._settings.memory_max_turns :]

    async def record_turn(
        self,
        principal: Principal,
        session_id: str,
        *,
        question: str,
        answer: str,
        sources: list[dict[str, Any]],
        status: str,
        provider: str | None,
        model: str | None,
        trace_id: str | None,
    ) -> None:
        """Store a question and its answer (``status`` "ok" or "failed") durably, then extend the
        Redis window with answered turns only."""
        now = datetime.now(UTC)
        async with self._sessions() as db, db.begin():
            row = await self._owned(db, principal, session_id, admin_may_read=False)
            if row is None:
                # A UUID session id becomes the internal id too (as before client ids existed);
                # a concurrent first turn with the same id makes this insert a no-op.
                await db.execute(
                    insert(Conversation)
                    .values(
                        id=_as_uuid(session_id) or uuid.uuid4(),
                        tenant_id=principal.tenant_id,
                        principal_id=principal.id,
                        client_id=session_id,
                    )
                    .on_conflict_do_nothing()
                )
                row = await self._owned(db, principal, session_id, admin_may_read=False)
                if row is None:  # unreachable: whatever the insert collided with answers to the id
                    raise SessionNotFoundError(f"no session {session_id}")
            conversation_id = row.id
            row.deleted_at = None
            row.last_active_at = now
            db.add(
                Message(
                    conversation_id=conversation_id,
                    tenant_id=principal.tenant_id,
                    role="user",
                    content=question,
                    trace_id=trace_id,
                )
            )
            db.add(
                Message(
                    conversation_id=conversation_id,
                    tenant_id=principal.tenant_id,
                    role="assistant",
                    content=answer,
                    sources=sources,
                    status=status,
                    provider=provider,
                    model=model,
                    trace_id=trace_id,
                )
            )
        if status != "ok":
            return
        key = self._window_key(conversation_id)
        try:
            if not await self._redis.exists(key + ":built"):
                return  # the next read rebuilds the window from PostgreSQL
            async with self._redis.pipeline(transaction=True) as pipe:
                pipe.rpush(key, json.dumps(Turn(question, answer).__dict__))
                pipe.ltrim(key, -self._settings.memory_max_turns, -1)
                pipe.expire(key, self._settings.memory_retention_days * 86400)
                await pipe.execute()
        except Exception:
            logger.warning("memory_redis_unavailable")

    async def messages(self, principal: Principal, session_id: str) -> SessionHistory:
        async with self._sessions() as db:
            row = await self._owned(db, principal, session_id, admin_may_read=True)
            if row is None or row.deleted_at is not None:
                raise SessionNotFoundError(f"no session {session_id}")
            rows = (
                await db.execute(
                    select(Message)
                    .where(Message.conversation_id == row.id, Message.deleted_at.is_(None))
                    .order_by(Message.id)
                )
            ).scalars()
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
                for m in rows
            ]
            return SessionHistory(conversation_id=row.id, session_id=row.client_id, messages=stored)

    async def delete(self, principal: Principal, session_id: str) -> None:
        """Soft-delete the session's history; the id may be used again and starts empty."""
        now = datetime.now(UTC)
        async with self._sessions() as db, db.begin():
            row = await self._owned(db, principal, session_id, admin_may_read=True)
            if row is None or row.deleted_at is not None:
                raise SessionNotFoundError(f"no session {session_id}")
            row.deleted_at = now
            conversation_id = row.id
            await db.execute(
                update(Message)
                .where(Message.conversation_id == conversation_id, Message.deleted_at.is_(None))
                .values(deleted_at=now)
            )
        key = self._window_key(conversation_id)
        try:
            await self._redis.delete(key, key + ":built")
        except Exception:
            logger.warning("memory_redis_unavailable")


async def expire_conversations(sessions: async_sessionmaker[AsyncSession], retention_days: int) -> int:
    """Soft-delete conversations idle for longer than the retention period; returns how many."""
    cutoff = datetime.now(UTC) - timedelta(days=retention_days)
    async with sessions() as db, db.begin():
        expired = (
            (
                await db.execute(
                    update(Conversation)
                    .where(Conversation.deleted_at.is_(None), Conversation.last_active_at < cutoff)
                    .values(deleted_at=datetime.now(UTC))
                    .returning(Conversation.id)
                )
            )
            .scalars()
            .all()
        )
        if expired:
            await db.execute(
                update(Message)
                .where(Message.conversation_id.in_(expired), Message.deleted_at.is_(None))
                .values(deleted_at=datetime.now(UTC))
            )
    return len(expired)
