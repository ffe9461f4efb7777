"""Router state per LLM provider: configured, healthy or cooling down, last error, latency."""

from __future__ import annotations

from dataclasses import replace

from fastapi import APIRouter
from pydantic import BaseModel

from app.api.auth import ReaderPrincipal
from app.api.deps import ChainDep
from app.auth.principal import Role
from app.llm.chain import ProviderStatus

router = APIRouter(prefix="/api/v1", tags=["providers"])


class ProvidersOut(BaseModel):
    providers: list[ProviderStatus]


@router.get("/providers", response_model=ProvidersOut, summary="LLM router state per provider")
async def list_providers(principal: ReaderPrincipal, chain: ChainDep) -> ProvidersOut:
    """Every caller sees each provider's state; only admins see ``last_error``, which comes from
    any tenant's request (an error text can quote another tenant's prompt or model choice)."""
    show_errors = principal.role.allows(Role.admin)
    return ProvidersOut(
        providers=[s if show_errors else replace(s, last_error=None) for s in await chain.status()]
    )
