"""The OpenAI-compatible surface (/v1) over ASGI: the real app and pipeline, the OpenAI provider
played by the wire-level fake. Shapes, models, errors in OpenAI's format, streaming."""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest

from app.rag.embeddings import LocalEmbedder
from app.settings import Settings
from tests.fakes.fake_llm_server import FakeLLMServer
from tests.support.callers import Caller
from tests.support.library import Library, new_session
from tests.support.llm import fake_openai_overrides

pytestmark = pytest.mark.integration

DOC = "The quarterly review happens in the Blue Room on the second floor."


@pytest.fixture
def settings(settings: Settings, fake: FakeLLMServer) -> Settings:
    return settings.model_copy(update={**fake_openai_overrides(fake), "router_cooldown_s": 0.5})


@pytest.fixture
def app_embedder(embedder: LocalEmbedder) -> LocalEmbedder:
    return embedder


def bearer(caller: Caller) -> dict[str, str]:
    return {"Authorization": f"Bearer {caller.key}"}


async def complete(client: httpx.AsyncClient, caller: Caller, **body: Any) -> httpx.Response:
    payload = {"model": "rag", "messages": [{"role": "user", "content": "Where is the review?"}], **body}
    return await client.post("/v1/chat/completions", json=payload, headers=bearer(caller))


def data_events(raw: str) -> list[str]:
    """The ``data:`` payloads of an SSE body, in order (comments skipped)."""
    out = []
    for block in raw.strip().split("\n\n"):
        for line in block.splitlines():
            if line.startswith("data: "):
                out.append(line[6:])
    return out


def assert_openai_error(response: httpx.Response, status: int, code: str, param: str | None = None) -> None:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json")
    error = response.json()["error"]
    assert error["code"] == code, error
    assert error["param"] == param, error
    assert isinstance(error["message"], str) and error["message"]
    assert error["type"] == ("server_error" if status >= 500 else error["type"])
    assert error["trace_id"] == response.headers["X-Trace-ID"]


async def test_completion_has_openai_shape_and_the_rag_extension(
    client: httpx.AsyncClient, library: Library, editor: Caller, fake: FakeLLMServer
) -> None:
    await library.add(DOC, filename="review.txt")
    fake.configure("openai", text="It happens in the Blue Room [1].", response_model="gpt-4o-mini-2024-07-18")
    response = await complete(
        client,
        editor,
        messages=[
            {"role": "system", "content": "You are helpful."},
            {"role": "user", "content": [{"type": "text", "text": "Where is the quarterly review?"}]},
        ],
        temperature=0.2,
        max_completion_tokens=300,
        top_p=0.9,
        presence_penalty=0.1,
        n=1,
    )
    assert response.status_code == 200, response.text
    body = response.json()
    trace_id = response.headers["X-Trace-ID"]
    assert body["id"] == f"chatcmpl-{trace_id}"
    assert body["object"] == "chat.completion"
    assert isinstance(body["created"], int)
    # who answered, as the provider's own response named the model
    assert body["model"] == "rag/openai/gpt-4o-mini-2024-07-18"
    assert body["choices"] == [
        {
            "index": 0,
            "message": {"role": "assistant", "content": "It happens in the Blue Room [1]."},
            "finish_reason": "stop",
        }
    ]
    usage = body["usage"]
    assert usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"] > 0
    rag = body["rag"]
    assert rag["provider"] == "openai" and rag["cached"] is False and rag["trace_id"] == trace_id
    assert rag["sources"][0]["title"] == "review.txt" and rag["sources"][0]["cited"] is True
    sent = fake.stats()["openai"]["last_request"]
    assert sent["temperature"] == 0.2
    assert "Where is the quarterly review?" in json.dumps(sent["messages"])


async def test_the_question_is_the_last_user_message(
    client: httpx.AsyncClient, library: Library, editor: Caller, fake: FakeLLMServer
) -> None:
    await library.add(DOC, filename="review.txt")
    fake.configure("openai", text="On the second floor [1].")
    response = await complete(
        client,
        editor,
        messages=[
            {"role": "user", "content": "Hello there"},
            {"role": "assistant", "content": "Hi! Ask me about your documents."},
            {"role": "user", "content": "Which floor is the quarterly review on?"},
        ],
    )
    assert response.status_code == 200, response.text
    user_prompt = fake.stats()["openai"]["last_request"]["messages"][-1]["content"]
    assert user_prompt.rstrip().endswith("Question: Which floor is the quarterly review on?")
    # the earlier turns are the conversation history, quoted as data before the question
    history = user_prompt[user_prompt.index("<history>") : user_prompt.index("</history>")]
    assert "Q: Hello there" in history and "A: Hi! Ask me about your documents." in history


async def test_a_pinned_provider_is_used(
    client: httpx.AsyncClient, library: Library, editor: Caller, fake: FakeLLMServer
) -> None:
    await library.add(DOC, filename="review.txt")
    fake.configure("openai", text="In the Blue Room [1].")
    response = await complete(client, editor, model="rag/openai")
    assert response.status_code == 200, response.text
    assert response.json()["model"] == "rag/openai/gpt-4o-mini"  # the fake names the model asked for
    assert response.json()["rag"]["provider"] == "openai"


async def test_models_lists_rag_and_each_configured_provider(
    client: httpx.AsyncClient, editor: Caller
) -> None:
    response = await client.get("/v1/models", headers=bearer(editor))
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["object"] == "list"
    ids = [m["id"] for m in body["data"]]
    assert ids[:2] == ["rag", "rag/openai"]  # then the other configured links (extractive quoting)
    assert "rag/gemini" not in ids
    assert all(m["object"] == "model" and m["owned_by"] == "ragchat" for m in body["data"])
    one = await client.get("/v1/models/rag/openai", headers=bearer(editor))
    assert one.status_code == 200 and one.json()["id"] == "rag/openai"
    assert_openai_error(
        await client.get("/v1/models/gpt-4o", headers=bearer(editor)), 404, "model_not_found", "model"
    )
    assert_openai_error(await client.get("/v1/models"), 401, "invalid_api_key")


@pytest.mark.parametrize("model", ["gpt-4o", "rag/nosuch", "rag/", "rag/gemini"])
async def test_an_unknown_model_is_openais_404(client: httpx.AsyncClient, editor: Caller, model: str) -> None:
    response = await complete(client, editor, model=model)
    assert_openai_error(response, 404, "model_not_found", "model")
    assert response.json()["error"]["type"] == "invalid_request_error"
    streamed = await complete(client, editor, model=model, stream=True)
    assert_openai_error(streamed, 404, "model_not_found", "model")


async def test_a_bad_key_is_openais_401_and_the_body_is_not_read(
    client: httpx.AsyncClient, editor: Caller
) -> None:
    payload = {"model": "rag", "messages": [{"role": "user", "content": "hi"}]}
    for headers in ({"Authorization": "Bearer not-a-key"}, {}):
        response = await client.post("/v1/chat/completions", json=payload, headers=headers)
        assert_openai_error(response, 401, "invalid_api_key")
        assert response.json()["error"]["type"] == "invalid_request_error"
    # malformed body, no key: refused as 401 before the body is parsed
    response = await client.post(
        "/v1/chat/completions", content=b"{not json", headers={"Authorization": "Bearer x"}
    )
    assert_openai_error(response, 401, "invalid_api_key")
    # the /api/ surface keeps problem+json
    legacy = await client.post("/api/v1/chat", json={"question": "hi"}, headers={"Authorization": "Bearer x"})
    assert legacy.status_code == 401
    assert legacy.headers["content-type"].startswith("application/problem+json")


QUESTION = {"role": "user", "content": "Where is the review?"}


def earlier(question: str, answer: str) -> list[dict[str, str]]:
    return [{"role": "user", "content": question}, {"role": "assistant", "content": answer}]


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"messages": []}, "messages"),
        ({"messages": [{"role": "assistant", "content": "hi"}]}, "messages"),
        ({"messages": [{"role": "user", "content": "   "}]}, "messages"),
        ({"messages": [{"role": "user", "content": "x" * 5000}]}, "messages"),
        ({"messages": [{"role": "user", "content": "a\u0000b"}]}, "messages"),
        # every message is bounded, not only the question: history is what the prompt is built of
        ({"messages": [*earlier("x" * 4001, "ok"), QUESTION]}, "messages"),
        ({"messages": [*earlier("ok", "x" * 16001), QUESTION]}, "messages"),
        ({"messages": [{"role": "system", "content": "x" * 16001}, QUESTION]}, "messages"),
        ({"messages": [{"role": "user", "content": [{"type": "text", "text": "x" * 4001}]}]}, "messages"),
        # the body-limit repro: 20 user/assistant pairs of 25 KB before the question
        ({"messages": [*earlier("w " * 12_500, "w " * 12_500) * 20, QUESTION]}, "messages"),
        ({"n": 2}, "n"),
        ({"temperature": 3}, "temperature"),
        ({"max_tokens": 0}, "max_tokens"),
        ({"metadata": {"session_id": "not a session id"}}, "metadata"),
        ({"model": None}, "model"),
    ],
)
async def test_invalid_input_is_openais_400(
    client: httpx.AsyncClient, editor: Caller, body: dict[str, Any], param: str
) -> None:
    response = await complete(client, editor, **body)
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert error["type"] == "invalid_request_error"
    assert error["param"] == param
    assert error["code"] == f"invalid_{param}"


async def test_malformed_json_is_openais_400(client: httpx.AsyncClient, editor: Caller) -> None:
    response = await client.post(
        "/v1/chat/completions",
        content=b'{"model": "rag", ',
        headers={**bearer(editor), "Content-Type": "application/json"},
    )
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "malformed_json"


async def test_stream_sends_chunks_then_done(
    client: httpx.AsyncClient, library: Library, editor: Caller, fake: FakeLLMServer
) -> None:
    await library.add(DOC, filename="review.txt")
    fake.configure("openai", text="It happens in the Blue Room [1].")
    response = await complete(
        client,
        editor,
        model="rag/openai",
        stream=True,
        stream_options={"include_usage": True},
        messages=[{"role": "user", "content": "Where does the quarterly review happen?"}],
    )
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/event-stream")
    events = data_events(response.text)
    assert events[-1] == "[DONE]"
    chunks = [json.loads(e) for e in events[:-1]]
    trace_id = response.headers["X-Trace-ID"]
    assert all(c["object"] == "chat.completion.chunk" for c in chunks)
    assert all(c["id"] == f"chatcmpl-{trace_id}" and c["model"] == "rag/openai/gpt-4o-mini" for c in chunks)
    assert chunks[0]["choices"][0]["delta"]["role"] == "assistant"
    text = "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks if c["choices"])
    assert text == "It happens in the Blue Room [1]."
    usage_chunk = chunks[-1]
    assert usage_chunk["choices"] == [] and usage_chunk["usage"]["total_tokens"] > 0
    last = chunks[-2]
    assert last["choices"][0]["finish_reason"] == "stop" and last["choices"][0]["delta"] == {}
    assert last["rag"]["provider"] == "openai" and last["rag"]["trace_id"] == trace_id
    assert last["rag"]["sources"][0]["title"] == "review.txt" and last["rag"]["sources"][0]["cited"] is True
    assert all(c["choices"][0]["finish_reason"] is None for c in chunks[:-2])


async def test_a_failure_after_the_first_token_ends_with_an_error_and_no_done(
    client: httpx.AsyncClient, library: Library, editor: Caller, fake: FakeLLMServer
) -> None:
    await library.add(DOC, filename="review.txt")
    fake.configure(
        "openai", text="It happens in the Blue Room on floor two [1].", mode="cut", cut_after_tokens=2
    )
    response = await complete(
        client, editor, stream=True, messages=[{"role": "user", "content": "Where is the review held?"}]
    )
    assert response.status_code == 200
    events = data_events(response.text)
    assert "[DONE]" not in events
    payloads = [json.loads(e) for e in events]
    assert any(p.get("choices") and p["choices"][0]["delta"].get("content") for p in payloads[:-1])
    error = payloads[-1]["error"]
    assert error["message"] and error["code"] and error["type"] == "server_error"
    assert error["trace_id"] == response.headers["X-Trace-ID"]


async def test_a_session_id_binds_the_request_to_a_stored_conversation(
    client: httpx.AsyncClient, library: Library, editor: Caller, fake: FakeLLMServer
) -> None:
    await library.add(DOC, filename="review.txt")
    fake.configure("openai", text="In the Blue Room [1].")
    session = new_session()
    first = await complete(client, editor, metadata={"session_id": session})
    assert first.status_code == 200, first.text
    assert first.json()["rag"]["session_id"] == session
    second = await complete(
        client, editor, user=session, messages=[{"role": "user", "content": "And which floor is it on?"}]
    )
    assert second.json()["rag"]["session_id"] == session
    history = await client.get(f"/api/v1/sessions/{session}/messages", headers=editor.headers)
    assert [m["role"] for m in history.json()["messages"]] == ["user", "assistant"] * 2
    # a client-chosen id in metadata binds too; a `user` that is no UUID (an end-user label) does not
    named = await complete(client, editor, metadata={"session_id": "support-chat.42"})
    assert named.status_code == 200 and named.json()["rag"]["session_id"] == "support-chat.42"
    stateless = await complete(client, editor, user="alice")
    assert stateless.status_code == 200 and stateless.json()["rag"]["session_id"] is None
