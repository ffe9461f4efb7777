"""Router state per LLM provider: configured, healthy or cooling down, last error, latency."""

from __future__ import annotations

from datetime import datetime

from fastapi import APIRouter
from pydantic import BaseModel

from app.api.deps import ResourcesDep
from app.auth.dependencies import ReaderPrincipal
from app.auth.principal import Role

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
async def list_providers(principal: ReaderPrincipal, resources: ResourcesDep) -> ProvidersOut:
    """Every caller sees each provider's state; only admins see ``last_error``, which comes from
    any tenant's request (an error text can quote another tenant's prompt or model choice)."""
    statuses = await resources.provider_chain.status()
    show_errors = principal.role.allows(Role.admin)
    return ProvidersOut(
        providers=[
            ProviderOut(
                name=s.name,
                model=s.model,
                configured=s.configured,
                healthy=s.healthy,
                state=s.state,
                cooling_down_until=s.cooling_down_until,
                last_error=s.last_error if show_errors else None,
                recent_latency_ms=s.recent_latency_ms,
                detail=s.detail,
            )
            for s in statuses
        ]
    )
