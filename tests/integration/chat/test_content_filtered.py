"""A provider's content-policy refusal reaches the client as what it is, on both chat surfaces,
with the provider's reason (masked of secrets) and without asking another provider: /api/v1/chat
answers 422 problem ``content_filtered``, /v1/chat/completions OpenAI's 400
``content_policy_violation``. The provider is the OpenAI wire of the fake, through the real SDK;
the extractive answerer after it would have answered, had the router failed over."""

from __future__ import annotations

import json

import httpx
import pytest

from tests.fakes.fake_llm_server import FakeLLMServer
from tests.support.callers import Caller
from tests.support.library import Library, ask

pytestmark = [pytest.mark.integration, pytest.mark.pgvector]

GUIDE = "# Returns\n\nThe refund window is 30 days from delivery. Refunds go to the original card."
QUESTION = "How long is the refund window?"
LEAKED_KEY = "sk-proj-0123456789abcdefghijklmnop"  # a provider quoting a key in its reason
REASON = f"Your request was rejected as a result of our safety system (key {LEAKED_KEY})."


def sse_events(text: str) -> list[tuple[str, dict[str, object]]]:
    events = []
    for block in text.strip().split("\n\n"):
        lines = dict(line.split(": ", 1) for line in block.splitlines() if not line.startswith(":"))
        if "event" in lines:
            events.append((lines["event"], json.loads(lines["data"])))
    return events


async def test_chat_answers_422_content_filtered_with_the_providers_reason(
    client: httpx.AsyncClient, library: Library, editor: Caller, fake: FakeLLMServer
) -> None:
    await library.add(GUIDE, filename="returns.md")
    fake.configure("openai", mode="content_policy", refusal_message=REASON)

    refused = await ask(client, editor, QUESTION)
    assert refused.status_code == 422, refused.text
    assert refused.headers["content-type"].startswith("application/problem+json")
    problem = refused.json()
    assert problem["code"] == "content_filtered" and problem["provider"] == "openai"
    assert "rejected as a result of our safety system" in problem["detail"]
    assert problem["trace_id"] == refused.headers["X-Trace-ID"]
    assert LEAKED_KEY not in refused.text

    streamed = await ask(client, editor, QUESTION, stream=True)
    assert streamed.status_code == 200
    event, data = sse_events(streamed.text)[-1]
    assert (event, data["code"]) == ("error", "content_filtered")
    assert "safety system" in str(data["message"]) and LEAKED_KEY not in streamed.text
    assert [name for name, _ in sse_events(streamed.text)].count("delta") == 0
    assert fake.stats()["openai"]["chat_requests"] == 2  # once per request: no retry


async def test_the_openai_surface_answers_openais_400_content_policy_violation(
    client: httpx.AsyncClient, library: Library, editor: Caller, fake: FakeLLMServer
) -> None:
    await library.add(GUIDE, filename="returns.md")
    fake.configure("openai", mode="content_policy", refusal_message=REASON)
    body = {"model": "rag", "messages": [{"role": "user", "content": QUESTION}]}
    headers = {"Authorization": f"Bearer {editor.key}"}

    refused = await client.post("/v1/chat/completions", json=body, headers=headers)
    assert refused.status_code == 400, refused.text
    error = refused.json()["error"]
    assert (error["type"], error["code"]) == ("invalid_request_error", "content_policy_violation")
    assert "safety system" in error["message"] and LEAKED_KEY not in refused.text
    assert error["trace_id"] == refused.headers["X-Trace-ID"]

    streamed = await client.post("/v1/chat/completions", json={**body, "stream": True}, headers=headers)
    payloads = [json.loads(line[6:]) for line in streamed.text.splitlines() if line.startswith("data: {")]
    assert "[DONE]" not in streamed.text
    error = payloads[-1]["error"]
    assert (error["type"], error["code"]) == ("invalid_request_error", "content_policy_violation")
    assert "safety system" in error["message"] and LEAKED_KEY not in streamed.text
    assert not any(p.get("choices") and p["choices"][0]["delta"].get("content") for p in payloads)
