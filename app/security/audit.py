"""The audit log: one row per authenticated write (who, what, target, request and trace id).

Call ``record_audit`` inside the request's session (``SessionDep``) right after the write, so the
row commits or rolls back with it. ``details`` is for ids and counts, never content or secrets:
keys that look like credentials are dropped.
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

_SECRET_NAMES = re.compile(r"(key|token|secret|password|passwd|authorization|cookie|email)", re.I)


def _scrub(details: Mapping[str, Any]) -> dict[str, Any]:
    return {name: value for name, value in details.items() if not _SECRET_NAMES.search(name)}


async def record_audit(
    session: AsyncSession,
    principal: Principal,
    action: str,
    target_type: str,
    target_id: str | uuid.UUID | None,
    details: Mapping[str, Any] | None = None,
) -> AuditLog:
    """``action`` is ``<thing>.<verb>`` (``api_key.create``, ``document.delete``)."""
    row = AuditLog(
        tenant_id=principal.tenant_id,
        principal_id=principal.id,
        action=action,
        target_type=target_type,
        target_id=str(target_id) if target_id is not None else None,
        request_id=current_request_id(),
        trace_id=current_trace_id(),
        details=_scrub(details or {}),
    )
    session.add(row)
    await session.flush()
    return row
