"""Every endpoint that exists, with the least role that may call it: lower roles get 403, no
credentials 401. Add a row when an endpoint lands."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any

import httpx
import pytest

from app.auth.principal import Role
from tests.support.callers import MakeCaller

pytestmark = pytest.mark.integration


@dataclass(frozen=True)
class Endpoint:
    method: str
    path: str
    least_role: Role
    json: Any = None
    files: Any = None

    def __str__(self) -> str:
        return f"{self.method} {self.path}"


ENDPOINTS = [
    Endpoint("GET", "/api/v1/me", Role.reader),
    Endpoint("GET", "/api/v1/rate-limit/status", Role.reader),
    Endpoint("GET", "/api/v1/keys", Role.admin),
    Endpoint("POST", "/api/v1/keys", Role.admin, {"role": "reader", "name": "matrix"}),
    Endpoint("DELETE", f"/api/v1/keys/{uuid.UUID(int=1)}", Role.admin),
    Endpoint("GET", "/api/v1/docs", Role.reader),
    Endpoint("GET", f"/api/v1/docs/{uuid.UUID(int=2)}", Role.reader),
    Endpoint("GET", f"/api/v1/docs/{uuid.UUID(int=2)}/versions", Role.reader),
    Endpoint("GET", f"/api/v1/jobs/{uuid.UUID(int=3)}", Role.reader),
    Endpoint("POST", "/api/v1/docs", Role.editor, files={"file": ("a.md", b"# A\n\ntext", "text/markdown")}),
    Endpoint(
        "PUT",
        f"/api/v1/docs/{uuid.UUID(int=2)}",
        Role.editor,
        files={"file": ("a.md", b"# A", "text/markdown")},
    ),
    Endpoint("PATCH", f"/api/v1/docs/{uuid.UUID(int=2)}", Role.editor, {"title": "t"}),
    Endpoint("DELETE", f"/api/v1/docs/{uuid.UUID(int=2)}", Role.editor),
    Endpoint("POST", f"/api/v1/docs/{uuid.UUID(int=2)}/restore", Role.editor),
    Endpoint("POST", f"/api/v1/docs/{uuid.UUID(int=2)}/refresh", Role.editor),
    Endpoint("POST", "/api/v1/docs", Role.editor, {"url": "http://10.0.0.1/wiki"}),
    Endpoint("POST", "/api/v1/chat", Role.reader, {"question": "anything?", "mode": "text"}),
    Endpoint("GET", f"/api/v1/sessions/{uuid.UUID(int=4)}/messages", Role.reader),
    Endpoint("DELETE", f"/api/v1/sessions/{uuid.UUID(int=4)}", Role.reader),
    Endpoint("GET", "/api/v1/providers", Role.reader),
    Endpoint("POST", "/api/v1/feedback", Role.reader, {"trace_id": "0" * 31 + "1", "score": 1}),
    Endpoint("GET", "/api/v1/feedback", Role.admin),
]


@pytest.mark.parametrize("endpoint", ENDPOINTS, ids=str)
async def test_role_matrix(client: httpx.AsyncClient, make_caller: MakeCaller, endpoint: Endpoint) -> None:
    anonymous = await client.request(endpoint.method, endpoint.path, json=endpoint.json, files=endpoint.files)
    assert anonymous.status_code == 401, anonymous.text
    for role in Role:
        caller = await make_caller(tenant="acme", role=role)
        response = await client.request(
            endpoint.method, endpoint.path, json=endpoint.json, files=endpoint.files, headers=caller.headers
        )
        if role.allows(endpoint.least_role):
            assert response.status_code not in (401, 403), f"{role} on {endpoint}: {response.text}"
        else:
            assert response.status_code == 403, f"{role} on {endpoint}: {response.text}"
            assert response.json()["code"] == "forbidden"
