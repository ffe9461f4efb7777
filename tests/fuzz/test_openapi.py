"""Hostile input: Schemathesis over every operation of the service's own OpenAPI.

The real server (`python -m app serve`, one worker) runs as a subprocess on this worker's real
PostgreSQL and Redis, with the OpenAI provider played by the wire-level fake so `/api/v1/chat`
answers without a cloud API. The schema is the server's own `/openapi.json`; every operation is
called over real HTTP as an admin of a real tenant, so every endpoint is reachable. Each response
must not be a server error (no 5xx at all: not even a 503, the database and Redis are up) and must
conform to the response schema the operation documents for its status code.

Before the run the tenant gets real resources (an ingested document with two versions and their
jobs, a conversation, a second key), and a path parameter is now and then swapped for one of their
ids, so the operations on an existing resource are exercised too, not only their 404s.

`make test` runs a bounded number of examples per operation; `make fuzz` runs the same test longer
(`FUZZ_EXAMPLES=500`). On a failure, Schemathesis prints the request to reproduce it (a curl line).
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import response_schema_conformance

from tests.fakes.fake_llm_server import FakeLLMServer
from tests.support.server import ServerProcess, create_api_key, fake_openai_env, start_server
from tests.support.services import RedisForTests

# Generated examples per operation in the fuzzing phase (the examples and coverage phases add the
# schema's own examples and boundary values on top). Small by default so `make test` stays quick.
FUZZ_EXAMPLES = int(os.environ.get("FUZZ_EXAMPLES", "15"))

# Every operation runs inside the one test item, so the per-test timeout grows with the run.
pytestmark = [pytest.mark.fuzz, pytest.mark.integration, pytest.mark.timeout(300 + 6 * FUZZ_EXAMPLES)]
TENANT = "fuzz"
UNLIMITED = "100000/minute"
GUIDE = b"# Key rotation\n\nRotate every API key at least every 90 days and revoke the old one at once.\n"
GUIDE_V2 = GUIDE + b"\nA revoked key is refused with 401 from the next request on.\n"


@dataclass
class Target:
    """The running server, the admin key Schemathesis calls it with and the tenant's resources.

    ``reserve`` is a second admin key of the same tenant that no generated request carries: when a
    case revokes the key in use (`DELETE /api/v1/keys/{key_id}` with its own id, a legal request),
    a fresh admin key is issued with it, so the cases after it are not all answered 401."""

    server: ServerProcess
    key: str
    reserve: str
    session: requests.Session
    known_ids: dict[str, list[str]] = field(default_factory=dict)

    @property
    def base_url(self) -> str:
        return self.server.base_url

    def renew_key_if_revoked(self) -> None:
        me = httpx.get(self.base_url + "/api/v1/me", headers={"X-API-Key": self.key}, timeout=10)
        if me.status_code != 401:
            return
        created = httpx.post(
            self.base_url + "/api/v1/keys",
            json={"role": "admin", "name": "fuzz"},
            headers={"X-API-Key": self.reserve},
            timeout=10,
        )
        assert created.status_code == 201, created.text
        # `known_ids` stays as seeded: Hypothesis needs the same choices for the whole run.
        self.key = str(created.json()["key"])


def wait_for_job(http: httpx.Client, job_id: str, timeout: float = 180) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        job = http.get(f"/api/v1/jobs/{job_id}").json()
        if job["status"] in ("succeeded", "failed"):
            assert job["status"] == "succeeded", job
            return
        time.sleep(0.2)
    raise AssertionError(f"ingestion job {job_id} did not finish within {timeout}s")


def seed_tenant(target: Target) -> None:
    """Real resources in the tenant, made as a client would; their ids go to `known_ids`."""
    with httpx.Client(base_url=target.base_url, headers={"X-API-Key": target.key}, timeout=120) as http:
        uploaded = http.post(
            "/api/v1/docs",
            files={"file": ("guide.md", GUIDE, "text/markdown")},
            data={"title": "Key guide", "tags": "ops,security", "author": "Ops"},
        )
        assert uploaded.status_code == 202, uploaded.text
        document_id = uploaded.json()["document_id"]
        replaced = http.put(
            f"/api/v1/docs/{document_id}", files={"file": ("guide.md", GUIDE_V2, "text/markdown")}
        )
        assert replaced.status_code == 202, replaced.text
        wait_for_job(http, replaced.json()["job_id"])  # by the server's own in-process worker
        asked = http.post("/api/v1/chat", json={"question": "How often are keys rotated?"})
        assert asked.status_code == 200, asked.text
        spare = http.post("/api/v1/keys", json={"role": "reader", "name": "spare"})
        assert spare.status_code == 201, spare.text
        own = http.get("/api/v1/me").json()["principal_id"].removeprefix("key:")
    target.known_ids.update(
        document_id=[document_id],
        job_id=[uploaded.json()["job_id"], replaced.json()["job_id"]],
        session_id=[asked.json()["session_id"]],
        key_id=[spare.json()["id"], own],
    )


@pytest.fixture
def fuzz_target(
    clean_database: str, redis_server: RedisForTests, redis_prefix: str, tmp_path: Path
) -> Iterator[Target]:
    fake = FakeLLMServer().start()
    env = {
        "DATABASE_URL": clean_database,
        "REDIS_URL": redis_server.url,
        "REDIS_KEY_PREFIX": redis_prefix,
        "DATA_DIR": str(tmp_path / "data"),
        "DEBUG": "true",
        "LOG_JSON": "true",
        # Uploads are ingested by the server itself, with the model that also embeds questions.
        "RUN_WORKER_IN_PROCESS": "true",
        **fake_openai_env(fake.openai_base_url),
        # Limits high enough that a 429 never stands in for the answer under test.
        "RATE_LIMIT_PER_PRINCIPAL": UNLIMITED,
        "RATE_LIMIT_PER_IP": UNLIMITED,
        "RATE_LIMIT_PER_TENANT": UNLIMITED,
        "RATE_LIMIT_UPLOADS": "100000/hour",
    }
    try:
        key = create_api_key(env, tenant=TENANT, role="admin")
        server = start_server(env, tmp_path / "server.log", workers=1)
        try:
            with requests.Session() as session:
                reserve = httpx.post(
                    server.base_url + "/api/v1/keys",
                    json={"role": "admin", "name": "reserve"},
                    headers={"X-API-Key": key},
                    timeout=10,
                )
                assert reserve.status_code == 201, reserve.text
                target = Target(server=server, key=key, reserve=reserve.json()["key"], session=session)
                seed_tenant(target)
                yield target
        finally:
            server.stop()
    finally:
        fake.stop()


@pytest.fixture
def api_schema(fuzz_target: Target) -> schemathesis.BaseSchema:
    loaded = schemathesis.openapi.from_url(fuzz_target.base_url + "/openapi.json")

    @loaded.hook
    def flatmap_path_parameters(
        context: Any, path_parameters: dict[str, Any] | None
    ) -> st.SearchStrategy[Any]:
        """Now and then, an id of a resource that exists in the tenant instead of the generated one."""
        if not path_parameters:
            return st.just(path_parameters)
        choices = {
            name: st.sampled_from([value, *fuzz_target.known_ids[name]])
            for name, value in path_parameters.items()
            if name in fuzz_target.known_ids
        }
        return st.fixed_dictionaries(choices).map(lambda swapped: {**path_parameters, **swapped})

    return loaded


schema = schemathesis.pytest.from_fixture("api_schema")


@pytest.fixture(autouse=True)
def _node_id_for_schemathesis(request: pytest.FixtureRequest) -> None:
    """Schemathesis 4.32's `from_fixture` reads (and rewrites, to name each operation) the test
    item's private `_nodeid`, which pytest 9.2 no longer has (it became `_id`): give it one."""
    if not hasattr(request.node, "_nodeid"):
        request.node._nodeid = request.node.nodeid


@schema.parametrize()
@settings(
    max_examples=FUZZ_EXAMPLES,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)
def test_every_operation_answers_without_server_error_and_as_documented(
    case: schemathesis.Case[Any], fuzz_target: Target
) -> None:
    response = case.call(
        base_url=fuzz_target.base_url,
        session=fuzz_target.session,
        headers={"X-API-Key": fuzz_target.key},
        timeout=30,
    )
    if case.method == "DELETE" and case.path == "/api/v1/keys/{key_id}":
        fuzz_target.renew_key_if_revoked()  # before the checks, which may fail this case
    case.validate_response(response, checks=[not_a_server_error, response_schema_conformance])
