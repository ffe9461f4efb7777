"""Router state per LLM provider: configured, its circuit (closed / open until / half-open), the
last failure's code, latency."""

from __future__ import annotations

from fastapi import APIRouter
from pydantic import BaseModel

from app.api.auth import ReaderPrincipal
from app.api.deps import ChainDep
from app.llm.status import ProviderStatus

router = APIRouter(prefix="/api/v1", tags=["providers"])


class ProvidersOut(BaseModel):
    providers: list[ProviderStatus]


@router.get("/providers", response_model=ProvidersOut, summary="LLM router state per provider")
async def list_providers(_: ReaderPrincipal, chain: ChainDep) -> ProvidersOut:
    """Every caller of every tenant sees the same router state. The providers' error texts are not
    part of it: they come from any tenant's request (one can quote another tenant's prompt or
    model choice), and this service has no operator role above the tenants' admins, so the text
    stays in the operator's logs (``provider_failed``) and metrics count failures by code; here
    each provider shows only ``last_error_code``."""
    return ProvidersOut(providers=await chain.status())
