"""API keys: ``rk_<prefix>_<secret>``; only the prefix and the SHA-256 of the whole key are stored,
so the key is shown once and can never be recovered from the database."""

from __future__ import annotations

import hashlib
import hmac
import secrets
import uuid
from dataclasses import dataclass

from sqlalchemy.ext.asyncio import AsyncSession

from app.auth.principal import Principal, Role
from app.auth.repository import ApiKeyRepository, TenantRepository
from app.db.models import ApiKey, Tenant

KEY_SCHEME = "rk"
PREFIX_BYTES = 6  # 12 hex characters: the lookup handle, not a secret
SECRET_BYTES = 32  # 256 bits of entropy


@dataclass(frozen=True)
class IssuedKey:
    id: uuid.UUID
    key: str
    tenant: str
    role: Role
    name: str
    groups: tuple[str, ...] = ()


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def generate_key() -> tuple[str, str]:
    prefix = secrets.token_hex(PREFIX_BYTES)
    return prefix, f"{KEY_SCHEME}_{prefix}_{secrets.token_urlsafe(SECRET_BYTES)}"


def parse_prefix(key: str) -> str | None:
    parts = key.split("_", 2)
    if len(parts) != 3 or parts[0] != KEY_SCHEME or len(parts[1]) != PREFIX_BYTES * 2:
        return None
    return parts[1]


async def get_or_create_tenant(session: AsyncSession, slug: str, name: str | None = None) -> Tenant:
    tenants = TenantRepository(session)
    return await tenants.by_slug(slug) or await tenants.add(Tenant(slug=slug, name=name or slug))


async def issue_key(
    session: AsyncSession, tenant: Tenant, role: Role, name: str = "", groups: tuple[str, ...] = ()
) -> IssuedKey:
    prefix, key = generate_key()
    row = await ApiKeyRepository(session).add(
        ApiKey(
            tenant_id=tenant.id,
            name=name,
            prefix=prefix,
            secret_sha256=hash_key(key),
            role=role.value,
            groups=list(groups),
        )
    )
    return IssuedKey(id=row.id, key=key, tenant=tenant.slug, role=role, name=name, groups=groups)


async def verify_key(session: AsyncSession, key: str) -> Principal | None:
    """The key's principal, or None for an unknown, malformed or revoked key."""
    prefix = parse_prefix(key)
    # Hash even when the prefix is malformed so both paths cost the same.
    presented = hash_key(key)
    if prefix is None:
        return None
    row = await ApiKeyRepository(session).by_prefix(prefix)
    stored = row.secret_sha256 if row is not None else hash_key("absent")
    if not hmac.compare_digest(presented, stored) or row is None or row.revoked_at is not None:
        return None
    return Principal(
        id=f"key:{row.id}",
        tenant_id=row.tenant_id,
        role=Role(row.role),
        kind="api_key",
        name=row.name,
        groups=tuple(row.groups or ()),
    )
