"""The MCP server at /mcp in process: the SDK's own client (streamable HTTP over an ASGI transport)
against the real app, real model, PostgreSQL and Redis; the LLM is the wire fake."""

from __future__ import annotations

import anyio
import httpx
import pytest
from fastapi import FastAPI
from mcp_types import CallToolResult, TextContent
from starlette.routing import Route
from starlette.types import Receive, Scope, Send

from app.api.mcp_server import BoundedMCPEndpoint
from app.auth.principal import Role
from app.rag.embeddings import LocalEmbedder
from app.settings import Settings
from tests.fakes.fake_llm_server import FakeLLMServer
from tests.support.apps import running_app
from tests.support.callers import Caller, MakeCaller
from tests.support.library import Library
from tests.support.llm import fake_openai_overrides
from tests.support.mcp import mcp_session, structured

pytestmark = [pytest.mark.integration, pytest.mark.pgvector]

RETENTION = (
    "# Retention\n\nBackups of customer databases are kept for exactly 35 days before deletion. "
    "Retention is enforced by a nightly purge job."
)
PARKING = "# Parking\n\nStaff parking is on level two of the garage. Bicycles go in the courtyard racks."


@pytest.fixture
def settings(settings: Settings, fake: FakeLLMServer) -> Settings:
    return settings.model_copy(update=fake_openai_overrides(fake, timeout_s=5.0))


@pytest.fixture
def app_embedder(embedder: LocalEmbedder) -> LocalEmbedder:
    return embedder


@pytest.fixture
async def other(make_caller: MakeCaller) -> Caller:
    return await make_caller(tenant="globex", role=Role.reader)


def error_text(result: CallToolResult) -> str:
    assert result.is_error
    return " ".join(block.text for block in result.content if isinstance(block, TextContent))


async def test_without_a_key_mcp_is_refused_before_the_body(client: httpx.AsyncClient) -> None:
    body = {"jsonrpc": "2.0", "id": 1, "method": "tools/list"}
    for headers in ({}, {"X-API-Key": "rk_not-a-real-key"}, {"Authorization": "Bearer nope"}):
        response = await client.post(
            "/mcp", json=body, headers={**headers, "Accept": "application/json, text/event-stream"}
        )
        assert response.status_code == 401, response.text
        assert response.headers["content-type"].startswith("application/problem+json")


async def test_lists_the_tools(app: FastAPI, editor: Caller) -> None:
    async with mcp_session(app, editor.headers) as session:
        tools = {tool.name: tool for tool in (await session.list_tools()).tools}
    assert set(tools) == {"search_documents", "ask", "list_documents"}
    search = tools["search_documents"].input_schema
    assert search["required"] == ["query"]
    assert set(search["properties"]) == {"query", "top_k", "tags"}
    assert set(tools["ask"].input_schema["properties"]) == {"question", "session_id"}


async def test_bearer_credential_works_too(app: FastAPI, editor: Caller) -> None:
    async with mcp_session(app, {"Authorization": f"Bearer {editor.key}"}) as session:
        listed = structured(await session.call_tool("list_documents", {}))
    assert listed == {"documents": [], "total": 0}


async def test_list_documents_shows_only_the_callers_tenant(
    app: FastAPI, library: Library, editor: Caller, other: Caller, make_caller: MakeCaller
) -> None:
    retention = await library.add(RETENTION, filename="retention.md", title="Retention", tags="policy")
    await library.add(PARKING, filename="parking.md", title="Parking", tags="facilities")
    globex_editor = await make_caller(tenant="globex", role=Role.editor)
    await library.add(
        "# Globex\n\nGlobex secrets.", filename="g.md", title="Globex plan", caller=globex_editor
    )

    async with mcp_session(app, editor.headers) as session:
        everything = structured(await session.call_tool("list_documents", {}))
        by_tag = structured(await session.call_tool("list_documents", {"tag": "policy"}))
    assert everything["total"] == 2
    assert {d["title"] for d in everything["documents"]} == {"Retention", "Parking"}
    assert [d["id"] for d in by_tag["documents"]] == [retention]
    assert by_tag["documents"][0]["current_version"] == 1
    assert by_tag["documents"][0]["tags"] == ["policy"]

    async with mcp_session(app, other.headers) as session:
        theirs = structured(await session.call_tool("list_documents", {}))
        searched = structured(await session.call_tool("search_documents", {"query": "database backups"}))
    assert [d["title"] for d in theirs["documents"]] == ["Globex plan"]
    assert all(p["title"] == "Globex plan" for p in searched["passages"])


async def test_search_documents_returns_the_planted_passage(
    app: FastAPI, library: Library, editor: Caller
) -> None:
    retention = await library.add(RETENTION, filename="retention.md", title="Retention", tags="policy")
    await library.add(PARKING, filename="parking.md", title="Parking", tags="facilities")

    async with mcp_session(app, editor.headers) as session:
        found = structured(
            await session.call_tool("search_documents", {"query": "How long are database backups kept?"})
        )
        only_facilities = structured(
            await session.call_tool(
                "search_documents", {"query": "database backups", "top_k": 3, "tags": ["facilities"]}
            )
        )
        too_many = await session.call_tool("search_documents", {"query": "backups", "top_k": 500})

    top = found["passages"][0]
    assert top["document_id"] == retention
    assert top["title"] == "Retention"
    assert top["version"] == 1
    assert top["page"] == 1
    assert top["score"] > 0
    assert "35 days" in top["text"]
    assert top["tags"] == ["policy"]
    assert {p["title"] for p in only_facilities["passages"]} <= {"Parking"}
    assert "top_k" in error_text(too_many)


async def test_ask_answers_with_sources(
    app: FastAPI, library: Library, editor: Caller, fake: FakeLLMServer
) -> None:
    retention = await library.add(RETENTION, filename="retention.md", title="Retention")
    fake.configure("openai", text="Backups are kept for 35 days [1].")

    async with mcp_session(app, editor.headers) as session:
        result = structured(
            await session.call_tool(
                "ask", {"question": "How long are database backups kept?", "session_id": "mcp-chat-1"}
            )
        )
        follow_up = structured(
            await session.call_tool("ask", {"question": "And the purge?", "session_id": "mcp-chat-1"})
        )
        bad_session = await session.call_tool("ask", {"question": "Hi", "session_id": "no spaces allowed"})

    assert result["answer"] == "Backups are kept for 35 days [1]."
    assert result["provider"] == "openai"
    assert result["session_id"] == "mcp-chat-1"
    top = result["sources"][0]
    assert top["document_id"] == retention
    assert top["number"] == 1 and top["cited"] is True
    assert top["version"] == 1 and top["page"] == 1
    assert "35 days" in top["snippet"]
    # the follow-up carried the first exchange as history
    assert follow_up["session_id"] == "mcp-chat-1"
    messages = fake.stats()["openai"]["last_request"]["messages"]
    assert any("Backups are kept for 35 days" in m["content"] for m in messages)
    assert "session_id" in error_text(bad_session)


async def test_every_tool_is_charged_to_the_chat_budgets(settings: Settings, embedder: LocalEmbedder) -> None:
    """Searching and listing read the tenant's documents like a chat does, so they pay the chat
    budgets too, not only the per-IP one (which a key behind many addresses would not feel)."""
    async with running_app(
        settings, embedder=embedder, rate_limit_per_principal="4/minute", rate_limit_per_ip="1000/minute"
    ) as (app, _, make):
        caller = await make(tenant="acme", role=Role.reader)
        async with mcp_session(app, caller.headers) as session:
            results = [
                await session.call_tool("list_documents", {}),
                await session.call_tool("search_documents", {"query": "backups"}),
                await session.call_tool("list_documents", {"tag": "policy"}),
                await session.call_tool("search_documents", {"query": "parking"}),
                await session.call_tool("search_documents", {"query": "retention"}),
                await session.call_tool("list_documents", {}),
            ]
    assert [result.is_error for result in results] == [False] * 4 + [True] * 2
    assert all("rate_limited: the chat rate limit" in error_text(result) for result in results[4:])


async def test_an_event_stream_from_mcp_takes_a_stream_slot_and_ends_at_its_deadline(
    settings: Settings,
) -> None:
    """Whatever the SDK might stream is bounded: a handler that starts an event stream and never
    finishes it holds one of MAX_STREAMS_PER_PRINCIPAL slots (a second stream is 429) and is ended
    after MCP_STREAM_MAX_S, giving its slot back."""
    started = anyio.Event()

    async def never_ending(scope: Scope, receive: Receive, send: Send) -> None:
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [(b"content-type", b"text/event-stream")],
            }
        )
        await send({"type": "http.response.body", "body": b": ping\n\n", "more_body": True})
        started.set()
        await anyio.sleep_forever()

    async with running_app(settings, max_streams_per_principal=1, mcp_stream_max_s=0.5) as (
        app,
        client,
        make,
    ):
        app.router.routes.append(Route("/mcp-probe", endpoint=BoundedMCPEndpoint(never_ending)))
        caller = await make(tenant="acme", role=Role.reader)
        responses: list[httpx.Response] = []

        async def open_stream() -> None:
            responses.append(await client.post("/mcp-probe", headers=caller.headers))

        async with anyio.create_task_group() as tasks:
            tasks.start_soon(open_stream)
            await started.wait()
            second = await client.post("/mcp-probe", headers=caller.headers)
            assert second.status_code == 429, second.text
            assert second.json()["code"] == "too_many_streams"
            assert second.headers["content-type"].startswith("application/problem+json")
        [first] = responses  # ended by the deadline, not by the handler
        assert (first.status_code, first.text) == (200, ": ping\n\n")
        resources = app.state.resources
        slot = await resources.stream_slots.acquire(f"{caller.tenant_id}/{caller.principal_id}")
        assert slot is not None  # the ended stream gave its slot back
