"""Clients see who answered: primary = the ``openai`` link, fallback = the ``groq`` link (the wire
fake behind the real SDKs). The ``model`` of the OpenAI surface names the provider and model that
answered, the usage is the answering call's or absent, a stream broken on the primary is finished
by the fallback and says so, and only complete answers reach the cache and the answer ledger."""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest

from app.rag.embeddings import LocalEmbedder
from app.settings import Settings
from tests.fakes.fake_llm_server import PREFILL_REFUSAL, FakeLLMServer, tokens_of
from tests.support.callers import Caller
from tests.support.library import Library
from tests.support.llm import router_overrides

pytestmark = pytest.mark.integration

DOC = "The quarterly review happens in the Blue Room on the second floor."
ANSWER = "The quarterly review happens in the Blue Room on the second floor [1]."
GROQ = "rag/groq/llama-3.3-70b-versatile"
OPENAI = "rag/openai/gpt-4o-mini"


@pytest.fixture
def settings(settings: Settings, fake: FakeLLMServer) -> Settings:
    overrides = {
        **router_overrides(fake),
        "llm_providers": ["openai", "groq"],
        "run_worker_in_process": False,
        # Every fault here is immediate (a 503, a broken connection), so no budget is part of what
        # is tested: generous ones keep a loaded machine from failing the answering provider too.
        "router_stream_idle_timeout_s": 10.0,
    }
    for name in ("openai", "groq"):
        overrides[f"{name}_first_token_timeout_s"] = 10.0
        overrides[f"{name}_timeout_s"] = 20.0
    return settings.model_copy(update=overrides)


@pytest.fixture
def app_embedder(embedder: LocalEmbedder) -> LocalEmbedder:
    return embedder


async def complete(client: httpx.AsyncClient, caller: Caller, **body: Any) -> httpx.Response:
    payload = {"model": "rag", "messages": [{"role": "user", "content": "Where is the review?"}], **body}
    return await client.post(
        "/v1/chat/completions", json=payload, headers={"Authorization": f"Bearer {caller.key}"}
    )


def chunks_of(response: httpx.Response) -> tuple[list[dict[str, Any]], bool]:
    """The JSON chunks of an OpenAI stream, and whether it ended with ``[DONE]``."""
    data = [line[6:] for line in response.text.splitlines() if line.startswith("data: ")]
    done = bool(data) and data[-1] == "[DONE]"
    return [json.loads(d) for d in data if d != "[DONE]"], done


def content_of(chunks: list[dict[str, Any]]) -> str:
    return "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks if c.get("choices"))


def sse_events(raw: str) -> list[tuple[str, dict[str, Any]]]:
    events = []
    for block in raw.strip().split("\n\n"):
        lines = [line for line in block.splitlines() if not line.startswith(":")]
        if lines:
            name = next(line[7:] for line in lines if line.startswith("event: "))
            events.append((name, json.loads(next(line[6:] for line in lines if line.startswith("data: ")))))
    return events


async def test_a_fallback_answer_names_the_provider_and_model_that_answered(
    client: httpx.AsyncClient, library: Library, editor: Caller, fake: FakeLLMServer
) -> None:
    await library.add(DOC, filename="review.txt")
    fake.configure("openai", mode="error", status=503)
    fake.configure("groq", text=ANSWER)

    response = await complete(client, editor)
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["model"] == GROQ
    assert body["rag"]["provider"] == "groq" and body["rag"]["model"] == "llama-3.3-70b-versatile"
    assert body["usage"]["completion_tokens"] == len(tokens_of(ANSWER))  # groq's own count

    streamed = await complete(client, editor, stream=True, stream_options={"include_usage": True})
    chunks, done = chunks_of(streamed)
    assert done and content_of(chunks) == ANSWER
    assert {c["model"] for c in chunks} == {GROQ}  # every chunk, the role chunk included
    assert chunks[0]["choices"][0]["delta"]["role"] == "assistant"
    assert chunks[-1]["usage"]["completion_tokens"] == len(tokens_of(ANSWER))

    chat = await client.post(
        "/api/v1/chat", json={"question": "Where is the review?"}, headers=editor.headers
    )
    assert (chat.json()["provider"], chat.json()["model"]) == ("groq", "llama-3.3-70b-versatile")


async def test_the_model_is_named_as_the_providers_response_names_it(
    client: httpx.AsyncClient, library: Library, editor: Caller, fake: FakeLLMServer
) -> None:
    await library.add(DOC, filename="review.txt")
    fake.configure("openai", text=ANSWER, response_model="gpt-4o-mini-2024-07-18")
    response = await complete(client, editor)
    assert response.json()["model"] == "rag/openai/gpt-4o-mini-2024-07-18"
    chat = await client.post(
        "/api/v1/chat", json={"question": "Which room is the review in?"}, headers=editor.headers
    )
    assert chat.json()["model"] == "gpt-4o-mini-2024-07-18"


async def test_an_unknown_usage_is_left_out_never_zeros(
    client: httpx.AsyncClient, library: Library, editor: Caller, fake: FakeLLMServer
) -> None:
    await library.add(DOC, filename="review.txt")
    fake.configure("openai", text=ANSWER, stream_usage=False)

    response = await complete(client, editor)
    assert response.status_code == 200 and "usage" not in response.json()
    streamed = await complete(
        client,
        editor,
        stream=True,
        stream_options={"include_usage": True},
        messages=[{"role": "user", "content": "Which floor is the review on?"}],
    )
    chunks, done = chunks_of(streamed)
    assert done and content_of(chunks) == ANSWER
    assert all("usage" not in c and c["choices"] for c in chunks)


async def test_a_stream_cut_on_the_primary_is_finished_by_the_fallback(
    client: httpx.AsyncClient, library: Library, editor: Caller, fake: FakeLLMServer
) -> None:
    await library.add(DOC, filename="review.txt")
    fake.configure("openai", text=ANSWER, mode="cut", cut_after_tokens=4)
    fake.configure("groq", text=ANSWER)

    streamed = await complete(client, editor, stream=True)
    chunks, done = chunks_of(streamed)
    assert done, streamed.text
    assert content_of(chunks) == ANSWER
    speakers = [c["model"] for c in chunks if c["choices"] and c["choices"][0]["delta"].get("content")]
    assert speakers[:4] == [OPENAI] * 4 and set(speakers[4:]) == {GROQ}
    last = chunks[-1]
    assert last["choices"][0]["finish_reason"] == "stop" and last["model"] == GROQ
    assert last["rag"]["provider"] == "openai"
    assert last["rag"]["continued_by"] == {"provider": "groq", "model": "llama-3.3-70b-versatile"}
    assert fake.stats()["groq"]["last_prefill"] == "".join(tokens_of(ANSWER)[:4])


async def test_a_continued_answer_is_complete_and_cached_and_says_who_continued_it(
    client: httpx.AsyncClient, library: Library, editor: Caller, fake: FakeLLMServer
) -> None:
    await library.add(DOC, filename="review.txt")
    fake.configure("openai", text=ANSWER, mode="cut", cut_after_tokens=4)
    fake.configure("groq", text=ANSWER)
    question = {"question": "Where is the quarterly review?", "stream": True}

    response = await client.post("/api/v1/chat", json=question, headers=editor.headers)
    events = sse_events(response.text)
    assert events[-1][0] == "done", response.text
    done = events[-1][1]
    assert (done["provider"], done["continued_by"]) == (
        "openai",
        {"provider": "groq", "model": "llama-3.3-70b-versatile"},
    )
    assert "".join(data["text"] for name, data in events if name == "delta") == ANSWER
    assert done["usage"] is None

    before = fake.stats()
    again = sse_events((await client.post("/api/v1/chat", json=question, headers=editor.headers)).text)
    assert again[-1][1]["cached"] is True
    assert "".join(data["text"] for name, data in again if name == "delta") == ANSWER
    assert fake.stats()["openai"]["requests"] == before["openai"]["requests"]


async def test_a_broken_stream_is_neither_cached_nor_an_answer_to_rate(
    client: httpx.AsyncClient, library: Library, editor: Caller, fake: FakeLLMServer
) -> None:
    await library.add(DOC, filename="review.txt")
    fake.configure("openai", text=ANSWER, mode="cut", cut_after_tokens=4)
    fake.configure("groq", text=ANSWER, prefill="refuse")
    question = {"question": "Where is the quarterly review?", "stream": True}

    response = await client.post("/api/v1/chat", json=question, headers=editor.headers)
    events = sse_events(response.text)
    name, error = events[-1]
    assert name == "error" and error["code"] == "server_error", response.text  # the cut, not the refusal
    assert PREFILL_REFUSAL not in error["message"] and "prefill" not in error["message"].lower()
    assert fake.stats()["groq"]["prefill_requests"] == 1

    rated = await client.post(
        "/api/v1/feedback", json={"trace_id": error["trace_id"], "score": 1}, headers=editor.headers
    )
    assert rated.status_code == 404  # a failed attempt is no answer in the ledger
    metrics = (await client.get("/metrics")).text
    openai_attempts = [
        line
        for line in metrics.splitlines()
        if line.startswith("llm_requests_total{") and 'provider="openai"' in line
    ]
    assert any('outcome="server_error"' in line for line in openai_attempts), openai_attempts
    assert not any('outcome="success"' in line for line in openai_attempts)

    fake.configure("openai", text=ANSWER)
    again = sse_events((await client.post("/api/v1/chat", json=question, headers=editor.headers)).text)
    assert again[-1][1]["cached"] is False  # the broken answer was never cached
