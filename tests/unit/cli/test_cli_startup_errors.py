"""Startup failures are one clear sentence on stderr and a non-zero exit, never a traceback."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.server import ROOT

pytestmark = pytest.mark.unit


def run_cli(*args: str, env: dict[str, str], timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "app", *args],
        cwd=ROOT,
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def assert_one_clear_sentence(result: subprocess.CompletedProcess[str], *fragments: str) -> None:
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    for fragment in fragments:
        assert fragment in lines[0]


def test_occupied_port_is_reported(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = run_cli("serve", "--port", str(port), env={"DATA_DIR": str(tmp_path)})
    assert_one_clear_sentence(result, f"127.0.0.1:{port}", "--port")


def test_unwritable_data_dir_is_reported(tmp_path: Path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    result = run_cli("migrate", env={"DATA_DIR": str(blocker / "data")})
    assert_one_clear_sentence(result, "cannot write to", "DATA_DIR")


def test_unreachable_external_database_is_reported(tmp_path: Path) -> None:
    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]
    result = run_cli(
        "migrate",
        env={
            "DATA_DIR": str(tmp_path),
            "DATABASE_URL": f"postgresql+psycopg://nobody@127.0.0.1:{port}/none",
            "REDIS_URL": "redis://127.0.0.1:1/0",
        },
    )
    assert_one_clear_sentence(result, "cannot reach PostgreSQL at DATABASE_URL")


def test_invalid_setting_is_reported(tmp_path: Path) -> None:
    result = run_cli("migrate", env={"DATA_DIR": str(tmp_path), "PORT": "not-a-number"})
    assert_one_clear_sentence(result, "invalid configuration", "PORT")
