"""A clean stop of the real server (`python -m app serve`: the launcher, gunicorn, a uvicorn
worker), with answer streams in flight, on SIGTERM to the launcher (what Kubernetes sends) and on
Ctrl-C (SIGINT to the whole process group):

- no new connection is taken once the stop begins;
- a stream whose provider goes on finishes with its ``done`` event;
- a stream whose provider has stalled ends with an ``error`` event (``server_shutting_down``)
  within the grace, never cut off;
- the worker exits by itself (no SIGKILL, no forced cancellation), the lifespan closes the pools,
  and the launcher's exit status is 0.

The grace (SHUTDOWN_GRACE_S) is lowered to 6 s for the test; the provider's own timeouts are far
longer, so only the stop can end the stalled stream.
"""

from __future__ import annotations

import json
import os
import signal
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.fakes.fake_llm_server import FakeLLMServer
from tests.support.server import ServerProcess, create_api_key, start_server, upload_and_wait
from tests.support.services import RedisForTests
from tests.support.waiting import wait_for

pytestmark = pytest.mark.e2e

GRACE_S = 6
LONG_S = "300"  # provider timeouts: the stalled stream cannot end by itself during the test


@dataclass
class Stream:
    """One answer stream read in a thread: its events as they arrive."""

    events: list[tuple[str, Any]] = field(default_factory=list)
    ended: threading.Event = field(default_factory=threading.Event)
    failure: BaseException | None = None

    def names(self) -> list[str]:
        return [name for name, _ in self.events]


def stream_in_thread(server: ServerProcess, headers: dict[str, str], body: dict[str, Any]) -> Stream:
    stream = Stream()

    def read() -> None:
        try:
            with httpx.stream(
                "POST",
                server.base_url + "/api/v1/chat",
                json={**body, "stream": True},
                headers=headers,
                timeout=httpx.Timeout(120, connect=5),
            ) as response:
                assert response.status_code == 200, response.read()
                name = ""
                for line in response.iter_lines():
                    if line.startswith("event: "):
                        name = line[7:]
                    elif line.startswith("data: "):
                        stream.events.append((name, json.loads(line[6:])))
        except BaseException as exc:  # reported by the test, not lost in the thread
            stream.failure = exc
        finally:
            stream.ended.set()

    threading.Thread(target=read, daemon=True).start()
    return stream


def refuses_connections(server: ServerProcess) -> bool:
    try:
        httpx.get(server.base_url + "/healthz", timeout=1)
    except httpx.ConnectError:
        return True
    except httpx.HTTPError:
        return False
    return False


@pytest.fixture
def server_env(
    clean_database: str, redis_server: RedisForTests, redis_prefix: str, tmp_path: Path, fake: FakeLLMServer
) -> dict[str, str]:
    env = {
        "DATABASE_URL": clean_database,
        "REDIS_URL": redis_server.url,
        "REDIS_KEY_PREFIX": redis_prefix,
        "DATA_DIR": str(tmp_path / "data"),
        "DEBUG": "true",
        "LOG_JSON": "true",
        "RUN_WORKER_IN_PROCESS": "true",
        "LLM_PROVIDERS": "openai,groq",
        "ROUTER_MAX_RETRIES": "0",
        "ROUTER_STREAM_IDLE_TIMEOUT_S": LONG_S,
        "SSE_HEARTBEAT_S": "0.5",
        "SHUTDOWN_GRACE_S": str(GRACE_S),
    }
    for name, base_url in (("openai", fake.openai_base_url), ("groq", fake.groq_base_url)):
        env[f"{name.upper()}_API_KEY"] = f"e2e-key-{name}"
        env[f"{name.upper()}_BASE_URL"] = base_url
        env[f"{name.upper()}_TIMEOUT_S"] = LONG_S
        env[f"{name.upper()}_FIRST_TOKEN_TIMEOUT_S"] = LONG_S
    return env


def launcher_only(server: ServerProcess, sig: int) -> None:
    os.kill(server.process.pid, sig)  # Kubernetes signals PID 1, the launcher, which forwards it


def whole_group(server: ServerProcess, sig: int) -> None:
    os.killpg(server.process.pid, sig)  # Ctrl-C in a terminal: every process of the foreground job


@pytest.mark.parametrize(
    ("sig", "send"),
    [(signal.SIGTERM, launcher_only), (signal.SIGINT, whole_group)],
    ids=["sigterm-to-the-launcher", "ctrl-c-to-the-group"],
)
def test_a_stop_finishes_streams_in_flight_and_exits_cleanly(
    server_env: dict[str, str],
    tmp_path: Path,
    fake: FakeLLMServer,
    sig: int,
    send: Callable[[ServerProcess, int], None],
) -> None:
    key = create_api_key(server_env)
    headers = {"X-API-Key": key, "Accept": "text/event-stream"}
    server = start_server(server_env, tmp_path / "server.log", workers=1)
    try:
        upload_and_wait(server.base_url, headers, "# Kickoff\n\nThe project kickoff is on the fourth floor.")
        fake.configure("openai", mode="stall", stall_after_tokens=2, text="On the fourth floor, room 4 [1].")
        fake.configure("groq", hold_first_token=True, text="On the fourth floor [1].")
        stalled = stream_in_thread(server, headers, {"question": "Where is the kickoff?", "model": "openai"})
        finishing = stream_in_thread(
            server, headers, {"question": "Where is the kickoff held?", "model": "groq"}
        )
        wait_for(lambda: stalled.names().count("delta") >= 1, 60, what="the stalled stream's first tokens")
        wait_for(lambda: "sources" in finishing.names(), 60, what="the held stream's sources")

        send(server, sig)
        wait_for(lambda: refuses_connections(server), GRACE_S, what="new connections refused")
        refused_while_streams_open = not stalled.ended.is_set() and not finishing.ended.is_set()
        fake.release("groq")  # its provider goes on after the stop began

        assert finishing.ended.wait(GRACE_S * 2) and stalled.ended.wait(GRACE_S * 2), "a stream never ended"
        code = server.process.wait(timeout=GRACE_S * 4)
    finally:
        server.stop(signal.SIGKILL)

    log = server.log()
    assert finishing.failure is None and stalled.failure is None, (finishing.failure, stalled.failure, log)
    assert refused_while_streams_open, "the listener closed only after the streams ended"
    assert finishing.names()[-1] == "done", finishing.events
    assert (
        "".join(data["text"] for name, data in finishing.events if name == "delta")
        == "On the fourth floor [1]."
    )
    name, error = stalled.events[-1]
    assert name == "error" and error["code"] == "server_shutting_down", stalled.events
    assert code == 0, log
    assert "SIGKILL" not in log and "WORKER TIMEOUT" not in log, log
    assert "timeout graceful shutdown exceeded" not in log, log
    assert "Application shutdown complete" in log, "the lifespan (pools) did not close"
