"""Conversation and message queries. Every method works on the caller's session and never
commits: the unit of work that owns the session decides."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import datetime

from sqlalchemy import delete, select, update
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession

from app.db.models import Conversation, Message


class ConversationRepository:
    def __init__(self, session: AsyncSession) -> None:
        self._session = session

    async def by_client_id(
        self, tenant_id: uuid.UUID, principal_id: str, client_id: str
    ) -> Conversation | None:
        return (
            await self._session.execute(
                select(Conversation).where(
                    Conversation.tenant_id == tenant_id,
                    Conversation.principal_id == principal_id,
                    Conversation.client_id == client_id,
                )
            )
        ).scalar_one_or_none()

    async def by_id(self, conversation_id: uuid.UUID) -> Conversation | None:
        return await self._session.get(Conversation, conversation_id)

    async def create_if_absent(
        self, conversation_id: uuid.UUID, tenant_id: uuid.UUID, principal_id: str, client_id: str
    ) -> None:
        """Insert, or do nothing when a concurrent first turn already created it."""
        await self._session.execute(
            insert(Conversation)
            .values(id=conversation_id, tenant_id=tenant_id, principal_id=principal_id, client_id=client_id)
            .on_conflict_do_nothing()
        )

    def add_messages(self, messages: Sequence[Message]) -> None:
        self._session.add_all(list(messages))

    async def latest_messages(self, conversation_id: uuid.UUID, limit: int) -> list[Message]:
        """The last ``limit`` live messages, oldest first."""
        rows = (
            await self._session.execute(
                select(Message)
                .where(Message.conversation_id == conversation_id, Message.deleted_at.is_(None))
                .order_by(Message.id.desc())
                .limit(limit)
            )
        ).scalars()
        return list(reversed(list(rows)))

    async def live_messages(self, conversation_id: uuid.UUID) -> list[Message]:
        rows = await self._session.execute(
            select(Message)
            .where(Message.conversation_id == conversation_id, Message.deleted_at.is_(None))
            .order_by(Message.id)
        )
        return list(rows.scalars())

    async def soft_delete_messages(self, conversation_ids: Sequence[uuid.UUID], now: datetime) -> None:
        await self._session.execute(
            update(Message)
            .where(Message.conversation_id.in_(list(conversation_ids)), Message.deleted_at.is_(None))
            .values(deleted_at=now)
        )

    async def soft_delete_idle(self, idle_since: datetime, now: datetime) -> list[uuid.UUID]:
        """Soft-delete live conversations last active before ``idle_since``, and their messages."""
        expired = list(
            (
                await self._session.execute(
                    update(Conversation)
                    .where(Conversation.deleted_at.is_(None), Conversation.last_active_at < idle_since)
                    .values(deleted_at=now)
                    .returning(Conversation.id)
                )
            )
            .scalars()
            .all()
        )
        if expired:
            await self.soft_delete_messages(expired, now)
        return expired

    async def answered_trace_ids(self, conversation_id: uuid.UUID) -> list[str]:
        """The trace ids of the conversation's live answers (their records in the answer ledger)."""
        rows = await self._session.execute(
            select(Message.trace_id)
            .where(
                Message.conversation_id == conversation_id,
                Message.deleted_at.is_(None),
                Message.role == "assistant",
                Message.trace_id.is_not(None),
            )
            .distinct()
        )
        return [trace_id for trace_id in rows.scalars() if trace_id]

    async def purge_deleted(self, deleted_before: datetime) -> tuple[int, int]:
        """Hard-delete messages and conversations soft-deleted before ``deleted_before`` (a reset,
        or idle past the retention). Returns (conversations, messages) deleted."""
        messages = await self._session.execute(
            delete(Message)
            .where(Message.deleted_at.is_not(None), Message.deleted_at < deleted_before)
            .returning(Message.id)
        )
        message_count = len(messages.scalars().all())
        conversations = await self._session.execute(
            delete(Conversation)
            .where(Conversation.deleted_at.is_not(None), Conversation.deleted_at < deleted_before)
            .returning(Conversation.id)
        )
        return len(conversations.scalars().all()), message_count
