"""Who am I: lets a client check its credentials and role."""

from __future__ import annotations

from fastapi import APIRouter
from pydantic import BaseModel

from app.api.auth import CurrentPrincipal

router = APIRouter(prefix="/api/v1", tags=["auth"])


class MeResponse(BaseModel):
    principal_id: str
    tenant_id: str
    role: str
    kind: str
    groups: list[str]  # what opens access-listed documents (admins see every document anyway)


@router.get("/me", response_model=MeResponse, summary="The calling principal")
async def me(principal: CurrentPrincipal) -> MeResponse:
    return MeResponse(
        principal_id=principal.id,
        tenant_id=str(principal.tenant_id),
        role=principal.role.value,
        kind=principal.kind,
        groups=list(principal.groups),
    )
