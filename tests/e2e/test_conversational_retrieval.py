"""The real server, every chat surface: the same follow-up ("How many VLANs does it support?")
retrieves the Falcon router's page in a conversation about the Falcon and the Osprey switch's
page in one about the Osprey, and names the ``retrieval_query`` it searched. One server for the
module, no provider keys (the offline default, extractive answers)."""

from __future__ import annotations

import time
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from typing import Any

import httpx
import httpx2
import pytest
from mcp.client.session import ClientSession
from mcp.client.streamable_http import streamable_http_client

from tests.support.server import ServerProcess, create_api_key, start_server, upload_and_wait
from tests.support.services import RedisForTests, truncate_app_tables

pytestmark = pytest.mark.e2e

DOCS = {
    "falcon": "# Falcon router\n\nThe Falcon router is our branch-office router. It supports up to 64 "
    "VLANs and four uplinks. Its firmware is updated every month.",
    "osprey": "# Osprey switch\n\nThe Osprey switch is our desk switch. It supports up to 8 VLANs and "
    "one uplink. Its firmware is updated once a year.",
}
OPENINGS = {"falcon": "What is the Falcon router used for?", "osprey": "What is the Osprey switch used for?"}
FOLLOW_UP = "How many VLANs does it support?"


class Served:
    def __init__(self, server: ServerProcess, key: str, pages: dict[str, str]) -> None:
        self.server = server
        self.key = key
        self.pages = pages

    @property
    def headers(self) -> dict[str, str]:
        return {"X-API-Key": self.key}


@pytest.fixture(scope="module")
def served(
    database_url: str, redis_server: RedisForTests, worker_name: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Served]:
    tmp_path = tmp_path_factory.mktemp("conversational")
    env = {
        "DATABASE_URL": database_url,
        "REDIS_URL": redis_server.url,
        "REDIS_KEY_PREFIX": f"test:{worker_name}:conversational:{time.time_ns()}:",
        "DATA_DIR": str(tmp_path / "data"),
        "DEBUG": "true",
        "LOG_JSON": "true",
        "RUN_WORKER_IN_PROCESS": "true",
        "RATE_LIMIT_PER_IP": "10000/minute",
    }
    try:
        key = create_api_key(env)
        server = start_server(env, tmp_path / "server.log", workers=1)
        try:
            pages = {
                product: str(
                    upload_and_wait(server.base_url, {"X-API-Key": key}, text, filename=f"{product}.md")[
                        "document_id"
                    ]
                )
                for product, text in DOCS.items()
            }
            yield Served(server, key, pages)
        finally:
            server.stop()
    finally:
        truncate_app_tables(database_url)


def chat(served: Served, question: str, **body: Any) -> dict[str, Any]:
    response = httpx.post(
        served.server.base_url + "/api/v1/chat",
        json={"question": question, "top_k": 1, **body},
        headers=served.headers,
        timeout=60,
    )
    assert response.status_code == 200, response.text
    answer: dict[str, Any] = response.json()
    return answer


@pytest.mark.parametrize("product", list(OPENINGS))
def test_api_chat_session(served: Served, product: str) -> None:
    session = str(uuid.uuid4())
    chat(served, OPENINGS[product], session_id=session)
    answer = chat(served, FOLLOW_UP, session_id=session)
    assert answer["sources"][0]["document_id"] == served.pages[product]
    assert product in answer["retrieval_query"].lower()


@pytest.mark.parametrize("product", list(OPENINGS))
def test_openai_messages(served: Served, product: str) -> None:
    messages = [
        {"role": "user", "content": OPENINGS[product]},
        {"role": "assistant", "content": "One of our network devices."},
        {"role": "user", "content": FOLLOW_UP},
    ]
    response = httpx.post(
        served.server.base_url + "/v1/chat/completions",
        json={"model": "rag", "messages": messages},
        headers={"Authorization": f"Bearer {served.key}"},
        timeout=60,
    )
    assert response.status_code == 200, response.text
    rag = response.json()["rag"]
    assert rag["sources"][0]["document_id"] == served.pages[product]
    assert product in rag["retrieval_query"].lower()


@asynccontextmanager
async def connect(url: str, headers: dict[str, str]) -> AsyncIterator[ClientSession]:
    async with (
        httpx2.AsyncClient(headers=headers, timeout=60) as client,
        streamable_http_client(url, http_client=client) as (read, write),
        ClientSession(read, write) as session,
    ):
        await session.initialize()
        yield session


@pytest.mark.parametrize("product", list(OPENINGS))
async def test_mcp_ask_with_a_session(served: Served, product: str) -> None:
    session_id = f"e2e-{product}-{uuid.uuid4().hex[:8]}"
    async with connect(served.server.base_url + "/mcp", served.headers) as session:
        await session.call_tool("ask", {"question": OPENINGS[product], "session_id": session_id})
        result = await session.call_tool("ask", {"question": FOLLOW_UP, "session_id": session_id})
    assert not result.is_error and result.structured_content is not None
    assert result.structured_content["sources"][0]["document_id"] == served.pages[product]
    assert product in result.structured_content["retrieval_query"].lower()
