"""Client-chosen session ids: any 1-128 characters of ``[A-Za-z0-9._:-]`` (or a UUID), scoped to
the caller's tenant and principal."""

from __future__ import annotations

import uuid

import httpx
import pytest

from app.auth.principal import Role
from tests.fakes.fake_llm_server import FakeLLMServer
from tests.support.callers import Caller, MakeCaller
from tests.support.library import Library, ask

pytestmark = pytest.mark.integration


async def history(client: httpx.AsyncClient, caller: Caller, session_id: str) -> httpx.Response:
    return await client.get(f"/api/v1/sessions/{session_id}/messages", headers=caller.headers)


async def questions(client: httpx.AsyncClient, caller: Caller, session_id: str) -> list[str]:
    response = await history(client, caller, session_id)
    assert response.status_code == 200, response.text
    return [m["content"] for m in response.json()["messages"] if m["role"] == "user"]


async def test_the_smoke_test_body_answers_with_an_opaque_session_id(
    client: httpx.AsyncClient, library: Library, editor: Caller, fake: FakeLLMServer
) -> None:
    await library.add("The test server lives in rack 7.", filename="racks.txt")
    fake.configure("openai", text="Rack 7 [1].")
    response = await client.post(
        "/api/v1/chat", json={"question": "test", "session_id": "test"}, headers=editor.headers
    )
    assert response.status_code == 200, response.text
    assert response.json()["session_id"] == "test"
    stored = await history(client, editor, "test")
    assert stored.status_code == 200, stored.text
    assert stored.json()["session_id"] == "test"
    assert [m["content"] for m in stored.json()["messages"]] == ["test", response.json()["answer"]]


async def test_two_principals_with_the_same_id_have_separate_conversations(
    client: httpx.AsyncClient, library: Library, editor: Caller, make_caller: MakeCaller, fake: FakeLLMServer
) -> None:
    await library.add("The canteen opens at noon. The gym opens at six.", filename="hours.txt")
    other = await make_caller(tenant="acme", role=Role.reader)
    fake.configure("openai", text="At noon [1].")
    assert (await ask(client, editor, "When does the canteen open?", session_id="test")).status_code == 200
    assert (await ask(client, other, "When does the gym open?", session_id="test")).status_code == 200
    # the other principal's prompt carried no history from the editor's "test"
    prompt = fake.stats()["openai"]["last_request"]["messages"][-1]["content"]
    assert "<history>" not in prompt and "When does the canteen open?" not in prompt
    assert (
        await ask(client, editor, "Does the canteen open at noon on Sundays?", session_id="test")
    ).status_code == 200
    prompt = fake.stats()["openai"]["last_request"]["messages"][-1]["content"]
    assert "When does the canteen open?" in prompt and "When does the gym open?" not in prompt

    assert await questions(client, editor, "test") == [
        "When does the canteen open?",
        "Does the canteen open at noon on Sundays?",
    ]
    assert await questions(client, other, "test") == ["When does the gym open?"]

    # resetting "test" resets only the caller's conversation
    assert (await client.delete("/api/v1/sessions/test", headers=other.headers)).status_code == 204
    assert (await history(client, other, "test")).status_code == 404
    assert len((await history(client, editor, "test")).json()["messages"]) == 4
    # a principal that never used the id sees 404, not someone else's conversation
    stranger = await make_caller(tenant="acme", role=Role.reader)
    missing = await history(client, stranger, "test")
    assert missing.status_code == 404
    assert missing.json()["code"] == "session_not_found"
    assert (await client.delete("/api/v1/sessions/test", headers=stranger.headers)).status_code == 404


async def test_a_uuid_session_id_still_works_and_stays_its_owners(
    client: httpx.AsyncClient, library: Library, editor: Caller, make_caller: MakeCaller, fake: FakeLLMServer
) -> None:
    await library.add("Badges are renewed every January.", filename="badges.txt")
    fake.configure("openai", text="Every January [1].")
    session = str(uuid.uuid4())
    first = await ask(client, editor, "When are badges renewed?", session_id=session.upper())
    assert first.status_code == 200, first.text
    assert first.json()["session_id"] == session  # UUIDs answer in canonical form, as before
    assert (await ask(client, editor, "Which month again?", session_id=session)).status_code == 200
    assert len((await history(client, editor, session)).json()["messages"]) == 4
    stranger = await make_caller(tenant="acme", role=Role.reader)
    hijack = await ask(client, stranger, "When are badges renewed?", session_id=session)
    assert hijack.status_code == 404
    assert hijack.json()["code"] == "session_not_found"


async def test_an_admin_reads_another_principals_opaque_session_by_its_conversation_id(
    client: httpx.AsyncClient, library: Library, editor: Caller, make_caller: MakeCaller, fake: FakeLLMServer
) -> None:
    await library.add("Parking is free on weekends.", filename="parking.txt")
    fake.configure("openai", text="Free on weekends [1].")
    assert (await ask(client, editor, "Is parking free?", session_id="support:42")).status_code == 200
    own = (await history(client, editor, "support:42")).json()
    conversation_id = own["conversation_id"]
    uuid.UUID(conversation_id)

    admin = await make_caller(tenant="acme", role=Role.admin)
    assert (await history(client, admin, "support:42")).status_code == 404  # the admin's own "support:42"
    read = await history(client, admin, conversation_id)
    assert read.status_code == 200
    assert read.json()["session_id"] == "support:42"
    assert read.json()["messages"][0]["content"] == "Is parking free?"

    foreign_admin = await make_caller(tenant="globex", role=Role.admin)
    assert (await history(client, foreign_admin, conversation_id)).status_code == 404
    reader = await make_caller(tenant="acme", role=Role.reader)
    assert (await history(client, reader, conversation_id)).status_code == 404
    # continuing it by its conversation id is refused even to the admin, as before
    hijack = await ask(client, admin, "Is parking free?", session_id=conversation_id)
    assert hijack.status_code == 404

    reset = await client.delete(f"/api/v1/sessions/{conversation_id}", headers=admin.headers)
    assert reset.status_code == 204
    assert (await history(client, editor, "support:42")).status_code == 404


VALID_IDS = ["a", "x" * 128, "A-z_0.9:-", "tenant:user.42_conv-1"]
INVALID_IDS = {
    "too-long": "x" * 129,
    "empty": "",
    "space": "a b",
    "slash": "a/b",
    "percent": "50%",
    "nul": "a\x00b",
    "newline": "test\n",
    "unicode": "caf\u00e9",
    "hash": "a#b",
}


@pytest.mark.parametrize("session_id", list(INVALID_IDS.values()), ids=list(INVALID_IDS))
async def test_a_bad_session_id_in_the_body_is_422_invalid_session_id(
    client: httpx.AsyncClient, editor: Caller, session_id: str
) -> None:
    response = await ask(client, editor, "q", session_id=session_id)
    assert response.status_code == 422, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    assert response.json()["code"] == "invalid_session_id"


@pytest.mark.parametrize("value", [123, ["test"], {"id": "test"}], ids=["int", "list", "object"])
async def test_a_session_id_that_is_not_a_string_is_422(
    client: httpx.AsyncClient, editor: Caller, value: object
) -> None:
    response = await ask(client, editor, "q", session_id=value)
    assert response.status_code == 422
    assert response.json()["code"] == "invalid_session_id"


@pytest.mark.parametrize(
    "encoded",
    ["x" * 129, "a%20b", "a%2Fb", "a/b", "50%25", "a%00b", "test%0A", "caf%C3%A9"],
    ids=["too-long", "space", "encoded-slash", "slash", "percent", "nul", "newline", "unicode"],
)
@pytest.mark.parametrize("method", ["GET", "DELETE"])
async def test_a_bad_session_id_in_the_path_is_422_invalid_session_id(
    client: httpx.AsyncClient, editor: Caller, method: str, encoded: str
) -> None:
    path = f"/api/v1/sessions/{encoded}" + ("/messages" if method == "GET" else "")
    response = await client.request(method, path, headers=editor.headers)
    assert response.status_code == 422, response.text
    assert response.json()["code"] == "invalid_session_id"


@pytest.mark.parametrize("session_id", VALID_IDS)
async def test_valid_opaque_ids_are_accepted_in_the_path(
    client: httpx.AsyncClient, editor: Caller, session_id: str
) -> None:
    response = await history(client, editor, session_id)
    assert response.status_code == 404  # well-formed, just not started yet
    assert response.json()["code"] == "session_not_found"
