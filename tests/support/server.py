"""Run the real service (`python -m app serve`, gunicorn + uvicorn workers) as a subprocess."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx

if TYPE_CHECKING:
    from tests.fakes.fake_llm_server import FakeLLMServer

ROOT = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@dataclass
class ServerProcess:
    process: subprocess.Popen[bytes]
    base_url: str
    log_path: Path
    env: dict[str, str]  # the settings it was given: `create_api_key(server.env)` makes a key for it

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 30) -> int:
        if self.process.poll() is None:
            os.killpg(self.process.pid, sig)
        try:
            return self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            return self.process.wait()


def service_env(
    database_url: str, redis_url: str, redis_prefix: str, data_dir: Path, **settings: str
) -> dict[str, str]:
    """The settings every test server starts from: the test's PostgreSQL and Redis (under its own
    key prefix), its own DATA_DIR, debug and JSON logs; ``settings`` add to or change them."""
    return {
        "DATABASE_URL": database_url,
        "REDIS_URL": redis_url,
        "REDIS_KEY_PREFIX": redis_prefix,
        "DATA_DIR": str(data_dir),
        "DEBUG": "true",
        "LOG_JSON": "true",
        **settings,
    }


def fake_openai_env(openai_base_url: str) -> dict[str, str]:
    """Server settings for chat answered by the fake provider's OpenAI wire only."""
    return {
        "LLM_PROVIDERS": "openai",
        "OPENAI_API_KEY": "test-key-openai",
        "OPENAI_BASE_URL": openai_base_url,
        "OPENAI_FIRST_TOKEN_TIMEOUT_S": "10",
        "OPENAI_TIMEOUT_S": "30",
    }


def fake_router_env(
    fake: FakeLLMServer, *, cooldown_s: float, providers: tuple[str, ...] = ("gemini", "groq", "openai")
) -> dict[str, str]:
    """Server settings for a fail-over chain of fake providers: no retries, short budgets, and
    ``cooldown_s`` for a provider that fails."""
    env = {
        "LLM_PROVIDERS": ",".join(providers),
        "ROUTER_COOLDOWN_S": str(cooldown_s),
        "ROUTER_COOLDOWN_BASE_S": str(cooldown_s),
        "ROUTER_MAX_RETRIES": "0",
    }
    base_urls = {"gemini": fake.gemini_base_url, "groq": fake.groq_base_url, "openai": fake.openai_base_url}
    for name in providers:
        env[f"{name.upper()}_API_KEY"] = f"e2e-key-{name}"
        env[f"{name.upper()}_BASE_URL"] = base_urls[name]
        env[f"{name.upper()}_TIMEOUT_S"] = "2"
    return env


def upload_and_wait(
    base_url: str,
    headers: dict[str, str],
    text: str,
    *,
    filename: str = "notes.md",
    fields: dict[str, str] | None = None,
    timeout: float = 120,
) -> dict[str, Any]:
    """Upload a Markdown document and poll its job until it succeeds; the 202's body."""
    accepted = httpx.post(
        base_url + "/api/v1/docs",
        files={"file": (filename, text.encode(), "text/markdown")},
        data=fields or {},
        headers=headers,
        timeout=30,
    )
    assert accepted.status_code == 202, accepted.text
    body: dict[str, Any] = accepted.json()
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        job = httpx.get(base_url + body["status_url"], headers=headers, timeout=10).json()
        if job["status"] in ("succeeded", "failed"):
            assert job["status"] == "succeeded", job
            return body
        time.sleep(0.2)
    raise AssertionError("ingestion did not finish")


def create_key(env: dict[str, str], *, tenant: str = "acme", role: str = "editor") -> dict[str, str]:
    """A real API key, made by the CLI an operator would use, against the server's database:
    ``{"id", "key", "tenant", "role"}``."""
    created = subprocess.run(
        [sys.executable, "-m", "app", "keys", "create", "--tenant", tenant, "--role", role, "--json"],
        cwd=ROOT,
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    issued: dict[str, str] = json.loads(created.stdout.strip().splitlines()[-1])
    return issued


def create_api_key(env: dict[str, str], *, tenant: str = "acme", role: str = "editor") -> str:
    """The secret of a real API key (see ``create_key``)."""
    return create_key(env, tenant=tenant, role=role)["key"]


def start_worker(database_url: str, log: Path, *extra: str, **env: str) -> subprocess.Popen[bytes]:
    """``python -m app worker`` in its own process group (fast heartbeats unless ``env`` says
    otherwise); it prints "worker ready" once its model is loaded."""
    full_env = {
        **os.environ,
        "DATABASE_URL": database_url,
        "WORKER_HEARTBEAT_S": "1",
        "WORKER_STALLED_AFTER_S": "3",
        "LOG_JSON": "true",
        **env,
    }
    with log.open("ab") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "app", "worker", *extra],
            cwd=ROOT,
            env=full_env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )


def start_server(
    env: dict[str, str],
    log_path: Path,
    *,
    workers: int = 2,
    ready_path: str = "/healthz",
    timeout: float = 90,
    cwd: Path = ROOT,
) -> ServerProcess:
    """``cwd``: the checkout whose code runs (``python -m app`` imports from it first)."""
    port = free_port()
    # Most server tests never embed: skip loading the model at start unless a test asks for it.
    full_env = {**os.environ, "EMBEDDING_WARM_UP": "false", **env, "PORT": str(port), "HOST": "127.0.0.1"}
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "app", "serve", "--workers", str(workers)],
            cwd=cwd,
            env=full_env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group, like a terminal's foreground job
        )
    server = ServerProcess(
        process=process, base_url=f"http://127.0.0.1:{port}", log_path=log_path, env=dict(env)
    )
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"server exited with {process.returncode}:\n{server.log()}")
        try:
            if httpx.get(server.base_url + ready_path, timeout=1).status_code == 200:
                return server
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    server.stop(signal.SIGKILL)
    raise RuntimeError(f"server not ready within {timeout}s:\n{server.log()}")
