"""Feedback on answers: ``POST /api/v1/feedback`` rates an answer the caller received (by the
``trace_id`` of its response); ``GET /api/v1/feedback`` exports the tenant's feedback as JSON lines
(admins)."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query, Response, status
from fastapi.responses import StreamingResponse
from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field, StringConstraints

from app.api.auth import AdminPrincipal
from app.api.deps import FeedbackDep, SessionDep
from app.api.limits import ChatRateLimit
from app.feedback.repository import FeedbackRow
from app.security.text import PlainText

router = APIRouter(prefix="/api/v1/feedback", tags=["feedback"])

MAX_COMMENT_CHARS = 2000
MAX_EXPORT_LINES = 100_000


def _integer(value: object) -> object:
    # JSON ``true`` and ``1.0`` would otherwise pass as the score 1.
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError("the score is an integer: -1 or 1 (thumbs), or 1 to 5 (stars)")
    return value


def _blank_is_none(value: str | None) -> str | None:
    if value is None:
        return None
    stripped = value.strip()
    return stripped or None


Score = Annotated[Literal[-1, 1, 2, 3, 4, 5], BeforeValidator(_integer)]
TraceId = Annotated[
    str,
    StringConstraints(pattern=r"^[0-9a-fA-F]{32}$"),
    AfterValidator(str.lower),
]


class FeedbackIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    trace_id: TraceId = Field(description="the `trace_id` of the answer (its response body or X-Trace-ID)")
    score: Score = Field(description="-1 or 1 (thumbs down/up), or 1 to 5 (stars)")
    comment: Annotated[PlainText | None, AfterValidator(_blank_is_none)] = Field(
        default=None, max_length=MAX_COMMENT_CHARS
    )


class FeedbackOut(BaseModel):
    trace_id: str
    score: int
    comment: str | None
    answered_at: datetime
    created_at: datetime
    updated_at: datetime

    @classmethod
    def of(cls, row: FeedbackRow) -> FeedbackOut:
        return cls(
            trace_id=row.trace_id,
            score=row.score,
            comment=row.comment,
            answered_at=row.answered_at,
            created_at=row.created_at,
            updated_at=row.updated_at,
        )


class ExportedSource(BaseModel):
    document_id: str
    title: str
    page: int
    cited: bool


class ExportedFeedback(BaseModel):
    """One line of the export (``application/x-ndjson``)."""

    trace_id: str
    score: int
    comment: str | None
    question: str
    answer: str
    sources: list[ExportedSource]
    provider: str
    model: str
    principal_id: str
    answered_at: datetime
    created_at: datetime
    updated_at: datetime


class NdjsonResponse(StreamingResponse):
    media_type = "application/x-ndjson"


def _inline_schema(model: type[BaseModel]) -> dict[str, Any]:
    """``model``'s JSON schema with its ``$defs`` inlined, for an OpenAPI ``itemSchema`` (where a
    ``#/$defs/…`` reference would point at the OpenAPI document's root)."""
    schema = model.model_json_schema()
    definitions = schema.pop("$defs", {})

    def resolve(node: Any) -> Any:
        if isinstance(node, dict):
            reference = node.get("$ref")
            if isinstance(reference, str) and reference.startswith("#/$defs/"):
                return resolve(definitions[reference.removeprefix("#/$defs/")])
            return {key: resolve(value) for key, value in node.items()}
        if isinstance(node, list):
            return [resolve(item) for item in node]
        return node

    return dict(resolve(schema))


@router.post(
    "",
    status_code=status.HTTP_201_CREATED,
    response_model=FeedbackOut,
    summary="Rate an answer you received",
    responses={
        200: {
            "model": FeedbackOut,
            "description": "your earlier feedback on this answer was replaced (or, identical, kept)",
        },
        404: {"description": "no answer you received within the feedback window has this trace id"},
    },
)
async def submit_feedback(
    body: FeedbackIn, response: Response, principal: ChatRateLimit, service: FeedbackDep, db: SessionDep
) -> FeedbackOut:
    """Charged to the chat budgets, like the question it rates."""
    submitted = await service.submit(db, principal, body.trace_id, body.score, body.comment)
    if not submitted.created:
        response.status_code = status.HTTP_200_OK
    return FeedbackOut.of(submitted.feedback)


def _line(item: dict[str, Any]) -> bytes:
    return (json.dumps(item, ensure_ascii=False, separators=(",", ":")) + "\n").encode()


async def _lines(first: dict[str, Any] | None, rest: AsyncIterator[dict[str, Any]]) -> AsyncIterator[bytes]:
    if first is None:
        return
    yield _line(first)
    async for item in rest:
        yield _line(item)


@router.get(
    "",
    response_class=NdjsonResponse,
    summary="Export the tenant's feedback as JSON lines (admin)",
    response_description="one JSON object per line (`itemSchema`), oldest change first",
    responses={
        200: {"content": {NdjsonResponse.media_type: {"itemSchema": _inline_schema(ExportedFeedback)}}}
    },
)
async def export_feedback(
    principal: AdminPrincipal,
    service: FeedbackDep,
    since: Annotated[
        datetime | None,
        Query(description="only feedback given or changed at or after this instant (no zone: UTC)"),
    ] = None,
    limit: Annotated[
        int | None, Query(ge=1, le=MAX_EXPORT_LINES, description="at most this many lines")
    ] = None,
) -> NdjsonResponse:
    if since is not None and since.tzinfo is None:
        since = since.replace(tzinfo=UTC)
    items = service.export(principal, since=since, limit=limit)
    # The first page is read before the 200 is sent: a database outage is still a 503 problem.
    first = await anext(items, None)
    return NdjsonResponse(_lines(first, items), headers={"Cache-Control": "no-store"})
