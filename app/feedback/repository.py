"""Feedback queries. Every method works on the caller's session and never commits: the unit of
work that owns the session decides."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import delete, func, literal_column, or_, select, tuple_
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession

from app.db.models import AnswerFeedback

UNIQUE_PER_TRACE = "uq_answer_feedback_tenant_id_principal_id_trace_id"


@dataclass(frozen=True)
class FeedbackRow:
    id: int
    tenant_id: uuid.UUID
    principal_id: str
    trace_id: str
    score: int
    comment: str | None
    question: str
    answer: str
    sources: list[dict[str, Any]]
    provider: str
    model: str
    answered_at: datetime
    created_at: datetime
    updated_at: datetime


class Upserted(StrEnum):
    inserted = "inserted"
    replaced = "replaced"  # the score or the comment changed
    unchanged = "unchanged"  # the same score and comment again: nothing was written


_COLUMNS = tuple(getattr(AnswerFeedback, name) for name in FeedbackRow.__dataclass_fields__)


def _row(values: Any) -> FeedbackRow:
    return FeedbackRow(*tuple(values)[: len(_COLUMNS)])


class FeedbackRepository:
    def __init__(self, session: AsyncSession) -> None:
        self._session = session

    async def upsert(
        self,
        *,
        tenant_id: uuid.UUID,
        principal_id: str,
        trace_id: str,
        score: int,
        comment: str | None,
        question: str,
        answer: str,
        sources: list[dict[str, Any]],
        provider: str,
        model: str,
        answered_at: datetime,
    ) -> tuple[FeedbackRow, Upserted]:
        """Insert the feedback, or replace the score and comment of the principal's earlier
        feedback on this trace when either differs. Returns the stored row and what happened."""
        statement = insert(AnswerFeedback).values(
            tenant_id=tenant_id,
            principal_id=principal_id,
            trace_id=trace_id,
            score=score,
            comment=comment,
            question=question,
            answer=answer,
            sources=sources,
            provider=provider,
            model=model,
            answered_at=answered_at,
        )
        upsert = statement.on_conflict_do_update(
            constraint=UNIQUE_PER_TRACE,
            set_={
                "score": statement.excluded.score,
                "comment": statement.excluded.comment,
                "updated_at": func.now(),
            },
            # An identical repeat updates nothing (and returns no row): no new updated_at.
            where=or_(
                AnswerFeedback.score.is_distinct_from(statement.excluded.score),
                AnswerFeedback.comment.is_distinct_from(statement.excluded.comment),
            ),
        ).returning(*_COLUMNS, literal_column("xmax = 0").label("inserted"))
        values = (await self._session.execute(upsert)).one_or_none()
        if values is not None:
            return _row(values), Upserted.inserted if values[-1] else Upserted.replaced
        stored = select(*_COLUMNS).where(
            AnswerFeedback.tenant_id == tenant_id,
            AnswerFeedback.principal_id == principal_id,
            AnswerFeedback.trace_id == trace_id,
        )
        return _row((await self._session.execute(stored)).one()), Upserted.unchanged

    async def page(
        self,
        tenant_id: uuid.UUID,
        *,
        since: datetime | None,
        after: tuple[datetime, int] | None,
        limit: int,
    ) -> list[FeedbackRow]:
        """The tenant's feedback in (updated_at, id) order: changed at or after ``since``, and
        after the ``(updated_at, id)`` position ``after`` (the last row of the previous page)."""
        query = select(*_COLUMNS).where(AnswerFeedback.tenant_id == tenant_id)
        if since is not None:
            query = query.where(AnswerFeedback.updated_at >= since)
        if after is not None:
            query = query.where(tuple_(AnswerFeedback.updated_at, AnswerFeedback.id) > tuple_(*after))
        query = query.order_by(AnswerFeedback.updated_at, AnswerFeedback.id).limit(limit)
        return [_row(values) for values in (await self._session.execute(query)).all()]

    async def purge_older_than(self, updated_before: datetime) -> int:
        """Delete ratings (with their copies of question, answer and comment) last changed before
        ``updated_before``; returns how many."""
        deleted = await self._session.execute(
            delete(AnswerFeedback)
            .where(AnswerFeedback.updated_at < updated_before)
            .returning(AnswerFeedback.id)
        )
        return len(deleted.scalars().all())
