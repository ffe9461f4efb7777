"""Docker cannot run here, so the deployment files are checked against the code they start:
every command is one the CLI accepts, every variable one the settings read, every copied path
exists, and the image keeps its promises (multi-stage, non-root, health check)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

from app.cli import build_parser
from app.settings import Settings

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[2]


def compose() -> dict[str, object]:
    data: dict[str, object] = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    return data


def test_compose_runs_api_replicas_workers_and_migrations_with_cli_commands() -> None:
    services = compose()["services"]
    assert isinstance(services, dict)
    assert {"db", "redis", "redis-cache", "migrate", "api", "worker"} <= services.keys()
    parser = build_parser()
    for name in ("migrate", "worker"):
        command = services[name]["command"]
        assert command[:3] == ["python", "-m", "app"]
        parser.parse_args(command[3:])  # exits (fails the test) on an unknown command


def test_compose_only_sets_variables_the_service_reads() -> None:
    known = {name.upper() for name in Settings.model_fields}
    services = compose()["services"]
    assert isinstance(services, dict)
    for name in ("api", "worker", "migrate"):
        environment = services[name]["environment"]
        unknown = set(environment) - known
        assert not unknown, f"{name}: {unknown}"
        assert environment["DATABASE_URL"].startswith("postgresql+psycopg://")


def test_dockerfile_is_multi_stage_non_root_with_a_health_check_and_existing_paths() -> None:
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert len(re.findall(r"^FROM ", dockerfile, re.M)) >= 2
    assert re.search(r"^USER (?!root)\w+", dockerfile, re.M)
    assert "HEALTHCHECK" in dockerfile and "/healthz" in dockerfile
    for line in dockerfile.splitlines():
        if not line.startswith("COPY ") or "--from=" in line:
            continue  # copies between stages name paths inside the image
        *sources, _destination = [part for part in line.split()[1:] if not part.startswith("--")]
        for path in sources:
            assert (ROOT / path).exists(), f"COPY {path}: missing"
    assert "--require-hashes" in dockerfile


def test_compose_takes_secrets_from_the_environment_only() -> None:
    text = (ROOT / "docker-compose.yml").read_text()
    assert "${POSTGRES_PASSWORD:?" in text  # refuses to start without one
    for line in text.splitlines():
        if re.search(r"(PASSWORD|SECRET|_KEY)\s*:", line):
            assert "${" in line, f"hard-coded secret: {line.strip()}"
        assert not re.search(r"://[^:/\s]+:(?!\$\{)[^@\s]+@", line), f"password in a URL: {line.strip()}"
