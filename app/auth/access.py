"""Per-document access inside a tenant.

A document's access list (``documents.access``) holds grants: ``g:<group>`` for a group and
``p:<principal id>`` for one principal ("key:<uuid>" or "user:<sub>"). An empty list means the
whole tenant, as before access lists existed. A caller's ``AccessSet`` is the grants it holds:
its own ``p:`` grant and one ``g:`` grant per group; a document is visible when its list is
empty or shares a grant with the set (``documents.access && :grants``, GIN-indexed). Admins
(and the operator's CLI) are unrestricted: ``grants`` is None.

Group names match ``GROUP_PATTERN``; a list has at most ``MAX_ACCESS_ENTRIES`` grants. Anything
else is 422 ``invalid_access``.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import exists, func, or_, select
from sqlalchemy.ext.asyncio import AsyncSession

from app.auth.principal import Principal, Role
from app.db.models import Document
from app.errors import AppError

GROUP_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._@-]{0,63}$"
PRINCIPAL_PATTERN = r"^(key|user):[!-~]{1,190}$"  # printable ASCII, no spaces
MAX_ACCESS_ENTRIES = 64  # groups and principals of one document together
MAX_PRINCIPAL_GROUPS = 256  # groups taken from one credential; further ones are ignored
_GROUP = re.compile(GROUP_PATTERN)
_PRINCIPAL = re.compile(PRINCIPAL_PATTERN)
GROUP_PREFIX = "g:"
PRINCIPAL_PREFIX = "p:"


class InvalidAccessError(AppError):
    status = 422
    code = "invalid_access"
    title = "The access list is not valid"


def is_group_name(name: str) -> bool:
    return bool(_GROUP.fullmatch(name))


def valid_groups(names: Iterable[str]) -> tuple[str, ...]:
    """Validated, de-duplicated, sorted group names (422 ``invalid_access`` for a bad one)."""
    seen = set()
    for name in names:
        if not isinstance(name, str) or not is_group_name(name):
            raise InvalidAccessError(
                f"group {str(name)[:70]!r} does not match {GROUP_PATTERN} (1-64 characters: letters, "
                "digits, '.', '_', '@', '-', starting with a letter or digit)"
            )
        seen.add(name)
    return tuple(sorted(seen))


def groups_of_claim(raw: Any) -> tuple[str, ...]:
    """A JWT claim's groups (a list, or a space- or comma-separated string): the names that match
    ``GROUP_PATTERN``, at most ``MAX_PRINCIPAL_GROUPS``; others can never match a document."""
    if isinstance(raw, str):
        raw = re.split(r"[\s,]+", raw)
    if not isinstance(raw, list):
        return ()
    names = {name for name in raw if isinstance(name, str) and is_group_name(name)}
    return tuple(sorted(names))[:MAX_PRINCIPAL_GROUPS]


@dataclass(frozen=True)
class AccessList:
    """What a document's access list says, as the API shows it."""

    groups: tuple[str, ...] = ()
    principals: tuple[str, ...] = ()

    @classmethod
    def parse(cls, groups: Sequence[str] | None, principals: Sequence[str] | None) -> AccessList:
        """Validated (422 ``invalid_access``); repeated and comma-separated values both work."""
        group_names = valid_groups(_split(groups))
        ids = set()
        for principal_id in _split(principals):
            if not _PRINCIPAL.fullmatch(principal_id):
                raise InvalidAccessError(
                    f"principal {principal_id[:70]!r} does not match {PRINCIPAL_PATTERN} "
                    "(an API key's 'key:<id>' or a token's 'user:<sub>')"
                )
            ids.add(principal_id)
        if len(group_names) + len(ids) > MAX_ACCESS_ENTRIES:
            raise InvalidAccessError(f"an access list has at most {MAX_ACCESS_ENTRIES} groups and principals")
        return cls(group_names, tuple(sorted(ids)))

    @classmethod
    def of_grants(cls, grants: Sequence[str]) -> AccessList:
        groups = [g.removeprefix(GROUP_PREFIX) for g in grants if g.startswith(GROUP_PREFIX)]
        ids = [p.removeprefix(PRINCIPAL_PREFIX) for p in grants if p.startswith(PRINCIPAL_PREFIX)]
        return cls(tuple(sorted(groups)), tuple(sorted(ids)))

    def grants(self) -> list[str]:
        return [GROUP_PREFIX + g for g in self.groups] + [PRINCIPAL_PREFIX + p for p in self.principals]


def _split(values: Sequence[str] | None) -> list[str]:
    return [part.strip() for value in values or () for part in value.split(",") if part.strip()]


@dataclass(frozen=True)
class AccessSet:
    """The grants a caller holds; ``grants`` None is unrestricted (an admin, the operator)."""

    grants: tuple[str, ...] | None
    groups: tuple[str, ...] = ()

    @classmethod
    def of(cls, principal: Principal) -> AccessSet:
        if principal.role is Role.admin:
            return UNRESTRICTED
        grants = (PRINCIPAL_PREFIX + principal.id, *(GROUP_PREFIX + g for g in principal.groups))
        return cls(tuple(sorted(grants)), tuple(sorted(principal.groups)))

    @property
    def restricted(self) -> bool:
        return self.grants is not None

    def cache_scope(self) -> str:
        """What the answer cache keys on: the groups (an answer depends on the documents they
        open); grants to one principal are checked on every hit (``visible_document_ids``)."""
        return "*" if self.grants is None else ",".join(self.groups)

    def allows(self, document_grants: Sequence[str]) -> bool:
        return self.grants is None or not document_grants or bool(set(document_grants) & set(self.grants))


UNRESTRICTED = AccessSet(None)


def visible(access: AccessSet | None) -> Any:
    """The SQL condition "the caller may see this ``documents`` row" (true when unrestricted)."""
    if access is None or access.grants is None:
        return Document.id.is_not(None)
    return or_(func.cardinality(Document.access) == 0, Document.access.overlap(list(access.grants)))


async def visible_document_ids(
    db: AsyncSession, tenant_id: uuid.UUID, access: AccessSet, document_ids: Iterable[uuid.UUID]
) -> set[uuid.UUID]:
    """Which of ``document_ids`` the caller may see (live or not: a source cited before a
    delete is not a leak, an access change is)."""
    wanted = set(document_ids)
    if not wanted:
        return set()
    query = select(Document.id).where(
        Document.tenant_id == tenant_id, Document.id.in_(list(wanted)), visible(access)
    )
    return set((await db.execute(query)).scalars())


def restricts_documents(tenant_id: uuid.UUID) -> Any:
    """The SQL condition "some document of the tenant (live or deleted) has an access list":
    until one does, every caller sees everything and per-caller checks can be skipped."""
    return exists().where(Document.tenant_id == tenant_id, func.cardinality(Document.access) > 0)


async def tenant_restricts_documents(db: AsyncSession, tenant_id: uuid.UUID) -> bool:
    return bool((await db.execute(select(restricts_documents(tenant_id)))).scalar())


async def may_see_all(
    db: AsyncSession, tenant_id: uuid.UUID, access: AccessSet, document_ids: Iterable[str | uuid.UUID]
) -> bool:
    """Whether the caller may see every one of ``document_ids`` (an answer's sources): a cached
    answer is replayed only then. Always true when unrestricted (no query)."""
    if not access.restricted:
        return True
    try:
        wanted = {uuid.UUID(str(document_id)) for document_id in document_ids}
    except ValueError:
        return False
    return wanted <= await visible_document_ids(db, tenant_id, access, wanted)
