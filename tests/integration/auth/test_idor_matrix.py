"""IDOR matrix: for every endpoint that takes an id, a principal of tenant B gets 404 for
tenant A's object (never 403: existence does not leak), B's listings never show it, and A's
object is untouched afterwards. Add a ``Resource`` row per object type (documents, versions,
jobs, sessions …) with a ``create`` that makes one as tenant A and returns its id."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest

from app.auth.principal import Role
from tests.support.callers import Caller, MakeCaller

pytestmark = pytest.mark.integration

Create = Callable[[httpx.AsyncClient, Caller], Awaitable[str]]
Intact = Callable[[httpx.AsyncClient, Caller, str], Awaitable[bool]]


@dataclass(frozen=True)
class Access:
    method: str
    path: str  # with {id}
    json: Any = None


@dataclass(frozen=True)
class Resource:
    name: str
    create: Create
    accesses: list[Access]
    listings: list[str] = field(default_factory=list)  # paths whose body must not mention the id
    still_intact: Intact | None = None


async def create_api_key(client: httpx.AsyncClient, owner: Caller) -> str:
    response = await client.post(
        "/api/v1/keys", json={"role": "reader", "name": "victim"}, headers=owner.headers
    )
    assert response.status_code == 201, response.text
    return str(response.json()["id"])


async def api_key_intact(client: httpx.AsyncClient, owner: Caller, key_id: str) -> bool:
    listed = (await client.get("/api/v1/keys", headers=owner.headers)).json()
    return any(key["id"] == key_id and key["revoked_at"] is None for key in listed)


RESOURCES = [
    Resource(
        name="api_keys",
        create=create_api_key,
        accesses=[Access("DELETE", "/api/v1/keys/{id}")],
        listings=["/api/v1/keys"],
        still_intact=api_key_intact,
    ),
]


@pytest.mark.parametrize("resource", RESOURCES, ids=lambda r: r.name)
async def test_foreign_tenant_gets_404_and_never_sees_the_object(
    client: httpx.AsyncClient, make_caller: MakeCaller, resource: Resource
) -> None:
    owner = await make_caller(tenant="tenant-a", role=Role.admin)
    intruder = await make_caller(tenant="tenant-b", role=Role.admin)  # highest role: not a role issue
    object_id = await resource.create(client, owner)
    for access in resource.accesses:
        response = await client.request(
            access.method, access.path.format(id=object_id), json=access.json, headers=intruder.headers
        )
        assert response.status_code == 404, f"{access.method} {access.path}: {response.text}"
        assert response.headers["content-type"].startswith("application/problem+json")
    for listing in resource.listings:
        response = await client.get(listing, headers=intruder.headers)
        assert response.status_code == 200
        assert object_id not in response.text
    if resource.still_intact is not None:
        assert await resource.still_intact(client, owner, object_id)
