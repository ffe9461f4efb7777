"""Admin endpoints for the caller's tenant's API keys. A key is shown once, at creation."""

from __future__ import annotations

import uuid
from datetime import datetime

from fastapi import APIRouter, Response, status
from pydantic import BaseModel, Field

from app.api.auth import AdminPrincipal
from app.api.deps import AuthenticatorDep, SessionDep
from app.auth.key_service import create_key, list_keys, revoke_key
from app.auth.principal import Role
from app.security.audit import record_audit
from app.security.text import PlainText

router = APIRouter(prefix="/api/v1/keys", tags=["keys"])


class CreateKeyRequest(BaseModel):
    role: Role
    name: PlainText = Field(default="", max_length=200)
    groups: list[str] = Field(
        default_factory=list, description="groups of the key's principal (see the access model)"
    )


class CreatedKey(BaseModel):
    id: uuid.UUID
    key: str = Field(description="The secret; shown only in this response")
    tenant: str
    role: Role
    name: str
    groups: list[str]


class KeyInfo(BaseModel):
    id: uuid.UUID
    name: str
    prefix: str
    role: Role
    groups: list[str]
    created_at: datetime
    last_used_at: datetime | None
    revoked_at: datetime | None


@router.post("", status_code=status.HTTP_201_CREATED, response_model=CreatedKey, summary="Create a key")
async def create(body: CreateKeyRequest, principal: AdminPrincipal, session: SessionDep) -> CreatedKey:
    issued = await create_key(session, principal.tenant_id, body.role, body.name, body.groups)
    details = {"role": body.role.value, "groups": list(issued.groups)}
    await record_audit(session, principal, "api_key.create", "api_key", issued.id, details)
    return CreatedKey(
        id=issued.id,
        key=issued.key,
        tenant=issued.tenant,
        role=issued.role,
        name=issued.name,
        groups=list(issued.groups),
    )


@router.get("", response_model=list[KeyInfo], summary="List the tenant's keys")
async def list_(principal: AdminPrincipal, session: SessionDep) -> list[KeyInfo]:
    return [
        KeyInfo(
            id=key.id,
            name=key.name,
            prefix=key.prefix,
            role=Role(key.role),
            groups=list(key.groups or ()),
            created_at=key.created_at,
            last_used_at=key.last_used_at,
            revoked_at=key.revoked_at,
        )
        for key, _ in await list_keys(session, principal.tenant_id)
    ]


@router.delete("/{key_id}", status_code=status.HTTP_204_NO_CONTENT, summary="Revoke a key")
async def revoke(
    key_id: uuid.UUID, principal: AdminPrincipal, session: SessionDep, authenticator: AuthenticatorDep
) -> Response:
    await revoke_key(session, principal.tenant_id, key_id)
    authenticator.forget_key(key_id)
    await record_audit(session, principal, "api_key.revoke", "api_key", key_id)
    return Response(status_code=status.HTTP_204_NO_CONTENT)
