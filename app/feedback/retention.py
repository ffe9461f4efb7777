"""Feedback retention: a rating keeps a copy of the question and answer it rates (and the rater's
comment), so it is deleted ``FEEDBACK_RETENTION_DAYS`` after it last changed, by the hourly
maintenance job."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.feedback.repository import FeedbackRepository


async def purge_feedback(
    sessions: async_sessionmaker[AsyncSession], retention_days: int, *, now: datetime | None = None
) -> int:
    """Delete ratings older than the retention period; returns how many. ``now`` is injectable."""
    now = now or datetime.now(UTC)
    async with sessions() as db, db.begin():
        return await FeedbackRepository(db).purge_older_than(now - timedelta(days=retention_days))
