"""The Redis services of docker-compose.yml, started with their composed command and environment
on the embedded redis-server binary (bound to a Unix socket, never a TCP port): clients without the
password are refused, the password is on no command line, and each server has its eviction policy."""

from __future__ import annotations

import os
import stat
import subprocess
from pathlib import Path

import psutil
import pytest
import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from app.embedded.redis import redis_server_binary
from tests.support.compose import load_compose
from tests.support.waiting import wait_for

pytestmark = pytest.mark.integration

PASSWORD = "redis-sentinel-5d7b"
SECRETS = {"POSTGRES_PASSWORD": "pg-sentinel-2e4f", "REDIS_PASSWORD": PASSWORD}


@pytest.mark.parametrize(("name", "policy"), [("redis", "noeviction"), ("redis-cache", "allkeys-lru")])
def test_the_composed_redis_refuses_clients_without_the_password(
    name: str, policy: str, tmp_path: Path
) -> None:
    service = load_compose(SECRETS)["services"][name]
    socket_path = tmp_path / "redis.sock"
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    wrapper = bin_dir / "redis-server"  # the image's redis-server, here: ours, on a socket only
    wrapper.write_text(
        f'#!/bin/sh\nexec {redis_server_binary()} "$@" --port 0 --unixsocket {socket_path} --dir {tmp_path}\n'
    )
    wrapper.chmod(wrapper.stat().st_mode | stat.S_IXUSR)
    process = subprocess.Popen(
        service["command"],
        env={"PATH": f"{bin_dir}:/usr/bin:/bin", **service["environment"]},
        cwd=tmp_path,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        wait_for(socket_path.exists, timeout=30, what=f"{name} to listen")
        anonymous = redis.Redis(unix_socket_path=str(socket_path), retry=Retry(NoBackoff(), 0))
        with pytest.raises(redis.AuthenticationError):
            anonymous.ping()
        anonymous.close()

        client = redis.Redis(unix_socket_path=str(socket_path), password=PASSWORD)
        assert client.ping() is True
        assert client.config_get("maxmemory-policy")["maxmemory-policy"] == policy
        client.close()
        command_line = " ".join(psutil.Process(process.pid).cmdline())
        assert "redis-server" in command_line and PASSWORD not in command_line
    finally:
        process.terminate()
        process.wait(timeout=30)
    assert not os.path.exists(socket_path)  # it shut down cleanly
