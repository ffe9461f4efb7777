"""GET /api/v1/limits: what a client may send, so a UI can check before it sends anything: the
upload size and formats, the bounds of the chat parameters (read from the chat body's own
validation, so they cannot drift from what ``POST /api/v1/chat`` accepts) and the headers that
carry a caller's own provider keys."""

from __future__ import annotations

from typing import Any

import annotated_types
from fastapi import APIRouter
from pydantic import BaseModel, Field

from app.api.auth import CurrentPrincipal
from app.api.chat import MAX_QUESTION_CHARS, ChatBody
from app.api.deps import CallerChainsDep, SettingsDep
from app.documents.parsing import ParseLimits, upload_suffixes
from app.llm.errors import provider_key_header

router = APIRouter(prefix="/api/v1", tags=["limits"])


class Bounds(BaseModel):
    minimum: float
    maximum: float
    default: float | None = Field(description="what the service uses when the field is left out")


class ChatLimits(BaseModel):
    temperature: Bounds
    max_tokens: Bounds
    top_k: Bounds
    max_question_chars: int


class ServiceLimits(BaseModel):
    max_upload_mb: int = Field(description="MAX_UPLOAD_MB: larger uploads are refused with 413")
    upload_extensions: list[str] = Field(description="file name endings of the formats uploads accept")
    chat: ChatLimits
    provider_key_headers: dict[str, str] = Field(
        description="provider → header that carries the caller's own key for it (bring your own key)"
    )


def _bounds(field: str, default: Any) -> Bounds:
    """``field``'s ``ge``/``le`` on ``ChatBody``."""
    low: Any = None
    high: Any = None
    for constraint in ChatBody.model_fields[field].metadata:
        if isinstance(constraint, annotated_types.Ge):
            low = constraint.ge
        elif isinstance(constraint, annotated_types.Le):
            high = constraint.le
    if low is None or high is None:
        raise TypeError(f"ChatBody.{field} has no ge/le bounds")
    return Bounds(minimum=float(low), maximum=float(high), default=default)


@router.get("/limits", response_model=ServiceLimits, summary="Upload, chat and provider-key limits")
async def service_limits(
    _: CurrentPrincipal, settings: SettingsDep, caller_chains: CallerChainsDep
) -> ServiceLimits:
    return ServiceLimits(
        max_upload_mb=settings.max_upload_mb,
        upload_extensions=[
            suffix.lstrip(".") for suffix in upload_suffixes(ParseLimits.from_settings(settings).ocr)
        ],
        chat=ChatLimits(
            temperature=_bounds("temperature", None),
            max_tokens=_bounds("max_tokens", settings.answer_max_tokens),
            top_k=_bounds("top_k", ChatBody.model_fields["top_k"].default),
            max_question_chars=MAX_QUESTION_CHARS,
        ),
        provider_key_headers={name: provider_key_header(name) for name in caller_chains.providers},
    )
