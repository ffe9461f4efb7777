from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.server import ServerProcess, service_env, start_server
from tests.support.services import RedisForTests


@pytest.fixture
def served_env() -> dict[str, str]:
    """Settings a module adds to ``served``'s: override this fixture in the module."""
    return {}


@pytest.fixture
def served(
    clean_database: str,
    redis_server: RedisForTests,
    redis_prefix: str,
    tmp_path: Path,
    served_env: dict[str, str],
) -> Iterator[ServerProcess]:
    """The real server with two gunicorn workers against this worker's test services;
    ``create_api_key(served.env)`` makes a key for it."""
    env = service_env(clean_database, redis_server.url, redis_prefix, tmp_path / "data", **served_env)
    server = start_server(env, tmp_path / "server.log")
    yield server
    server.stop()
