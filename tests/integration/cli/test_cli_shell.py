"""``make shell``: a shell whose environment is the service's (venv first on PATH, server URLs)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.server import ROOT
from tests.support.services import RedisForTests

pytestmark = pytest.mark.integration


def test_shell_runs_with_the_venv_and_the_service_urls(
    clean_database: str, redis_server: RedisForTests, tmp_path: Path
) -> None:
    env = {
        **os.environ,
        "DATABASE_URL": clean_database,
        "REDIS_URL": redis_server.url,
        "DATA_DIR": str(tmp_path / "data"),
        "PATH": "/usr/bin:/bin",  # the venv is not on PATH until the shell puts it there
    }
    result = subprocess.run(
        [sys.executable, "-m", "app", "shell", "-c", 'command -v python; echo "db=$DATABASE_URL"'],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    python_path, db_line = result.stdout.splitlines()
    assert Path(python_path).parent == Path(sys.executable).parent
    assert db_line == f"db={clean_database}"
    assert f"REDIS_URL={redis_server.url}" in result.stderr  # what the shell is connected to
