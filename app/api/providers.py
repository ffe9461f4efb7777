"""Router state per LLM provider: configured, healthy or cooling down, last error, latency."""

from __future__ import annotations

from datetime import datetime

from fastapi import APIRouter
from pydantic import BaseModel

from app.api.deps import ResourcesDep
from app.auth.dependencies import ReaderPrincipal

router = APIRouter(prefix="/api/v1", tags=["providers"])


class ProviderOut(BaseModel):
    name: str
    model: str
    configured: bool
    healthy: bool
    state: str
    cooling_down_until: datetime | None
    last_error: str | None
    recent_latency_ms: float | None
    detail: str | None


class ProvidersOut(BaseModel):
    providers: list[ProviderOut]


@router.get("/providers", response_model=ProvidersOut, summary="LLM router state per provider")
async def list_providers(_: ReaderPrincipal, resources: ResourcesDep) -> ProvidersOut:
    statuses = await resources.provider_chain.status()
    return ProvidersOut(
        providers=[
            ProviderOut(
                name=s.name,
                model=s.model,
                configured=s.configured,
                healthy=s.healthy,
                state=s.state,
                cooling_down_until=s.cooling_down_until,
                last_error=s.last_error,
                recent_latency_ms=s.recent_latency_ms,
                detail=s.detail,
            )
            for s in statuses
        ]
    )
