from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from app.auth.api_keys import get_or_create_tenant
from app.resources import Resources
from app.settings import Settings
from tests.support.apps import running_app
from tests.support.jwks import AUDIENCE, ISSUER, Issuer, rsa_key, serve_issuer, unsigned_token

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("acme")]

KEY = rsa_key("RS256", kid="int-1")


@pytest.fixture
def issuer() -> Iterator[Issuer]:
    with serve_issuer(KEY) as served:
        yield served


@pytest.fixture
def settings(settings: Settings, issuer: Issuer) -> Settings:
    """The app trusts the issuer's tokens."""
    update = {"auth_jwks_url": issuer.jwks_url, "auth_jwt_issuer": ISSUER, "auth_jwt_audience": AUDIENCE}
    return settings.model_copy(update=update)


@pytest.fixture
async def acme(resources: Resources) -> None:
    """The tenant the issuer's tokens name."""
    async with resources.session_factory() as session, session.begin():
        await get_or_create_tenant(session, "acme")


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def test_jwt_principal_is_the_user_in_the_named_tenant(
    client: httpx.AsyncClient, issuer: Issuer
) -> None:
    response = await client.get("/api/v1/me", headers=bearer(issuer.token(sub="u-42", roles=["editor"])))
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["principal_id"] == "user:u-42"
    assert (body["kind"], body["role"]) == ("jwt", "editor")
    assert body["groups"] == []


async def test_jwt_groups_come_from_the_groups_claim(client: httpx.AsyncClient, issuer: Issuer) -> None:
    listed = issuer.token(groups=["hr", "eng", "not a group", 7])
    spaced = issuer.token(groups="finance hr")
    assert (await client.get("/api/v1/me", headers=bearer(listed))).json()["groups"] == ["eng", "hr"]
    assert (await client.get("/api/v1/me", headers=bearer(spaced))).json()["groups"] == ["finance", "hr"]


@pytest.mark.parametrize(
    ("make_token", "code"),
    [
        (lambda i: i.token(lifetime_s=-600), "token_expired"),
        (lambda i: i.token(aud="other-api"), "invalid_token"),
        (lambda i: i.token(iss="https://evil.test/"), "invalid_token"),
        (lambda i: i.token(tenant="no-such-tenant"), "invalid_token"),
        (lambda i: i.token(rsa_key("RS256", kid=KEY.kid)), "invalid_token"),
        (
            lambda i: unsigned_token(
                iss=ISSUER, aud=AUDIENCE, sub="x", tenant="acme", roles=["admin"], exp=2**31
            ),
            "invalid_token",
        ),
    ],
    ids=["expired", "wrong-audience", "wrong-issuer", "foreign-tenant", "forged-signature", "alg-none"],
)
async def test_bad_tokens_are_401_problems_without_hints(  # type: ignore[no-untyped-def]
    client: httpx.AsyncClient, issuer: Issuer, make_token, code: str
) -> None:
    token = make_token(issuer)
    response = await client.get("/api/v1/me", headers=bearer(token))
    assert response.status_code == 401
    assert response.headers["content-type"].startswith("application/problem+json")
    assert response.headers["WWW-Authenticate"].startswith("Bearer")
    assert response.json()["code"] == code
    assert token not in response.text
    assert "signature" not in response.text.lower() and "audience" not in response.text.lower()


async def test_token_without_a_service_role_is_403(client: httpx.AsyncClient, issuer: Issuer) -> None:
    response = await client.get("/api/v1/me", headers=bearer(issuer.token(roles=["viewer"])))
    assert response.status_code == 403
    assert response.json()["code"] == "forbidden"


async def test_reader_token_cannot_use_admin_endpoints(client: httpx.AsyncClient, issuer: Issuer) -> None:
    response = await client.get("/api/v1/keys", headers=bearer(issuer.token(roles=["reader"])))
    assert response.status_code == 403


async def test_admin_token_manages_keys_of_its_tenant(client: httpx.AsyncClient, issuer: Issuer) -> None:
    headers = bearer(issuer.token(roles=["admin"]))
    created = await client.post("/api/v1/keys", json={"role": "reader"}, headers=headers)
    assert created.status_code == 201
    assert created.json()["tenant"] == "acme"


async def test_jwts_are_refused_when_no_issuer_is_configured(settings: Settings) -> None:
    unconfigured: dict[str, Any] = {"auth_jwks_url": None, "auth_jwt_issuer": None, "auth_jwt_audience": None}
    async with running_app(settings, **unconfigured) as (_, client, _make):
        with serve_issuer(KEY) as issuer:
            response = await client.get("/api/v1/me", headers=bearer(issuer.token()))
    assert response.status_code == 401
    assert response.json()["code"] == "invalid_credentials"
