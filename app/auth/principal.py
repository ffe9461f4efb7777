"""Who is calling: a tenant-scoped principal with a role."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from enum import StrEnum
from typing import Literal


class Role(StrEnum):
    reader = "reader"
    editor = "editor"
    admin = "admin"

    @property
    def rank(self) -> int:
        return _RANKS[self]

    def allows(self, required: Role) -> bool:
        return self.rank >= required.rank


_RANKS = {Role.reader: 0, Role.editor: 1, Role.admin: 2}


@dataclass(frozen=True)
class Principal:
    """``id`` is stable per credential holder ("key:<uuid>" or "user:<sub>") and is what owns
    sessions; ``tenant_id`` scopes every query made on its behalf."""

    id: str
    tenant_id: uuid.UUID
    role: Role
    kind: Literal["api_key", "jwt"]
    name: str = ""
    groups: tuple[str, ...] = ()  # see app.auth.access: what opens access-listed documents
