from __future__ import annotations

import httpx
import pytest

from app.auth.principal import Role
from tests.fakes.fake_llm_server import FakeLLMServer
from tests.support.callers import Caller, MakeCaller
from tests.support.library import Library, ask, new_session

pytestmark = pytest.mark.integration


async def test_a_session_remembers_its_turns_and_belongs_to_its_creator(
    client: httpx.AsyncClient, library: Library, editor: Caller, make_caller: MakeCaller, fake: FakeLLMServer
) -> None:
    await library.add("The fire assembly point is the north car park.", filename="safety.txt")
    session = new_session()
    fake.configure("openai", text="The north car park [1].")
    assert (
        await ask(client, editor, "Where is the fire assembly point?", session_id=session)
    ).status_code == 200
    assert (
        await ask(client, editor, "Is the assembly point outdoors?", session_id=session)
    ).status_code == 200
    # the second prompt carried the first turn as history
    second_prompt = fake.stats()["openai"]["last_request"]["messages"][-1]["content"]
    assert "<history>" in second_prompt and "Where is the fire assembly point?" in second_prompt

    history = await client.get(f"/api/v1/sessions/{session}/messages", headers=editor.headers)
    assert history.status_code == 200
    messages = history.json()["messages"]
    assert [m["role"] for m in messages] == ["user", "assistant", "user", "assistant"]
    assert messages[1]["content"] == "The north car park [1]."
    assert messages[1]["sources"][0]["cited"] is True

    stranger = await make_caller(tenant="acme", role=Role.reader)
    assert (
        await client.get(f"/api/v1/sessions/{session}/messages", headers=stranger.headers)
    ).status_code == 404
    hijack = await ask(client, stranger, "Where is the fire assembly point?", session_id=session)
    assert hijack.status_code == 404
    assert hijack.json()["code"] == "session_not_found"

    assert (await client.delete(f"/api/v1/sessions/{session}", headers=editor.headers)).status_code == 204
    assert (
        await client.get(f"/api/v1/sessions/{session}/messages", headers=editor.headers)
    ).status_code == 404


@pytest.mark.parametrize(
    ("body", "code"),
    [
        ({"question": ""}, "invalid_question"),
        ({"question": "   "}, "invalid_question"),
        ({"question": "x" * 4001}, "invalid_question"),
        ({"question": "q", "top_k": 0}, "invalid_top_k"),
        ({"question": "q", "top_k": 21}, "invalid_top_k"),
        ({"question": "q", "session_id": "not a uuid"}, "invalid_session_id"),
        ({"question": "q", "session_id": "x" * 129}, "invalid_session_id"),
        ({"question": "q", "temperature": 3}, "invalid_temperature"),
        ({"question": "q", "mode": "telepathy"}, "invalid_mode"),
        ({"question": "q", "surprise": 1}, "invalid_surprise"),
        ({"question": "q", "model": "skynet-9000"}, "unknown_model"),
        ({"question": "where\u0000is it?"}, "invalid_question"),
        ({"question": "bell \u0007 rings"}, "invalid_question"),
        ({"question": "q", "model": "openai/gpt\u0000"}, "invalid_model"),
    ],
)
async def test_bad_chat_input_is_a_4xx_problem_with_its_code(
    client: httpx.AsyncClient, editor: Caller, body: dict[str, object], code: str
) -> None:
    response = await client.post("/api/v1/chat", json=body, headers=editor.headers)
    assert 400 <= response.status_code < 500, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    assert response.json()["code"] == code
    assert response.json()["trace_id"]


@pytest.mark.parametrize("stream", [False, True], ids=["json", "sse"])
@pytest.mark.parametrize(
    ("body", "code"),
    [
        # 4,000 characters, one token each: more than the default 3,500-token budget leaves
        ({"question": "?" * 4000}, "question_too_long"),
        ({"question": "How long is the refund window?", "max_tokens": 4096}, "invalid_max_tokens"),
    ],
    ids=["question", "max_tokens"],
)
async def test_a_prompt_that_cannot_fit_the_budget_is_a_422_naming_the_numbers(
    client: httpx.AsyncClient,
    editor: Caller,
    fake: FakeLLMServer,
    body: dict[str, object],
    code: str,
    stream: bool,
) -> None:
    """Before any retrieval or provider call, in both modes (never a 500, never an empty 200)."""
    fake.reset()
    response = await client.post("/api/v1/chat", json={**body, "stream": stream}, headers=editor.headers)
    assert response.status_code == 422, response.text
    problem = response.json()
    assert problem["code"] == code
    if code == "question_too_long":
        assert problem["tokens"] > problem["budget"] > 0
        named = (str(problem["tokens"]), str(problem["budget"]))
    else:
        named = ("4096", "3500")  # the max_tokens asked for and PROMPT_BUDGET_TOKENS
    assert all(number in problem["detail"] for number in named), problem["detail"]
    assert fake.stats()["openai"]["requests"] == 0


async def test_malformed_json_is_a_4xx_problem(client: httpx.AsyncClient, editor: Caller) -> None:
    response = await client.post(
        "/api/v1/chat",
        content=b'{"question": "unterminated',
        headers={**editor.headers, "Content-Type": "application/json"},
    )
    assert response.status_code == 422
    assert response.json()["code"] == "malformed_json"


async def test_chat_needs_credentials(client: httpx.AsyncClient) -> None:
    response = await client.post("/api/v1/chat", json={"question": "hello?"})
    assert response.status_code == 401
