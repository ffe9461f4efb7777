"""Real tenants and API keys for tests: ``await make_caller(tenant="acme", role=Role.editor)``."""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.auth.api_keys import get_or_create_tenant, issue_key
from app.auth.principal import Role


@dataclass(frozen=True)
class Caller:
    key: str
    key_id: uuid.UUID
    tenant: str
    tenant_id: uuid.UUID
    role: Role

    @property
    def headers(self) -> dict[str, str]:
        return {"X-API-Key": self.key}

    @property
    def principal_id(self) -> str:
        return f"key:{self.key_id}"


MakeCaller = Callable[..., Awaitable[Caller]]


def caller_factory(session_factory: async_sessionmaker[AsyncSession]) -> MakeCaller:
    async def make(
        tenant: str = "acme", role: Role = Role.editor, name: str = "test", groups: tuple[str, ...] = ()
    ) -> Caller:
        async with session_factory() as session, session.begin():
            row = await get_or_create_tenant(session, tenant)
            issued = await issue_key(session, row, role, name, groups)
        return Caller(key=issued.key, key_id=issued.id, tenant=tenant, tenant_id=row.id, role=role)

    return make
