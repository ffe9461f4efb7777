from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.server import ServerProcess, start_server
from tests.support.services import RedisForTests


@pytest.fixture
def served(
    clean_database: str, redis_server: RedisForTests, redis_prefix: str, tmp_path: Path
) -> Iterator[ServerProcess]:
    """The real server with two gunicorn workers against this worker's test services."""
    server = start_server(
        {
            "DATABASE_URL": clean_database,
            "REDIS_URL": redis_server.url,
            "REDIS_KEY_PREFIX": redis_prefix,
            "DATA_DIR": str(tmp_path / "data"),
            "DEBUG": "true",
            "LOG_JSON": "true",
        },
        tmp_path / "server.log",
    )
    yield server
    server.stop()
