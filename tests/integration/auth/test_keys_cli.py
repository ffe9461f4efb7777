from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
from fastapi import FastAPI

from app.auth.api_keys import get_or_create_tenant
from app.auth.bootstrap import DEV_TENANT, bootstrap_dev_admin, dev_key_path
from tests.support.services import ROOT

pytestmark = pytest.mark.integration


def run_cli(settings_env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "app", *args],
        cwd=ROOT,
        env={**os.environ, **settings_env},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


@pytest.fixture
def cli_env(app: FastAPI, tmp_path: Path) -> dict[str, str]:
    settings = app.state.resources.settings
    return {
        "DATABASE_URL": settings.database_url,
        "REDIS_URL": settings.redis_url,
        "DATA_DIR": str(tmp_path / "cli-data"),
        "DEBUG": "true",
    }


async def test_keys_create_list_revoke_round_trip(client: httpx.AsyncClient, cli_env: dict[str, str]) -> None:
    created = run_cli(
        cli_env,
        *("keys", "create", "--tenant", "initech", "--role", "editor", "--name", "ops", "--json"),
        *("--group", "hr", "--group", "eng"),
    )
    assert created.returncode == 0, created.stderr
    lines = created.stdout.strip().splitlines()
    assert len(lines) == 1
    issued = json.loads(lines[0])
    assert set(issued) == {"id", "key", "tenant", "role", "groups"}
    assert (issued["tenant"], issued["role"], issued["groups"]) == ("initech", "editor", "eng,hr")
    me = await client.get("/api/v1/me", headers={"X-API-Key": issued["key"]})
    assert me.status_code == 200 and me.json()["role"] == "editor"
    assert me.json()["groups"] == ["eng", "hr"]
    refused = run_cli(cli_env, "keys", "create", "--tenant", "initech", "--role", "reader", "--group", "a b")
    assert refused.returncode == 2 and "invalid" not in refused.stdout and "does not match" in refused.stderr

    listed = run_cli(cli_env, "keys", "list", "--tenant", "initech", "--json")
    assert listed.returncode == 0, listed.stderr
    assert [key["id"] for key in json.loads(listed.stdout)] == [issued["id"]]
    assert issued["key"] not in listed.stdout

    revoked = run_cli(cli_env, "keys", "revoke", issued["id"])
    assert revoked.returncode == 0, revoked.stderr
    assert (await client.get("/api/v1/me", headers={"X-API-Key": issued["key"]})).status_code == 401


def test_keys_create_refuses_an_unknown_role(cli_env: dict[str, str]) -> None:
    result = run_cli(cli_env, "keys", "create", "--tenant", "t", "--role", "owner")
    assert result.returncode != 0
    assert "invalid choice" in result.stderr


def test_revoking_an_unknown_key_fails_cleanly(cli_env: dict[str, str]) -> None:
    result = run_cli(cli_env, "keys", "revoke", "00000000-0000-0000-0000-000000000001")
    assert result.returncode == 1
    assert "no key" in result.stderr and "Traceback" not in result.stderr


async def test_dev_bootstrap_issues_an_admin_key_once_into_a_private_file(
    app: FastAPI, client: httpx.AsyncClient, tmp_path: Path
) -> None:
    factory = app.state.resources.session_factory
    async with factory() as session, session.begin():
        issued = await bootstrap_dev_admin(session, tmp_path)
    assert issued is not None and issued.tenant == DEV_TENANT
    path = dev_key_path(tmp_path)
    assert path.read_text().strip() == issued.key
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    me = await client.get("/api/v1/me", headers={"X-API-Key": issued.key})
    assert me.json()["role"] == "admin"
    async with factory() as session, session.begin():
        assert await bootstrap_dev_admin(session, tmp_path) is None
    assert path.read_text().strip() == issued.key


async def test_dev_bootstrap_still_issues_a_key_when_seeding_created_the_tenant_first(
    app: FastAPI, client: httpx.AsyncClient, tmp_path: Path
) -> None:
    """`make run` seeds the demo documents (creating the dev tenant) before `serve` bootstraps."""
    factory = app.state.resources.session_factory
    async with factory() as session, session.begin():
        await get_or_create_tenant(session, DEV_TENANT, "Development")
    async with factory() as session, session.begin():
        issued = await bootstrap_dev_admin(session, tmp_path)
    assert issued is not None
    assert (await client.get("/api/v1/me", headers={"X-API-Key": issued.key})).status_code == 200
