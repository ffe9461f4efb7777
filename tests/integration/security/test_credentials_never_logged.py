from __future__ import annotations

import logging
from pathlib import Path

import pytest
import structlog

from app.auth.api_keys import get_or_create_tenant
from app.auth.principal import Role
from app.settings import Settings
from tests.support.apps import running_app
from tests.support.jwks import AUDIENCE, ISSUER, rsa_key, serve_issuer

pytestmark = pytest.mark.integration


async def test_a_run_with_real_keys_and_tokens_logs_none_of_them(
    settings: Settings, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    signing = rsa_key("RS256", kid="log-1")
    log_dir = tmp_path / "logs"
    with serve_issuer(signing) as issuer:
        async with running_app(
            settings,
            log_level="DEBUG",
            log_to_file=log_dir,
            auth_jwks_url=issuer.jwks_url,
            auth_jwt_issuer=ISSUER,
            auth_jwt_audience=AUDIENCE,
            rate_limit_per_ip="8/minute",
        ) as (app, client, make):
            async with app.state.resources.session_factory() as session, session.begin():
                await get_or_create_tenant(session, "acme")
            admin = await make(tenant="acme", role=Role.admin)
            token = issuer.token(roles=["admin"])
            expired = issuer.token(lifetime_s=-600)
            created = (
                await client.post("/api/v1/keys", json={"role": "reader"}, headers=admin.headers)
            ).json()
            secrets = [admin.key, token, expired, created["key"]]
            for headers in (
                {"Authorization": f"Bearer {token}"},
                {"Authorization": f"Bearer {expired}"},
                {"X-API-Key": created["key"]},
                {"X-API-Key": admin.key + "tampered"},
                {"Authorization": "Basic " + "aHVudGVyMi1wYXNzd29yZA=="},
            ):
                await client.get(f"/api/v1/me?api_key={created['key']}", headers=headers)
            # Exhaust the IP budget so the 429 path is logged as well.
            for _ in range(6):
                await client.get("/api/v1/me", headers={"X-API-Key": admin.key})
            # A component that carelessly logs a credential-bearing value still gets masked.
            structlog.get_logger("test.careless").warning(
                "debugging", authorization=f"Bearer {token}", api_key=admin.key, note=f"key={created['key']}"
            )
            logging.getLogger("test.stdlib").warning("header was Bearer %s", token)

    captured = capsys.readouterr()
    files = "".join(path.read_text() for path in log_dir.glob("*.log"))
    everything = captured.out + captured.err + files
    assert '"event":"request"' in everything and "debugging" in everything  # logs were captured
    for secret in secrets:
        assert secret not in everything
    assert created["key"].split("_", 2)[2] not in everything  # not even the secret part
