"""docker-compose.yml, read as Compose reads it (tests/support/compose.py): no Docker engine runs
here, so the file is checked against the code it starts and the promises of the README's Deploy
section. When Debian's ``docker-compose`` is installed, it validates the file as well."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

from app.cli import build_parser
from app.settings import Settings
from tests.support.compose import COMPOSE_FILE, MissingVariableError, interpolate, load_compose, raw_compose
from tests.support.debian import ensure_debian_packages

pytestmark = pytest.mark.unit

SECRETS = {"POSTGRES_PASSWORD": "pg-sentinel-0f3a", "REDIS_PASSWORD": "redis-sentinel-9c1e"}
APP_SERVICES = ("migrate", "api", "worker")


def services(env: dict[str, str] | None = None) -> dict[str, Any]:
    resolved: dict[str, Any] = load_compose(SECRETS if env is None else env)["services"]
    return resolved


def test_interpolation_follows_the_compose_rules() -> None:
    env = {"SET": "x", "EMPTY": ""}
    assert (
        interpolate("$$SET ${SET} $SET ${EMPTY:-d} ${EMPTY-d} ${UNSET-d} ${SET:+r}", env) == "$SET x x d  d r"
    )
    with pytest.raises(MissingVariableError, match="EMPTY: why"):
        interpolate("${EMPTY:?why}", env)
    with pytest.raises(ValueError, match="invalid interpolation"):
        interpolate("cost: 5$", env)


def test_compose_runs_api_replicas_workers_and_migrations_with_cli_commands() -> None:
    found = services()
    assert {"db", "redis", "redis-cache", "migrate", "api", "worker"} <= found.keys()
    parser = build_parser()
    for name in ("migrate", "worker"):
        command = found[name]["command"]
        assert command[:3] == ["python", "-m", "app"]
        parser.parse_args(command[3:])  # exits (fails the test) on an unknown command


def test_compose_only_sets_variables_the_service_reads() -> None:
    known = {name.upper() for name in Settings.model_fields}
    found = services()
    for name in APP_SERVICES:
        environment = found[name]["environment"]
        unknown = set(environment) - known
        assert not unknown, f"{name}: {unknown}"
        assert environment["DATABASE_URL"].startswith("postgresql+psycopg://")
        assert environment["RUN_WORKER_IN_PROCESS"] == "false"  # the workers ingest, not the APIs
        Settings(**{key.lower(): value for key, value in environment.items()}, _env_file=None)


@pytest.mark.parametrize("missing", sorted(SECRETS))
def test_compose_refuses_to_start_without_each_secret(missing: str) -> None:
    env = {name: value for name, value in SECRETS.items() if name != missing}
    with pytest.raises(MissingVariableError, match=f"{missing}: set {missing}"):
        load_compose(env)
    with pytest.raises(MissingVariableError):
        load_compose({**env, missing: ""})  # empty is as unset


def test_no_secret_is_written_in_the_file() -> None:
    text = COMPOSE_FILE.read_text()
    for line in text.splitlines():
        if re.search(r"(PASSWORD|SECRET|_KEY)\s*:", line):
            assert "${" in line, f"hard-coded secret: {line.strip()}"
        assert not re.search(r"://[^:/\s]*:(?!\$\{)[^@\s]+@", line), f"password in a URL: {line.strip()}"
    # Every secret the services see comes from the environment: provider keys default to empty.
    blank = services({**SECRETS})
    for name in APP_SERVICES:
        for key in ("GEMINI_API_KEY", "GROQ_API_KEY", "OPENAI_API_KEY"):
            assert blank[name]["environment"][key] == ""


def test_the_app_reaches_both_redis_servers_with_the_password() -> None:
    password = SECRETS["REDIS_PASSWORD"]
    for name in APP_SERVICES:
        environment = services()[name]["environment"]
        assert environment["REDIS_URL"] == f"redis://:{password}@redis:6379/0"
        assert environment["CACHE_REDIS_URL"] == f"redis://:{password}@redis-cache:6379/0"
        assert f":{SECRETS['POSTGRES_PASSWORD']}@db:5432/" in environment["DATABASE_URL"]


@pytest.mark.parametrize("name", ["redis", "redis-cache"])
def test_each_redis_requires_the_password_without_showing_it_on_a_command_line(name: str) -> None:
    service = services()[name]
    assert service["environment"]["REDIS_PASSWORD"] == SECRETS["REDIS_PASSWORD"]
    assert (
        service["user"] == "redis"
    )  # the command is not redis-server, so the image's drop to redis is skipped
    script = service["command"][-1]
    assert service["command"][:2] == ["sh", "-c"]
    assert re.search(r"^exec redis-server - ", script, re.M)  # configuration on stdin
    assert "requirepass $REDIS_PASSWORD" in script  # expanded by the container's shell, not compose
    assert SECRETS["REDIS_PASSWORD"] not in " ".join(service["command"])
    health = " ".join(service["healthcheck"]["test"])
    assert 'REDISCLI_AUTH="$REDIS_PASSWORD"' in health and "grep -q PONG" in health


def test_cache_redis_evicts_and_the_main_redis_never_does() -> None:
    found = services()
    assert "--maxmemory-policy noeviction" in found["redis"]["command"][-1]
    assert "--maxmemory-policy allkeys-lru" in found["redis-cache"]["command"][-1]


def test_the_api_publishes_on_loopback_by_default_with_a_port_per_replica() -> None:
    found = services()
    (mapping,) = found["api"]["ports"]
    bind, host_ports, container_port = mapping.split(":")
    assert bind == "127.0.0.1" and container_port == "8000"
    first, last = (int(port) for port in host_ports.split("-"))
    assert last - first + 1 >= 4  # `--scale api=3` (and one more) each get a port
    assert found["api"]["environment"]["HOST"] == "0.0.0.0"  # inside the container only
    assert services({**SECRETS, "API_BIND": "0.0.0.0"})["api"]["ports"] == ["0.0.0.0:8000-8009:8000"]
    for name, service in found.items():
        assert name == "api" or "ports" not in service, f"{name} publishes a port"
        assert "container_name" not in service  # would forbid --scale


def test_health_checks_gate_the_start_order() -> None:
    found = services()
    for name in ("db", "redis", "redis-cache", "api"):
        assert found[name]["healthcheck"]["test"][0] in ("CMD", "CMD-SHELL"), name
    assert "/readyz" in " ".join(found["api"]["healthcheck"]["test"])
    for name in ("migrate", "worker"):
        assert found[name]["healthcheck"] == {"disable": True}  # no HTTP server behind the image's check
    assert found["migrate"]["depends_on"] == {"db": {"condition": "service_healthy"}}
    assert found["api"]["depends_on"] == {
        "migrate": {"condition": "service_completed_successfully"},
        "redis": {"condition": "service_healthy"},
        "redis-cache": {"condition": "service_healthy"},
    }
    assert found["worker"]["depends_on"]["migrate"] == {"condition": "service_completed_successfully"}


def test_the_scale_flags_are_documented() -> None:
    for text in (COMPOSE_FILE.read_text(), (COMPOSE_FILE.parent / "README.md").read_text()):
        assert "--scale api=3 --scale worker=4" in text
    assert raw_compose()["x-app"]["image"] == "${RAGCHAT_IMAGE:-ragchat:latest}"


def docker_compose(tmp_path: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    ensure_debian_packages(["docker-compose"], ["docker-compose"])
    binary = shutil.which("docker-compose")
    assert binary is not None
    env_file = tmp_path / "empty.env"  # not the developer's .env beside the compose file
    env_file.write_text("")
    return subprocess.run(
        [binary, "--file", str(COMPOSE_FILE), "--env-file", str(env_file), "config", "--quiet"],
        env={"PATH": "/usr/bin:/bin", **env},
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_docker_compose_accepts_the_file(tmp_path: Path) -> None:
    result = docker_compose(tmp_path, SECRETS)
    assert result.returncode == 0, result.stderr


def test_docker_compose_refuses_it_without_the_database_password(tmp_path: Path) -> None:
    result = docker_compose(tmp_path, {"REDIS_PASSWORD": SECRETS["REDIS_PASSWORD"]})
    assert result.returncode != 0
    assert "set POSTGRES_PASSWORD" in result.stderr
