"""The real server process: SSE arrives incrementally with heartbeats, and a client that goes
away cancels the provider's stream (the fake sees its body abandoned, never completed)."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.fakes.fake_llm_server import FakeLLMServer
from tests.support.server import ServerProcess, create_api_key, fake_openai_env, start_server, upload_and_wait
from tests.support.services import RedisForTests

pytestmark = pytest.mark.e2e

LONG_ANSWER = " ".join(f"word{n}" for n in range(60))


@pytest.fixture
def chat_server(
    clean_database: str,
    redis_server: RedisForTests,
    redis_prefix: str,
    tmp_path: Path,
    fake: FakeLLMServer,
) -> Iterator[tuple[ServerProcess, dict[str, str]]]:
    env = {
        "DATABASE_URL": clean_database,
        "REDIS_URL": redis_server.url,
        "REDIS_KEY_PREFIX": redis_prefix,
        "DATA_DIR": str(tmp_path / "data"),
        "DEBUG": "true",
        "LOG_JSON": "true",
        "RUN_WORKER_IN_PROCESS": "true",
        **fake_openai_env(fake.openai_base_url),
        "SSE_HEARTBEAT_S": "0.3",
    }
    key = create_api_key(env)
    server = start_server(env, tmp_path / "server.log", workers=1)
    try:
        yield server, {"X-API-Key": key}
    finally:
        server.stop()


def read_events(response: httpx.Response) -> Iterator[tuple[str, Any]]:
    """(event, data) pairs as they arrive; heartbeat comments come through as ("heartbeat", None)."""
    name = ""
    for line in response.iter_lines():
        if line.startswith(":"):
            yield "heartbeat", None
        elif line.startswith("event: "):
            name = line[7:]
        elif line.startswith("data: "):
            yield name, json.loads(line[6:])


def test_stream_is_incremental_with_heartbeats_while_the_model_thinks(
    chat_server: tuple[ServerProcess, dict[str, str]], fake: FakeLLMServer
) -> None:
    """Sources first, heartbeats while the provider holds its first token, then the deltas.

    The fake holds the first token until the test has seen a heartbeat after the sources, so the
    order asserted is the order of events, whatever the machine's speed. Heartbeats before the
    sources (a slow retrieval on a busy machine) are allowed: they are keep-alives too."""
    server, headers = chat_server
    upload_and_wait(server.base_url, headers, "# Kickoff\n\nThe project kickoff is on the fourth floor.")
    fake.configure("openai", text="On the fourth floor [1].", hold_first_token=True)
    events: list[tuple[str, Any]] = []
    with httpx.stream(
        "POST",
        server.base_url + "/api/v1/chat",
        json={"question": "Where is the kickoff?"},
        headers={**headers, "Accept": "text/event-stream"},
        timeout=30,
    ) as response:
        assert response.status_code == 200
        assert response.headers["x-accel-buffering"] == "no"
        seen_sources = False
        for name, data in read_events(response):
            events.append((name, data))
            seen_sources = seen_sources or name == "sources"
            if name == "heartbeat" and seen_sources:
                fake.release("openai")
    names = [name for name, _ in events]
    assert next(name for name in names if name != "heartbeat") == "sources", names
    first_delta = names.index("delta")
    assert "heartbeat" in names[names.index("sources") : first_delta], names  # kept alive while waiting
    assert names[-1] == "done", names
    text = "".join(data["text"] for name, data in events if name == "delta")
    assert text == "On the fourth floor [1]."


def test_a_client_that_disconnects_cancels_the_provider_stream(
    chat_server: tuple[ServerProcess, dict[str, str]], fake: FakeLLMServer
) -> None:
    server, headers = chat_server
    upload_and_wait(server.base_url, headers, "# Kickoff\n\nThe project kickoff is on the fourth floor.")
    fake.configure("openai", text=LONG_ANSWER, token_delay_s=0.2)  # ~12 s if read to the end
    session = str(uuid.uuid4())
    with httpx.stream(
        "POST",
        server.base_url + "/api/v1/chat",
        json={"question": "Where is the kickoff?", "session_id": session, "stream": True},
        headers=headers,
        timeout=30,
    ) as response:
        for name, _ in read_events(response):
            if name == "delta":
                break  # the user closes the tab after the first words
    deadline = time.monotonic() + 8
    stats: dict[str, Any] = {}
    while time.monotonic() < deadline:
        stats = fake.stats()["openai"]
        if stats["streams_abandoned"]:
            break
        time.sleep(0.1)
    assert stats["streams_abandoned"] == 1, stats
    assert stats["streams_completed"] == 0
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        history = httpx.get(
            f"{server.base_url}/api/v1/sessions/{session}/messages", headers=headers, timeout=10
        )
        if history.status_code == 200:
            break
        time.sleep(0.1)
    assert history.status_code == 200, f"the cancelled turn was not recorded: {history.text}"
    assistant = history.json()["messages"][-1]
    assert assistant["role"] == "assistant"
    assert assistant["status"] == "cancelled"
    assert LONG_ANSWER.startswith(assistant["content"])
    assert assistant["content"] != LONG_ANSWER
