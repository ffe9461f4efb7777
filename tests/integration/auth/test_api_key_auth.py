from __future__ import annotations

from datetime import UTC, datetime

import httpx
import pytest
from sqlalchemy import event, update

from app.auth.authenticator import VERIFIED_KEY_TTL_S
from app.auth.principal import Role
from app.db.models import ApiKey
from tests.support.callers import MakeCaller
from tests.support.clock import SteppedClock

pytestmark = pytest.mark.integration


async def test_missing_credentials_are_401_problem(client: httpx.AsyncClient) -> None:
    response = await client.get("/api/v1/me")
    assert response.status_code == 401
    assert response.json()["code"] == "unauthenticated"
    assert response.headers["content-type"].startswith("application/problem+json")


@pytest.mark.parametrize(
    "credential", ["rk_000000000000_wrong", "not-a-key", "rk_short_x", "Bearer", "rk__" + "a" * 60]
)
async def test_unknown_or_malformed_keys_are_rejected_alike(
    client: httpx.AsyncClient, credential: str
) -> None:
    response = await client.get("/api/v1/me", headers={"X-API-Key": credential})
    assert response.status_code == 401
    assert response.json()["code"] == "invalid_credentials"
    assert credential not in response.text


async def test_key_works_in_either_header(client: httpx.AsyncClient, make_caller: MakeCaller) -> None:
    caller = await make_caller(tenant="acme", role=Role.reader)
    by_header = await client.get("/api/v1/me", headers={"X-API-Key": caller.key})
    by_bearer = await client.get("/api/v1/me", headers={"Authorization": f"Bearer {caller.key}"})
    assert by_header.status_code == by_bearer.status_code == 200
    assert by_header.json() == by_bearer.json()
    assert by_header.json()["role"] == "reader"
    assert by_header.json()["tenant_id"] == str(caller.tenant_id)


async def test_a_key_revoked_elsewhere_stops_working_within_a_second(
    app, client: httpx.AsyncClient, make_caller: MakeCaller
) -> None:  # type: ignore[no-untyped-def]
    """Revoked by another worker or the CLI: this worker trusts the key it verified for at most
    ``VERIFIED_KEY_TTL_S`` (1 s) more."""
    clock = app.state.resources.authenticator.clock = SteppedClock()
    caller = await make_caller()
    assert (await client.get("/api/v1/me", headers=caller.headers)).status_code == 200
    async with app.state.resources.session_factory() as session, session.begin():
        await session.execute(
            update(ApiKey).where(ApiKey.id == caller.key_id).values(revoked_at=datetime.now(UTC))
        )
    clock.advance(VERIFIED_KEY_TTL_S)
    assert (await client.get("/api/v1/me", headers=caller.headers)).status_code == 401


async def test_a_key_revoked_through_the_api_stops_working_at_once_on_that_worker(
    app, client: httpx.AsyncClient, make_caller: MakeCaller
) -> None:  # type: ignore[no-untyped-def]
    admin = await make_caller(tenant="acme", role=Role.admin)
    reader = await make_caller(tenant="acme", role=Role.reader)
    assert (await client.get("/api/v1/me", headers=reader.headers)).status_code == 200
    revoked = await client.delete(f"/api/v1/keys/{reader.key_id}", headers=admin.headers)
    assert revoked.status_code == 204
    assert (await client.get("/api/v1/me", headers=reader.headers)).status_code == 401


async def test_a_verified_key_is_looked_up_once_per_second_not_per_request(
    app, client: httpx.AsyncClient, make_caller: MakeCaller
) -> None:  # type: ignore[no-untyped-def]
    clock = app.state.resources.authenticator.clock = SteppedClock(base=lambda: 0.0)
    caller = await make_caller()
    lookups = 0

    def count(*_: object) -> None:
        nonlocal lookups
        lookups += 1

    pool = app.state.resources.engine.sync_engine.pool
    event.listen(pool, "checkout", count)
    try:
        for _ in range(5):
            assert (await client.get("/api/v1/me", headers=caller.headers)).status_code == 200
        clock.advance(VERIFIED_KEY_TTL_S)
        assert (await client.get("/api/v1/me", headers=caller.headers)).status_code == 200
    finally:
        event.remove(pool, "checkout", count)
    assert lookups == 2


async def test_last_used_is_recorded_once_per_window(
    app, client: httpx.AsyncClient, make_caller: MakeCaller
) -> None:  # type: ignore[no-untyped-def]
    caller = await make_caller()
    await client.get("/api/v1/me", headers=caller.headers)
    async with app.state.resources.session_factory() as session:
        first = await session.get(ApiKey, caller.key_id)
        assert first is not None and first.last_used_at is not None
        stamp = first.last_used_at
    await client.get("/api/v1/me", headers=caller.headers)
    async with app.state.resources.session_factory() as session:
        second = await session.get(ApiKey, caller.key_id)
        assert second is not None and second.last_used_at == stamp
