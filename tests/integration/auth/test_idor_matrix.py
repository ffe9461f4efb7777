"""IDOR matrix: for every endpoint that takes an id, a principal of tenant B gets 404 for
tenant A's object (never 403: existence does not leak), B's listings never show it, and A's
object is untouched afterwards. Add a ``Resource`` row per object type (documents, versions,
jobs, sessions …) with a ``create`` that makes one as tenant A and returns its id."""

from __future__ import annotations

import uuid
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
    files: Any = None


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


async def create_document(client: httpx.AsyncClient, owner: Caller) -> str:
    response = await client.post(
        "/api/v1/docs",
        files={"file": ("secret.md", b"# Secret\n\nTenant A's merger plans.", "text/markdown")},
        data={"title": "Secret plans"},
        headers=owner.headers,
    )
    assert response.status_code == 202, response.text
    return str(response.json()["document_id"])


async def document_intact(client: httpx.AsyncClient, owner: Caller, document_id: str) -> bool:
    response = await client.get(f"/api/v1/docs/{document_id}", headers=owner.headers)
    return response.status_code == 200 and response.json()["title"] == "Secret plans"


async def create_job(client: httpx.AsyncClient, owner: Caller) -> str:
    response = await client.post(
        "/api/v1/docs",
        files={"file": ("job.md", b"# Job\n\nSomething to ingest.", "text/markdown")},
        headers=owner.headers,
    )
    assert response.status_code == 202, response.text
    return str(response.json()["job_id"])


async def create_session(client: httpx.AsyncClient, owner: Caller) -> str:
    session_id = str(uuid.uuid4())
    response = await client.post(
        "/api/v1/chat",
        json={"question": "What are the merger plans?", "session_id": session_id, "mode": "text"},
        headers=owner.headers,
    )
    assert response.status_code == 200, response.text
    return session_id


async def session_intact(client: httpx.AsyncClient, owner: Caller, session_id: str) -> bool:
    response = await client.get(f"/api/v1/sessions/{session_id}/messages", headers=owner.headers)
    return response.status_code == 200 and len(response.json()["messages"]) == 2


NEW_VERSION = {"file": ("v2.md", b"# Overwritten by tenant B", "text/markdown")}

RESOURCES = [
    Resource(
        name="api_keys",
        create=create_api_key,
        accesses=[Access("DELETE", "/api/v1/keys/{id}")],
        listings=["/api/v1/keys"],
        still_intact=api_key_intact,
    ),
    Resource(
        name="documents",
        create=create_document,
        accesses=[
            Access("GET", "/api/v1/docs/{id}"),
            Access("GET", "/api/v1/docs/{id}/versions"),
            Access("PATCH", "/api/v1/docs/{id}", json={"title": "pwned"}),
            Access("PUT", "/api/v1/docs/{id}", files=NEW_VERSION),
            Access("DELETE", "/api/v1/docs/{id}"),
            Access("POST", "/api/v1/docs/{id}/restore"),
            Access("POST", "/api/v1/docs/{id}/refresh"),
        ],
        listings=["/api/v1/docs", "/api/v1/docs?include_deleted=true"],
        still_intact=document_intact,
    ),
    Resource(name="jobs", create=create_job, accesses=[Access("GET", "/api/v1/jobs/{id}")]),
    Resource(
        name="sessions",
        create=create_session,
        accesses=[
            Access("GET", "/api/v1/sessions/{id}/messages"),
            Access("DELETE", "/api/v1/sessions/{id}"),
        ],
        still_intact=session_intact,
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
            access.method,
            access.path.format(id=object_id),
            json=access.json,
            files=access.files,
            headers=intruder.headers,
        )
        assert response.status_code == 404, f"{access.method} {access.path}: {response.text}"
        assert response.headers["content-type"].startswith("application/problem+json")
    for listing in resource.listings:
        response = await client.get(listing, headers=intruder.headers)
        assert response.status_code == 200
        assert object_id not in response.text
    if resource.name == "sessions":  # continuing someone else's session is refused the same way
        hijack = await client.post(
            "/api/v1/chat",
            json={"question": "What did they ask?", "session_id": object_id, "mode": "text"},
            headers=intruder.headers,
        )
        assert hijack.status_code == 404, hijack.text
    if resource.still_intact is not None:
        assert await resource.still_intact(client, owner, object_id)
