"""A follow-up retrieves for what the conversation means, on every surface: the same follow-up
("How many VLANs does it support?") finds the Falcon router's page after a question about the
Falcon, and the Osprey switch's page after one about the Osprey. ``retrieval_query`` shows what
was searched."""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from tests.support.callers import Caller
from tests.support.library import Library, ask, new_session
from tests.support.mcp import mcp_session

pytestmark = [pytest.mark.integration, pytest.mark.pgvector]

FALCON = (
    "# Falcon router\n\nThe Falcon router is our branch-office router. It supports up to 64 VLANs "
    "and four uplinks. Its firmware is updated every month."
)
OSPREY = (
    "# Osprey switch\n\nThe Osprey switch is our desk switch. It supports up to 8 VLANs and one "
    "uplink. Its firmware is updated once a year."
)
FOLLOW_UP = "How many VLANs does it support?"
OPENINGS = {"falcon": "What is the Falcon router used for?", "osprey": "What is the Osprey switch used for?"}


@pytest.fixture
async def pages(library: Library) -> dict[str, str]:
    return {
        "falcon": await library.add(FALCON, filename="falcon.md", title="Falcon router"),
        "osprey": await library.add(OSPREY, filename="osprey.md", title="Osprey switch"),
    }


def top(sources: list[dict[str, Any]]) -> str:
    return str(sources[0]["document_id"])


async def test_api_chat_session_follow_up_finds_the_conversations_document(
    client: httpx.AsyncClient, editor: Caller, pages: dict[str, str]
) -> None:
    for product, opening in OPENINGS.items():
        session = new_session()
        assert (await ask(client, editor, opening, session_id=session, top_k=1)).status_code == 200
        answer = (await ask(client, editor, FOLLOW_UP, session_id=session, top_k=1)).json()
        assert top(answer["sources"]) == pages[product]
        assert answer["retrieval_query"].startswith(FOLLOW_UP)
        assert product in answer["retrieval_query"].lower()
    alone = (await ask(client, editor, FOLLOW_UP, top_k=1)).json()
    assert alone["retrieval_query"] == FOLLOW_UP


async def test_api_chat_stream_names_the_retrieval_query_in_its_sources_event(
    client: httpx.AsyncClient, editor: Caller, pages: dict[str, str]
) -> None:
    session = new_session()
    await ask(client, editor, OPENINGS["osprey"], session_id=session, top_k=1)
    response = await ask(client, editor, FOLLOW_UP, session_id=session, top_k=1, stream=True)
    first = response.text.split("\n\n")[0]
    assert first.startswith("event: sources")
    sources = json.loads(first.split("data: ", 1)[1])
    assert top(sources["sources"]) == pages["osprey"]
    assert "osprey" in sources["retrieval_query"].lower()


async def test_openai_messages_history_drives_retrieval(
    client: httpx.AsyncClient, editor: Caller, pages: dict[str, str]
) -> None:
    headers = {"Authorization": f"Bearer {editor.key}"}
    for product, opening in OPENINGS.items():
        messages = [
            {"role": "user", "content": opening},
            {"role": "assistant", "content": "It is one of our network devices."},
            {"role": "user", "content": FOLLOW_UP},
        ]
        response = await client.post(
            "/v1/chat/completions", json={"model": "rag", "messages": messages}, headers=headers
        )
        assert response.status_code == 200, response.text
        rag = response.json()["rag"]
        assert top(rag["sources"]) == pages[product]
        assert product in rag["retrieval_query"].lower()


async def test_mcp_ask_in_a_session_retrieves_for_the_conversation(
    app: FastAPI, editor: Caller, pages: dict[str, str]
) -> None:
    async with mcp_session(app, editor.headers) as session:
        for product, opening in OPENINGS.items():
            await session.call_tool("ask", {"question": opening, "session_id": f"mcp-{product}"})
            result = await session.call_tool("ask", {"question": FOLLOW_UP, "session_id": f"mcp-{product}"})
            assert not result.is_error and result.structured_content is not None
            assert result.structured_content["sources"][0]["document_id"] == pages[product]
            assert product in result.structured_content["retrieval_query"].lower()
