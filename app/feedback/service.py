"""Feedback on answers: ``submit`` checks that the caller received the answer (its record in the
answer ledger), stores the score durably with what was answered, counts it and sends it to
Langfuse as a score on that trace (a repeat of the same score and comment does none of that
again); ``export`` reads a tenant's feedback back, page by page, as
lines ready to become golden-set questions."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

from sqlalchemy.ext.asyncio import AsyncSession

from app.auth.principal import Principal
from app.db.unit_of_work import UnitOfWork
from app.feedback.errors import TraceNotFoundError
from app.feedback.ledger import RedisAnswerLedger
from app.feedback.repository import FeedbackRepository, FeedbackRow, Upserted
from app.observability.telemetry import Telemetry
from app.security.audit import record_audit

Score = Literal[-1, 1, 2, 3, 4, 5]
LANGFUSE_SCORE_NAME = "user_feedback"
EXPORT_PAGE_SIZE = 500


@dataclass(frozen=True)
class Submitted:
    feedback: FeedbackRow
    created: bool  # False: an earlier score of the caller's on this trace was replaced


def export_line(row: FeedbackRow) -> dict[str, Any]:
    """One line of the export: the question, the answer and its sources as rated."""
    return {
        "trace_id": row.trace_id,
        "score": row.score,
        "comment": row.comment,
        "question": row.question,
        "answer": row.answer,
        "sources": [
            {
                "document_id": source.get("document_id"),
                "title": source.get("title"),
                "page": source.get("page"),
                "cited": bool(source.get("cited", False)),
            }
            for source in row.sources
        ],
        "provider": row.provider,
        "model": row.model,
        "principal_id": row.principal_id,
        "answered_at": row.answered_at.isoformat(),
        "created_at": row.created_at.isoformat(),
        "updated_at": row.updated_at.isoformat(),
    }


class FeedbackService:
    def __init__(
        self,
        *,
        ledger: RedisAnswerLedger,
        unit_of_work: UnitOfWork,
        read_unit_of_work: UnitOfWork | None = None,
        telemetry: Telemetry | None = None,
        page_size: int = EXPORT_PAGE_SIZE,
    ) -> None:
        """``read_unit_of_work``: read-only sessions for the export (a read replica, which may
        trail the primary by up to REPLICA_MAX_LAG_S); the primary's by default."""
        self._ledger = ledger
        self._read_unit_of_work = read_unit_of_work or unit_of_work
        self._telemetry = telemetry or Telemetry.disabled()
        self._page_size = page_size

    async def submit(
        self, db: AsyncSession, principal: Principal, trace_id: str, score: Score, comment: str | None
    ) -> Submitted:
        """404 ``trace_not_found`` unless ``principal`` received the answer of ``trace_id``
        within the feedback window; 503 ``feedback_unavailable`` when that cannot be checked.
        Writes on the request's session ``db``, which the request commits."""
        turn = await self._ledger.lookup(principal.tenant_id, trace_id)
        if turn is None or turn.tenant_id != principal.tenant_id or turn.principal_id != principal.id:
            raise TraceNotFoundError()
        row, upserted = await FeedbackRepository(db).upsert(
            tenant_id=principal.tenant_id,
            principal_id=principal.id,
            trace_id=trace_id,
            score=score,
            comment=comment,
            question=turn.question,
            answer=turn.answer,
            sources=turn.sources_json(),
            provider=turn.provider,
            model=turn.model,
            answered_at=turn.answered_at,
        )
        if upserted is Upserted.unchanged:  # a repeat of the same rating: nothing new to record
            return Submitted(row, created=False)
        created = upserted is Upserted.inserted
        await record_audit(
            db, principal, "feedback.submit", "trace", trace_id, {"score": score, "replaced": not created}
        )
        self._telemetry.metrics.answer_feedback(score)
        self._telemetry.tracer.score(trace_id, LANGFUSE_SCORE_NAME, float(score), comment=comment)
        return Submitted(row, created)

    async def export(
        self, principal: Principal, *, since: datetime | None = None, limit: int | None = None
    ) -> AsyncIterator[dict[str, Any]]:
        """The tenant's feedback, oldest change first: one short transaction per page, so a slow
        reader holds no database connection between pages."""
        remaining = limit
        after: tuple[datetime, int] | None = None
        while remaining is None or remaining > 0:
            size = self._page_size if remaining is None else min(self._page_size, remaining)
            async with self._read_unit_of_work() as db:
                rows = await FeedbackRepository(db).page(
                    principal.tenant_id, since=since, after=after, limit=size
                )
            for row in rows:
                yield export_line(row)
            if len(rows) < size:
                return
            after = (rows[-1].updated_at, rows[-1].id)
            if remaining is not None:
                remaining -= len(rows)
