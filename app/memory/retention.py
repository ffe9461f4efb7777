"""Conversation retention: conversations idle for longer than ``MEMORY_RETENTION_DAYS`` are
soft-deleted with their messages."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.memory.repository import ConversationRepository


async def expire_conversations(
    sessions: async_sessionmaker[AsyncSession], retention_days: int, *, now: datetime | None = None
) -> int:
    """Soft-delete conversations idle for longer than the retention period; returns how many.
    ``now`` is injectable so tests move the clock instead of waiting."""
    now = now or datetime.now(UTC)
    async with sessions() as db, db.begin():
        expired = await ConversationRepository(db).soft_delete_idle(now - timedelta(days=retention_days), now)
    return len(expired)
