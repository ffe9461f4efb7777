"""Citations a client can highlight: every surface's sources carry the passage's character span
in its page's text (``start``, ``end``) and a relevance a person can read (cosine similarity,
0 to 1), beside the machine-only rank ``score``."""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from app.settings import Settings
from tests.fakes.fake_llm_server import FakeLLMServer
from tests.support.callers import Caller
from tests.support.library import Library, ask
from tests.support.mcp import mcp_session

pytestmark = [pytest.mark.integration, pytest.mark.pgvector]

FILLER = [
    f"Paragraph {n} of the handbook describes routine item number {n} in plain words." for n in range(12)
]
FACT = "Backups of customer databases are kept for exactly 35 days before deletion."
# Unicode before the fact: offsets count characters (code points), not bytes.
HANDBOOK = "Café rules — naïve résumé 東京 🚀.\n\n" + "\n\n".join([*FILLER[:6], FACT, *FILLER[6:]])
QUESTION = "How long are database backups kept?"


@pytest.fixture
def settings(settings: Settings) -> Settings:
    return settings.model_copy(update={"chunk_max_tokens": 40, "chunk_overlap_tokens": 10})


def check_source(source: dict[str, Any], text: str) -> None:
    start, end = source["start"], source["end"]
    assert isinstance(start, int) and isinstance(end, int) and 0 < start < end <= len(text)
    passage = source.get("snippet", source.get("text", ""))
    assert passage.rstrip("…") == text[start:end][: len(passage.rstrip("…"))]
    assert 0.0 <= source["relevance"] <= 1.0


async def test_json_and_sse_sources_carry_the_span_of_their_passage(
    client: httpx.AsyncClient, library: Library, editor: Caller, fake: FakeLLMServer
) -> None:
    await library.add(HANDBOOK, filename="handbook.txt", title="Handbook")
    fake.configure("openai", text="Backups are kept for 35 days [1].")
    body = (await ask(client, editor, QUESTION)).json()
    top = body["sources"][0]
    assert "35 days" in top["snippet"]
    assert HANDBOOK[top["start"] : top["end"]].count(FACT) == 1
    for source in body["sources"]:
        check_source(source, HANDBOOK)
    # the passage that answers reads as more relevant than the rest
    assert top["relevance"] == max(s["relevance"] for s in body["sources"]) and top["relevance"] > 0.4

    streamed = await client.post(
        "/api/v1/chat",
        json={"question": QUESTION},
        headers={**editor.headers, "Accept": "text/event-stream"},
    )
    block = next(b for b in streamed.text.split("\n\n") if "event: sources" in b)
    sources = json.loads(next(line[6:] for line in block.splitlines() if line.startswith("data: ")))[
        "sources"
    ]
    assert [(s["start"], s["end"], s["relevance"]) for s in sources] == [
        (s["start"], s["end"], s["relevance"]) for s in body["sources"]
    ]


async def test_openai_rag_extension_and_mcp_show_the_span(
    app: FastAPI, client: httpx.AsyncClient, library: Library, editor: Caller, fake: FakeLLMServer
) -> None:
    await library.add(HANDBOOK, filename="handbook.txt", title="Handbook")
    fake.configure("openai", text="Backups are kept for 35 days [1].")
    completion = await client.post(
        "/v1/chat/completions",
        json={"model": "rag", "messages": [{"role": "user", "content": QUESTION}]},
        headers={"Authorization": f"Bearer {editor.key}"},
    )
    assert completion.status_code == 200, completion.text
    rag_sources = completion.json()["rag"]["sources"]
    assert FACT in HANDBOOK[rag_sources[0]["start"] : rag_sources[0]["end"]]
    for source in rag_sources:
        check_source(source, HANDBOOK)

    async with mcp_session(app, editor.headers) as session:
        asked = (await session.call_tool("ask", {"question": QUESTION})).structured_content
        searched = (await session.call_tool("search_documents", {"query": QUESTION})).structured_content
    assert asked is not None and searched is not None
    for source in asked["sources"]:
        check_source(source, HANDBOOK)
    top = searched["passages"][0]
    assert HANDBOOK[top["start"] : top["end"]] == top["text"]
    assert 0.4 < top["relevance"] <= 1.0
