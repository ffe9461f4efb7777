"""The audit log: one row per authenticated write (who, what, target, request and trace id).

Call ``record_audit`` (or, where only the principal's id is known, ``record_audit_entry``) inside
the request's session (``SessionDep``) right after the write, so the row commits or rolls back
with it. ``details`` is for ids, counts and the fields a write changed, never secrets: keys that
look like credentials are dropped, and credentials or e-mail addresses inside values (a provider
key pasted into a title) are masked as in logs.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Mapping
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from app.auth.principal import Principal
from app.db.models import AuditLog
from app.observability.context import current_request_id, current_trace_id
from app.observability.masking import mask_value

_SECRET_NAMES = re.compile(r"(key|token|secret|password|passwd|authorization|cookie|email)", re.I)


def scrub_audit_details(details: Mapping[str, Any]) -> dict[str, Any]:
    """``details`` without credential-like keys, and with secrets inside the values masked."""
    return {name: mask_value(value) for name, value in details.items() if not _SECRET_NAMES.search(name)}


async def record_audit(
    session: AsyncSession,
    principal: Principal,
    action: str,
    target_type: str,
    target_id: str | uuid.UUID | None,
    details: Mapping[str, Any] | None = None,
) -> AuditLog:
    """``action`` is ``<thing>.<verb>`` (``api_key.create``, ``document.delete``)."""
    return await record_audit_entry(
        session,
        tenant_id=principal.tenant_id,
        principal_id=principal.id,
        action=action,
        target_type=target_type,
        target_id=target_id,
        details=details,
    )


async def record_audit_entry(
    session: AsyncSession,
    *,
    tenant_id: uuid.UUID,
    principal_id: str | None,
    action: str,
    target_type: str,
    target_id: str | uuid.UUID | None,
    details: Mapping[str, Any] | None = None,
) -> AuditLog:
    """``record_audit`` for writers that hold the principal's id rather than the principal (the
    documents service, which the CLI drives too)."""
    row = AuditLog(
        tenant_id=tenant_id,
        principal_id=principal_id,
        action=action,
        target_type=target_type,
        target_id=str(target_id) if target_id is not None else None,
        request_id=current_request_id(),
        trace_id=current_trace_id(),
        details=scrub_audit_details(details or {}),
    )
    session.add(row)
    await session.flush()
    return row
