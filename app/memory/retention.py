"""Conversation retention, in two steps run by the hourly maintenance job:

- conversations idle for longer than ``MEMORY_RETENTION_DAYS`` are soft-deleted with their
  messages (``expire_conversations``): gone from the API at once;
- whatever was soft-deleted (by that, or by a reset) more than ``DELETED_HISTORY_PURGE_DAYS`` ago
  is deleted for good, text included (``purge_deleted_history``)."""

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


async def purge_deleted_history(
    sessions: async_sessionmaker[AsyncSession], purge_after_days: int, *, now: datetime | None = None
) -> tuple[int, int]:
    """Hard-delete conversations and messages soft-deleted more than ``purge_after_days`` ago;
    returns (conversations, messages) deleted."""
    now = now or datetime.now(UTC)
    async with sessions() as db, db.begin():
        return await ConversationRepository(db).purge_deleted(now - timedelta(days=purge_after_days))
