"""The answer ledger: one Redis record per answered chat turn, keyed by its trace id, kept for
``FEEDBACK_WINDOW_SECONDS``. It says who received the answer (tenant and principal) and what it was
(question, answer, sources, provider, model), so feedback on that trace can be checked and stored
with what was rated, without a PostgreSQL round trip on the chat path.

Writing is one ``SET … EX`` per turn. A failed write is logged and counted
(``answer_records_total{outcome="failed"}``), never raised: the chat answer matters more than the
chance to rate it. The key carries the tenant, so a lookup from another tenant cannot even find
the record: ``<REDIS_KEY_PREFIX>answered:<tenant_id>:<trace_id>``.

Retention: a record lives ``FEEDBACK_WINDOW_SECONDS`` (its TTL), and a conversation reset deletes the
records of that conversation's answers at once (``forget``)."""

from __future__ import annotations

import json
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import structlog
from redis.asyncio import Redis

from app.db.redis import KeySpace
from app.feedback.errors import FeedbackUnavailableError
from app.observability.metrics.domain import DomainMetrics
from app.rag.sources import Source

logger = structlog.get_logger(__name__)

QUESTION_MAX_CHARS = 4000
ANSWER_MAX_CHARS = 8000


def _truncated(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


@dataclass(frozen=True)
class AnsweredSource:
    number: int
    document_id: str
    title: str
    page: int
    chunk_id: int
    cited: bool

    def to_dict(self) -> dict[str, Any]:
        # Spelt out: ``dataclasses.asdict`` deep-copies each field and costs five times as much,
        # once per source on every answered turn.
        return {
            "number": self.number,
            "document_id": self.document_id,
            "title": self.title,
            "page": self.page,
            "chunk_id": self.chunk_id,
            "cited": self.cited,
        }

    @classmethod
    def of(cls, source: Source) -> AnsweredSource:
        return cls(
            number=source.number,
            document_id=source.document_id,
            title=source.title,
            page=source.page,
            chunk_id=source.chunk_id,
            cited=source.cited,
        )


@dataclass(frozen=True)
class AnsweredTurn:
    """What a principal was answered under one trace id (question and answer truncated)."""

    trace_id: str
    tenant_id: uuid.UUID
    principal_id: str
    question: str
    answer: str
    sources: tuple[AnsweredSource, ...]
    provider: str
    model: str
    answered_at: datetime

    @classmethod
    def of(
        cls,
        *,
        trace_id: str,
        tenant_id: uuid.UUID,
        principal_id: str,
        question: str,
        answer: str,
        sources: list[Source],
        provider: str,
        model: str,
        answered_at: datetime,
    ) -> AnsweredTurn:
        return cls(
            trace_id=trace_id,
            tenant_id=tenant_id,
            principal_id=principal_id,
            question=_truncated(question, QUESTION_MAX_CHARS),
            answer=_truncated(answer, ANSWER_MAX_CHARS),
            sources=tuple(AnsweredSource.of(s) for s in sources),
            provider=provider,
            model=model,
            answered_at=answered_at,
        )

    def sources_json(self) -> list[dict[str, Any]]:
        return [source.to_dict() for source in self.sources]

    def to_json(self) -> str:
        return json.dumps(
            {
                "trace_id": self.trace_id,
                "tenant_id": str(self.tenant_id),
                "principal_id": self.principal_id,
                "question": self.question,
                "answer": self.answer,
                "sources": self.sources_json(),
                "provider": self.provider,
                "model": self.model,
                "answered_at": self.answered_at.isoformat(),
            },
            separators=(",", ":"),
        )

    @classmethod
    def from_json(cls, raw: str | bytes) -> AnsweredTurn:
        data = json.loads(raw)
        return cls(
            trace_id=data["trace_id"],
            tenant_id=uuid.UUID(data["tenant_id"]),
            principal_id=data["principal_id"],
            question=data["question"],
            answer=data["answer"],
            sources=tuple(AnsweredSource(**source) for source in data["sources"]),
            provider=data["provider"],
            model=data["model"],
            answered_at=datetime.fromisoformat(data["answered_at"]),
        )


class RedisAnswerLedger:
    """``window_s`` of 0 turns the ledger off: nothing is recorded and every lookup misses."""

    def __init__(self, redis: Redis, keys: KeySpace, *, window_s: int, metrics: DomainMetrics) -> None:
        self._redis = redis
        self._keys = keys
        self._window_s = window_s
        self._metrics = metrics

    @property
    def window_s(self) -> int:
        return self._window_s

    def key(self, tenant_id: uuid.UUID, trace_id: str) -> str:
        return self._keys.key("answered", str(tenant_id), trace_id)

    async def record(self, turn: AnsweredTurn) -> None:
        """One ``SET … EX``; a failure is logged and counted, never raised."""
        if self._window_s <= 0:
            return
        try:
            await self._redis.set(self.key(turn.tenant_id, turn.trace_id), turn.to_json(), ex=self._window_s)
        except Exception as exc:
            logger.warning("answer_ledger_unavailable", error_type=type(exc).__name__)
            self._metrics.answer_record(stored=False)
            return
        self._metrics.answer_record(stored=True)

    async def lookup(self, tenant_id: uuid.UUID, trace_id: str) -> AnsweredTurn | None:
        """The record of ``trace_id`` in ``tenant_id``, or None (never recorded, or expired).
        Raises ``FeedbackUnavailableError`` (503) when Redis cannot be read."""
        if self._window_s <= 0:
            return None
        try:
            raw = await self._redis.get(self.key(tenant_id, trace_id))
        except Exception as exc:
            logger.warning("answer_ledger_unavailable", error_type=type(exc).__name__)
            raise FeedbackUnavailableError() from exc
        return None if raw is None else AnsweredTurn.from_json(raw)

    async def forget(self, tenant_id: uuid.UUID, trace_ids: Sequence[str]) -> None:
        """Delete the records of these answers (a conversation reset). A failure is logged, never
        raised: the record still expires after the window."""
        if not trace_ids:
            return
        try:
            await self._redis.delete(*(self.key(tenant_id, trace_id) for trace_id in trace_ids))
        except Exception as exc:
            logger.warning("answer_ledger_unavailable", error_type=type(exc).__name__)
