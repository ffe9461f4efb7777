"""The answer ledger's record: what it keeps of an answered turn, and that it reads back as written."""

from __future__ import annotations

import uuid
from dataclasses import asdict
from datetime import UTC, datetime

import pytest

from app.feedback.ledger import ANSWER_MAX_CHARS, QUESTION_MAX_CHARS, AnsweredTurn
from app.rag.sources import Source

pytestmark = pytest.mark.unit

SOURCE = Source(
    number=1,
    document_id=str(uuid.UUID(int=9)),
    version=2,
    title="Refund policy",
    page=3,
    chunk_id=41,
    score=0.8,
    snippet="Refunds are paid within 30 days.",
    tags=["policy"],
    cited=True,
)


def turn(question: str = "How fast?", answer: str = "30 days [1].") -> AnsweredTurn:
    return AnsweredTurn.of(
        trace_id="ab" * 16,
        tenant_id=uuid.UUID(int=1),
        principal_id="key:alice",
        question=question,
        answer=answer,
        sources=[SOURCE],
        provider="openai",
        model="gpt-4o-mini",
        answered_at=datetime(2026, 11, 29, 12, 0, tzinfo=UTC),
    )


def test_the_record_reads_back_as_written_and_keeps_sources_without_their_text() -> None:
    original = turn()
    assert AnsweredTurn.from_json(original.to_json()) == original
    assert original.sources_json() == [
        {
            "number": 1,
            "document_id": SOURCE.document_id,
            "title": "Refund policy",
            "page": 3,
            "chunk_id": 41,
            "cited": True,
        }
    ]
    assert "Refunds are paid" not in original.to_json()  # snippets stay out of Redis
    assert original.sources_json() == [asdict(source) for source in original.sources]  # every field


def test_long_questions_and_answers_are_truncated() -> None:
    long = turn(question="q" * (QUESTION_MAX_CHARS + 10), answer="a" * (ANSWER_MAX_CHARS * 2))
    assert len(long.question) == QUESTION_MAX_CHARS and long.question.endswith("…")
    assert len(long.answer) == ANSWER_MAX_CHARS and long.answer.endswith("…")
    assert turn(answer="a" * ANSWER_MAX_CHARS).answer == "a" * ANSWER_MAX_CHARS
