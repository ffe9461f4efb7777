from __future__ import annotations

import signal
import time
from pathlib import Path

import httpx
import psutil
import psycopg
import pytest

from tests.support.server import ServerProcess, start_server

pytestmark = pytest.mark.e2e


def test_two_worker_server_is_ready(served: ServerProcess) -> None:
    response = httpx.get(served.base_url + "/readyz", timeout=5)
    assert response.status_code == 200, response.text
    assert response.json()["checks"]["pgvector"]["version"].startswith("0.8")
    workers = psutil.Process(served.process.pid).children(recursive=True)
    assert sum("gunicorn" in " ".join(p.cmdline()) for p in workers) >= 2


def processes_using(data_dir: Path) -> list[str]:
    found = []
    for proc in psutil.process_iter(["cmdline"]):
        cmdline = " ".join(proc.info["cmdline"] or [])
        if str(data_dir) in cmdline and ("postgres" in cmdline or "redis" in cmdline):
            found.append(cmdline)
    return found


def is_running(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def embedded_conninfo(data_dir: Path) -> str:
    lines = (data_dir / "postgres" / "postmaster.pid").read_text().splitlines()
    return f"postgresql://postgres@/ragchat?host={lines[4]}"


def embedded_env(data_dir: Path) -> dict[str, str]:
    env = {"DATA_DIR": str(data_dir), "DEBUG": "true"}
    for name in ("DATABASE_URL", "REDIS_URL", "CACHE_REDIS_URL"):
        env[name] = ""
    return env


def test_embedded_default_starts_reuses_data_and_leaves_no_orphans(
    tmp_path: Path, embedded_data_dir: Path
) -> None:
    data_dir = embedded_data_dir / "d"
    env = embedded_env(data_dir)
    first = start_server(env, tmp_path / "first.log", workers=1, ready_path="/readyz")
    postgres_pid = int((data_dir / "postgres" / "postmaster.pid").read_text().splitlines()[0])
    with psycopg.connect(embedded_conninfo(data_dir), autocommit=True) as conn:
        conn.execute("INSERT INTO tenants (id, slug, name) VALUES (gen_random_uuid(), 'kept', 'Kept')")
    assert first.stop(signal.SIGINT) in (0, 130)  # Ctrl-C on the process group
    deadline = time.monotonic() + 15
    while processes_using(data_dir) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert processes_using(data_dir) == []
    assert not is_running(postgres_pid)

    second = start_server(env, tmp_path / "second.log", workers=1, ready_path="/readyz")
    try:
        assert httpx.get(second.base_url + "/readyz", timeout=5).status_code == 200
        with psycopg.connect(embedded_conninfo(data_dir)) as conn:
            assert conn.execute("SELECT name FROM tenants WHERE slug = 'kept'").fetchone() == ("Kept",)
    finally:
        second.stop(signal.SIGINT)


def test_only_the_developer_default_creates_a_dev_admin_key(tmp_path: Path, embedded_data_dir: Path) -> None:
    """`make run` (DEBUG=true) prints a dev key; the same embedded start without DEBUG (an image,
    any production start) creates none."""
    data_dir = embedded_data_dir / "d"
    env = {**embedded_env(data_dir), "DEBUG": "false"}
    server = start_server(env, tmp_path / "prod.log", workers=1, ready_path="/readyz")
    try:
        with psycopg.connect(embedded_conninfo(data_dir)) as conn:
            assert conn.execute("SELECT count(*) FROM api_keys").fetchone() == (0,)
    finally:
        server.stop(signal.SIGINT)
    assert "first start" not in server.log()
    assert not (data_dir / "dev-api-key").exists()

    developer = start_server(embedded_env(data_dir), tmp_path / "dev.log", workers=1, ready_path="/readyz")
    developer.stop(signal.SIGINT)
    assert "first start: created tenant 'dev'" in developer.log()
    assert (data_dir / "dev-api-key").exists()
