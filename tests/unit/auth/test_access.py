"""Access lists and access sets (app.auth.access): what a caller's grants open, what is refused."""

from __future__ import annotations

import uuid

import pytest

from app.auth.access import MAX_ACCESS_ENTRIES, AccessList, AccessSet, InvalidAccessError, groups_of_claim
from app.auth.principal import Principal, Role

pytestmark = pytest.mark.unit


def principal(role: Role, *groups: str) -> Principal:
    return Principal(id="key:k1", tenant_id=uuid.uuid4(), role=role, kind="api_key", groups=groups)


def test_a_list_is_parsed_from_repeated_and_comma_separated_values() -> None:
    parsed = AccessList.parse(["hr, finance", "hr"], ["key:k1"])
    assert parsed == AccessList(("finance", "hr"), ("key:k1",))
    assert parsed.grants() == ["g:finance", "g:hr", "p:key:k1"]
    assert AccessList.of_grants(parsed.grants()) == parsed


@pytest.mark.parametrize(
    ("groups", "principals"),
    [
        (["has space"], []),
        (["-leading-dash"], []),
        (["x" * 65], []),
        ([], ["nobody"]),
        ([], ["key:with space"]),
        ([f"g{n}" for n in range(MAX_ACCESS_ENTRIES)], ["key:one-too-many"]),
    ],
)
def test_bad_names_and_long_lists_are_invalid_access(groups: list[str], principals: list[str]) -> None:
    with pytest.raises(InvalidAccessError) as raised:
        AccessList.parse(groups, principals)
    assert raised.value.status == 422 and raised.value.code == "invalid_access"


def test_a_caller_sees_open_documents_and_those_sharing_a_grant() -> None:
    hr = AccessSet.of(principal(Role.editor, "hr"))
    assert hr.allows([]) and hr.allows(["g:hr", "g:eng"]) and hr.allows(["p:key:k1"])
    assert not hr.allows(["g:eng"]) and not hr.allows(["p:key:k2"])
    admin = AccessSet.of(principal(Role.admin))
    assert not admin.restricted and admin.allows(["g:eng"])


def test_the_cache_scope_is_the_groups_not_the_principal() -> None:
    one = AccessSet.of(principal(Role.reader, "hr", "eng"))
    other = AccessSet.of(
        Principal(id="key:k2", tenant_id=uuid.uuid4(), role=Role.reader, kind="api_key", groups=("eng", "hr"))
    )
    assert one.cache_scope() == other.cache_scope() == "eng,hr"
    assert AccessSet.of(principal(Role.admin)).cache_scope() == "*"
    assert AccessSet.of(principal(Role.reader)).cache_scope() != "*"


def test_token_groups_keep_only_valid_names() -> None:
    assert groups_of_claim(["hr", "not valid", 3, "eng"]) == ("eng", "hr")
    assert groups_of_claim("finance,hr ops") == ("finance", "hr", "ops")
    assert groups_of_claim(None) == ()
