"""Acknowledged means durable: SIGKILL of the whole server right after a 202 loses nothing."""

from __future__ import annotations

import signal
from pathlib import Path

import httpx
import pytest

from tests.support.faults import slow_commits
from tests.support.server import create_api_key, start_server
from tests.support.services import RedisForTests
from tests.support.waiting import wait_for

pytestmark = pytest.mark.e2e


def test_uploads_acknowledged_just_before_a_sigkill_are_ingested_after_restart(
    clean_database: str, redis_server: RedisForTests, redis_prefix: str, tmp_path: Path
) -> None:
    env = {
        "DATABASE_URL": clean_database,
        "REDIS_URL": redis_server.url,
        "REDIS_KEY_PREFIX": redis_prefix,
        "DATA_DIR": str(tmp_path / "data"),
        "DEBUG": "true",
        "RUN_WORKER_IN_PROCESS": "false",  # nothing is ingested before the crash
    }
    headers = {"X-API-Key": create_api_key(env)}
    server = start_server(env, tmp_path / "first.log", workers=1)
    jobs = []
    with slow_commits(clean_database, 1.0):
        try:
            for number in range(3):
                accepted = httpx.post(
                    server.base_url + "/api/v1/docs",
                    files={"file": (f"n{number}.md", f"# Note {number}\n\nRoom {number} is blue.".encode())},
                    headers=headers,
                    timeout=30,
                )
                assert accepted.status_code == 202, accepted.text
                jobs.append(accepted.json()["status_url"])
        finally:
            server.stop(signal.SIGKILL)  # the whole process group, the instant the last 202 arrived

    restarted = start_server({**env, "RUN_WORKER_IN_PROCESS": "true"}, tmp_path / "second.log", workers=1)
    try:

        def statuses() -> list[str]:
            return [
                httpx.get(restarted.base_url + url, headers=headers, timeout=10).json().get("status", "?")
                for url in jobs
            ]

        wait_for(lambda: set(statuses()) <= {"succeeded", "failed"}, timeout=180, interval=0.3, what="jobs")
        assert statuses() == ["succeeded"] * 3
        listed = httpx.get(restarted.base_url + "/api/v1/docs", headers=headers, timeout=10).json()
        assert listed["total"] == 3, listed
    finally:
        restarted.stop()
