"""First start of the embedded setup: a ``dev`` tenant and an admin key, shown once and kept in
``DATA_DIR/dev-api-key`` (mode 600) for ``make chat`` and the Streamlit demo."""

from __future__ import annotations

import os
from pathlib import Path

from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from app.auth.api_keys import IssuedKey, get_or_create_tenant, issue_key
from app.auth.principal import Role
from app.auth.repository import ApiKeyRepository

DEV_TENANT = "dev"
DEV_KEY_FILE = "dev-api-key"


def dev_key_path(data_dir: Path) -> Path:
    return data_dir / DEV_KEY_FILE


def write_secret_file(path: Path, secret: str) -> None:
    """Created 0600 from the start: the key is never readable by others, not even briefly."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.unlink(missing_ok=True)
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(descriptor, "w") as handle:
        handle.write(secret + "\n")


async def bootstrap_dev_admin(session: AsyncSession, data_dir: Path) -> IssuedKey | None:
    """The new admin key when the ``dev`` tenant has no key yet, else None (never re-issued: a
    key is shown once). The tenant itself may already exist: ``seed`` creates it to hold the
    demo documents before the first ``serve``. The caller commits."""
    if await ApiKeyRepository(session).tenant_has_any(DEV_TENANT):
        return None
    try:
        tenant = await get_or_create_tenant(session, DEV_TENANT, "Development")
        issued = await issue_key(session, tenant, Role.admin, "dev-admin")
    except IntegrityError:  # another process bootstrapped at the same moment
        return None
    write_secret_file(dev_key_path(data_dir), issued.key)
    return issued
