from __future__ import annotations

import json
import os
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import psutil
import pytest

from tests.support.server import ServerProcess, create_key
from tests.support.waiting import wait_for

pytestmark = [pytest.mark.e2e, pytest.mark.metrics]

JWT = "eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJhbGljZSJ9.c2lnbmF0dXJlLXBhcnQ"


@pytest.fixture
def served_env(tmp_path: Path) -> dict[str, str]:
    """Log files under tmp_path/logs, besides the JSON lines on stdout."""
    return {"LOG_TO_FILE": str(tmp_path / "logs")}


def json_lines(text: str) -> list[dict[str, Any]]:
    lines = []
    for line in text.splitlines():
        if line.startswith("{"):
            lines.append(json.loads(line))
    return lines


async def test_server_logs_are_json_correlated_masked_and_written_per_process(
    served: ServerProcess, tmp_path: Path
) -> None:
    issued = create_key(served.env)
    headers = {"X-API-Key": issued["key"]}
    async with httpx.AsyncClient(base_url=served.base_url, timeout=10) as client:
        me = await client.get("/api/v1/me", headers={**headers, "X-Request-ID": "e2e-me-1"})
        denied = await client.get(
            "/api/v1/me", headers={"Authorization": f"Bearer {JWT}", "X-Request-ID": "e2e-jwt-1"}
        )
    assert me.status_code == 200
    assert denied.status_code == 401

    def access_lines_written() -> bool:
        ids = {line.get("request_id") for line in json_lines(served.log()) if line["event"] == "request"}
        return {"e2e-me-1", "e2e-jwt-1"} <= ids

    wait_for(access_lines_written, timeout=10, what="both access lines in the server log")
    lines = json_lines(served.log())
    me_lines = [line for line in lines if line.get("request_id") == "e2e-me-1"]
    assert me_lines and {line["trace_id"] for line in me_lines} == {me.headers["X-Trace-ID"]}
    (access,) = [line for line in me_lines if line["event"] == "request"]
    assert (access["method"], access["route"], access["status"]) == ("GET", "/api/v1/me", 200)
    assert access["principal_id"] == f"key:{issued['id']}"
    denied_lines = [line for line in lines if line.get("request_id") == "e2e-jwt-1"]
    assert denied_lines and all(line["trace_id"] == denied.headers["X-Trace-ID"] for line in denied_lines)

    # gunicorn's own lines (master and workers) come through the same JSON pipeline.
    assert any(line.get("logger") == "gunicorn.error" and "Booting worker" in line["event"] for line in lines)

    # Files: one per process (master and both workers), named by date and pid.
    files = sorted((tmp_path / "logs").glob("ragchat-*.log"))
    stamp = f"{datetime.now(UTC):%Y%m%d}"
    pids = {int(path.stem.rsplit("-", 1)[1]) for path in files}
    master = psutil.Process(served.process.pid).children(recursive=True)
    gunicorn_pids = {p.pid for p in master if "gunicorn" in " ".join(p.cmdline())}
    assert gunicorn_pids <= pids, (gunicorn_pids, pids)
    assert all(path.name.startswith(f"ragchat-{stamp}-") for path in files)
    file_text = "\n".join(path.read_text() for path in files)
    assert any(json.loads(line).get("request_id") == "e2e-me-1" for line in file_text.splitlines() if line)

    secret = issued["key"].split("_", 2)[2]
    for text in (served.log(), file_text):
        assert secret not in text
        assert JWT not in text
    assert os.getpid() not in pids
