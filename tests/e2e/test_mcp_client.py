"""The official MCP SDK client against the real server's /mcp over HTTP: initialize, list the
tools, call each of them, and a bad key refused. One server for the module."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from typing import Any

import httpx
import httpx2
import pytest
from mcp.client.client import Client
from mcp.client.session import ClientSession
from mcp.client.streamable_http import streamable_http_client
from mcp.shared.exceptions import MCPError
from mcp_types import CallToolResult
from mcp_types.version import MODERN_PROTOCOL_VERSIONS

from tests.fakes.fake_llm_server import FakeLLMServer
from tests.support.server import (
    ServerProcess,
    create_api_key,
    fake_openai_env,
    service_env,
    start_server,
    upload_and_wait,
)
from tests.support.services import RedisForTests, truncate_app_tables

pytestmark = pytest.mark.e2e

DOC = "# Kickoff\n\nThe project kickoff is on the fourth floor, in the Orchid room."


class ServedModule:
    def __init__(self, server: ServerProcess, key: str, other_key: str, document_id: str) -> None:
        self.server = server
        self.key = key
        self.other_key = other_key
        self.document_id = document_id

    @property
    def url(self) -> str:
        return self.server.base_url + "/mcp"


@pytest.fixture(scope="module")
def served_module(
    database_url: str,
    redis_server: RedisForTests,
    worker_name: str,
    tmp_path_factory: pytest.TempPathFactory,
    fake_llm_server: FakeLLMServer,
) -> Iterator[ServedModule]:
    """One server for the module (``served`` is one per test), emptied of its data after it."""
    tmp_path = tmp_path_factory.mktemp("mcp_client")
    env = service_env(
        database_url,
        redis_server.url,
        f"test:{worker_name}:mcp:{time.time_ns()}:",
        tmp_path / "data",
        **{
            "RUN_WORKER_IN_PROCESS": "true",
            **fake_openai_env(fake_llm_server.openai_base_url),
            "RATE_LIMIT_PER_IP": "10000/minute",
        },
    )
    try:
        key = create_api_key(env)
        other_key = create_api_key(env, tenant="globex", role="reader")
        server = start_server(env, tmp_path / "server.log", workers=1)
        try:
            document_id = str(
                upload_and_wait(
                    server.base_url,
                    {"X-API-Key": key},
                    DOC,
                    filename="kickoff.md",
                    fields={"title": "Kickoff", "tags": "events"},
                )["document_id"]
            )
            yield ServedModule(server, key, other_key, document_id)
        finally:
            server.stop()
    finally:
        truncate_app_tables(database_url)


@asynccontextmanager
async def connect(url: str, headers: dict[str, str]) -> AsyncIterator[ClientSession]:
    """What a user of the SDK writes: an httpx2 client carrying the key, the streamable HTTP
    transport, a session."""
    async with (
        httpx2.AsyncClient(headers=headers, timeout=60) as client,
        streamable_http_client(url, http_client=client) as (read, write),
        ClientSession(read, write) as session,
    ):
        yield session


def structured(result: CallToolResult) -> dict[str, Any]:
    assert not result.is_error, result.content
    assert result.structured_content is not None
    return result.structured_content


async def test_initialize_and_list_tools(served_module: ServedModule) -> None:
    async with connect(served_module.url, {"X-API-Key": served_module.key}) as session:
        initialized = await session.initialize()
        tools = (await session.list_tools()).tools
    assert initialized.server_info.name == "rag-chat"
    assert initialized.capabilities.tools is not None
    assert {tool.name for tool in tools} == {"search_documents", "ask", "list_documents"}


async def test_each_tool_over_http(served_module: ServedModule, fake: FakeLLMServer) -> None:
    fake.configure("openai", text="In the Orchid room on the fourth floor [1].")
    async with connect(served_module.url, {"Authorization": f"Bearer {served_module.key}"}) as session:
        await session.initialize()
        listed = structured(await session.call_tool("list_documents", {"tag": "events"}))
        found = structured(await session.call_tool("search_documents", {"query": "Where is the kickoff?"}))
        answered = structured(await session.call_tool("ask", {"question": "Where is the kickoff?"}))

    assert [(d["id"], d["title"]) for d in listed["documents"]] == [(served_module.document_id, "Kickoff")]
    top = found["passages"][0]
    assert (top["document_id"], top["version"], top["page"]) == (served_module.document_id, 1, 1)
    assert "Orchid room" in top["text"] and top["score"] > 0
    assert answered["answer"] == "In the Orchid room on the fourth floor [1]."
    assert answered["sources"][0]["document_id"] == served_module.document_id
    assert answered["sources"][0]["cited"] is True


async def test_another_tenant_sees_nothing(served_module: ServedModule) -> None:
    async with connect(served_module.url, {"X-API-Key": served_module.other_key}) as session:
        await session.initialize()
        listed = structured(await session.call_tool("list_documents", {}))
        found = structured(await session.call_tool("search_documents", {"query": "Where is the kickoff?"}))
    assert listed == {"documents": [], "total": 0}
    assert found == {"passages": []}


async def test_a_bad_key_is_refused(served_module: ServedModule) -> None:
    statuses: list[int] = []

    async def record(response: httpx2.Response) -> None:
        statuses.append(response.status_code)

    with pytest.raises(BaseExceptionGroup) as refused:
        async with (
            httpx2.AsyncClient(
                headers={"X-API-Key": "rk_wrong"}, event_hooks={"response": [record]}
            ) as client,
            streamable_http_client(served_module.url, http_client=client) as (read, write),
            ClientSession(read, write) as session,
        ):
            await session.initialize()
    # the SDK reports a non-JSON-RPC error response as an internal error; the status was 401
    assert refused.group_contains(MCPError)
    assert statuses == [401]
    raw = httpx.post(
        served_module.url,
        json={"jsonrpc": "2.0", "id": 1, "method": "tools/list"},
        headers={"X-API-Key": "rk_wrong", "Accept": "application/json, text/event-stream"},
        timeout=10,
    )
    assert raw.status_code == 401
    assert raw.headers["content-type"].startswith("application/problem+json")


async def test_subscriptions_listen_is_not_served(served_module: ServedModule) -> None:
    """Nothing here publishes events, so the never-ending listen stream is not offered: the SDK's
    own client is refused at once instead of being acknowledged and held open."""
    async with (
        httpx2.AsyncClient(headers={"X-API-Key": served_module.key}, timeout=30) as http,
        Client(
            streamable_http_client(served_module.url, http_client=http), mode=MODERN_PROTOCOL_VERSIONS[-1]
        ) as client,
    ):
        with pytest.raises(MCPError) as refused:
            async with client.listen(tools_list_changed=True):
                pass
        assert refused.value.error.code == -32601  # method not found
        # the same connection still serves tools
        assert {tool.name for tool in (await client.list_tools()).tools} >= {"ask"}


def test_no_request_opens_a_stream_that_never_ends(served_module: ServedModule) -> None:
    """The raw listen request and the standalone GET event stream both answer right away with a
    complete body (the read timeout would fail a stream that stays open)."""
    version = MODERN_PROTOCOL_VERSIONS[-1]
    listen = {
        "jsonrpc": "2.0",
        "id": 7,
        "method": "subscriptions/listen",
        "params": {
            "notifications": {"toolsListChanged": True},
            "_meta": {
                "io.modelcontextprotocol/protocolVersion": version,
                "io.modelcontextprotocol/clientCapabilities": {},
            },
        },
    }
    headers = {
        "X-API-Key": served_module.key,
        "Accept": "application/json, text/event-stream",
        "MCP-Protocol-Version": version,
        "Mcp-Method": "subscriptions/listen",
    }
    with httpx.Client(timeout=httpx.Timeout(10, read=5)) as http:
        answered = http.post(served_module.url, json=listen, headers=headers)
        assert not answered.headers["content-type"].startswith("text/event-stream"), answered.text
        assert answered.json()["error"]["code"] == -32601, answered.text
        get = http.get(
            served_module.url, headers={"X-API-Key": served_module.key, "Accept": "text/event-stream"}
        )
        assert get.status_code == 405, get.text
        assert get.headers["allow"] == "POST"
