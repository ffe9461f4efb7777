"""The leak matrix of per-document access (issue 31): two groups, "hr" and "eng", and a document
only "hr" may see, on every surface that can show a document. Every check that the "eng" reader
sees nothing is paired with the "hr" reader seeing it, so none can pass by finding nothing."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from app.auth.principal import Role
from tests.fakes.fake_llm_server import FakeLLMServer
from tests.support.callers import Caller, MakeCaller
from tests.support.library import Library, ask, new_session
from tests.support.mcp import mcp_session

pytestmark = [pytest.mark.integration, pytest.mark.pgvector]

SECRET = "ZEBRA-42"
SALARIES = (
    "# Salaries\n\nThe salary band for staff engineers is 180k to 210k a year; "
    f"the approval code for salary changes is {SECRET}."
)
PARKING = "# Parking\n\nStaff parking is on level two of the garage. Bicycles go in the courtyard racks."
CANTEEN = "# Canteen\n\nThe canteen door code is LEMON-7. Lunch is served from noon to two."
SALARY_QUESTION = "What is the salary band for staff engineers and the approval code?"


@dataclass
class World:
    admin: Caller
    hr: Caller
    eng: Caller
    salaries: str
    parking: str


@pytest.fixture
async def world(library: Library, make_caller: MakeCaller) -> World:
    admin = await make_caller(role=Role.admin, name="admin")
    hr = await make_caller(role=Role.reader, name="hr", groups=("hr",))
    eng = await make_caller(role=Role.reader, name="eng", groups=("eng",))
    salaries = await library.add(
        SALARIES, filename="salaries.md", title="Salaries", caller=admin, access_groups="hr"
    )
    parking = await library.add(PARKING, filename="parking.md", title="Parking", caller=admin)
    return World(admin, hr, eng, salaries, parking)


def source_ids(body: dict[str, Any]) -> set[str]:
    return {s["document_id"] for s in body["sources"]}


def prompt_text(fake: FakeLLMServer) -> str:
    """The last prompt the provider got since the fake was reset; "" when it got none (a turn the
    relevance gate answered "nothing matches" calls no model)."""
    last = fake.stats()["openai"].get("last_request")
    return " ".join(m["content"] for m in last["messages"]) if last else ""


async def test_documents_and_jobs_hide_the_restricted_document(
    client: httpx.AsyncClient, world: World
) -> None:
    listed = {
        who: {d["id"] for d in (await client.get("/api/v1/docs", headers=c.headers)).json()["items"]}
        for who, c in (("hr", world.hr), ("eng", world.eng), ("admin", world.admin))
    }
    assert listed["hr"] == listed["admin"] == {world.salaries, world.parking}
    assert listed["eng"] == {world.parking}

    shown = await client.get(f"/api/v1/docs/{world.salaries}", headers=world.hr.headers)
    assert shown.status_code == 200
    assert shown.json()["access"] == {"groups": ["hr"], "principals": []}
    versions = await client.get(f"/api/v1/docs/{world.salaries}/versions", headers=world.hr.headers)
    job_url = f"/api/v1/jobs/{versions.json()[0]['job_id']}"
    assert (await client.get(job_url, headers=world.hr.headers)).status_code == 200

    missing = await client.get(f"/api/v1/docs/{uuid.uuid4()}", headers=world.eng.headers)
    for path in (f"/api/v1/docs/{world.salaries}", f"/api/v1/docs/{world.salaries}/versions"):
        hidden = await client.get(path, headers=world.eng.headers)
        assert hidden.status_code == 404
        assert hidden.json()["code"] == missing.json()["code"] == "document_not_found"
    hidden_job = await client.get(job_url, headers=world.eng.headers)
    assert hidden_job.status_code == 404 and SECRET not in hidden_job.text


async def test_access_is_set_by_editors_only_and_validated(
    client: httpx.AsyncClient, world: World, editor: Caller
) -> None:
    url = f"/api/v1/docs/{world.parking}"
    reader = await client.patch(url, json={"access": {"groups": ["eng"]}}, headers=world.hr.headers)
    assert reader.status_code == 403
    for bad in ({"groups": ["has space"]}, {"groups": [f"g{n}" for n in range(65)]}, {"principals": ["x"]}):
        refused = await client.patch(url, json={"access": bad}, headers=editor.headers)
        assert refused.status_code == 422, refused.text
        assert refused.json()["code"] == "invalid_access"
    narrowed = await client.patch(url, json={"access": {"groups": ["eng"]}}, headers=editor.headers)
    assert narrowed.json()["access"] == {"groups": ["eng"], "principals": []}
    assert (await client.get(url, headers=world.hr.headers)).status_code == 404
    assert (await client.get(url, headers=world.eng.headers)).status_code == 200
    # the editor (in no group) narrowed it away from itself; an admin opens it to the tenant again
    assert (await client.get(url, headers=editor.headers)).status_code == 404
    opened = await client.patch(url, json={"access": {"groups": []}}, headers=world.admin.headers)
    assert opened.json()["access"] == {"groups": [], "principals": []}
    assert (await client.get(url, headers=world.hr.headers)).status_code == 200


async def test_chat_and_the_openai_surface_never_retrieve_it(
    client: httpx.AsyncClient, world: World, fake: FakeLLMServer
) -> None:
    fake.configure("openai", text="Here is what the documents say [1].")
    allowed = await ask(client, world.hr, SALARY_QUESTION)
    assert world.salaries in source_ids(allowed.json())
    assert SECRET in prompt_text(fake)

    # the same question from "eng": its own cache key, its own retrieval, not one passage of it
    fake.reset()  # what the provider is sent from here on is eng's alone
    refused = await ask(client, world.eng, SALARY_QUESTION)
    assert refused.status_code == 200
    assert refused.json()["cached"] is False
    assert world.salaries not in source_ids(refused.json())
    assert SECRET not in refused.text and SECRET not in prompt_text(fake)

    completion = await client.post(
        "/v1/chat/completions",
        json={"model": "rag", "messages": [{"role": "user", "content": SALARY_QUESTION}]},
        headers={"Authorization": f"Bearer {world.eng.key}"},
    )
    assert completion.status_code == 200, completion.text
    assert world.salaries not in {s["document_id"] for s in completion.json()["rag"]["sources"]}
    assert SECRET not in completion.text and SECRET not in prompt_text(fake)


async def test_a_cache_hit_is_replayed_only_to_callers_who_may_see_its_sources(
    client: httpx.AsyncClient, library: Library, world: World, make_caller: MakeCaller, fake: FakeLLMServer
) -> None:
    # Granted to one principal: a caller with the same (no) groups has the same cache key.
    owner = await make_caller(role=Role.reader, name="owner")
    peer = await make_caller(role=Role.reader, name="peer")
    await library.add(
        CANTEEN,
        filename="canteen.md",
        title="Canteen",
        caller=world.admin,
        access_principals=owner.principal_id,
    )
    fake.configure("openai", text="The canteen door code is LEMON-7 [1].")
    question = "What is the canteen door code?"
    warmed = await ask(client, owner, question)
    assert "LEMON-7" in warmed.text and warmed.json()["cached"] is False
    assert (await ask(client, owner, question)).json()["cached"] is True

    fake.reset()
    fake.configure("openai", text="I cannot tell from these documents.")
    other = await ask(client, peer, question)
    assert other.json()["cached"] is False
    assert "LEMON-7" not in other.text and "LEMON-7" not in prompt_text(fake)


async def test_narrowing_invalidates_cached_answers_and_hides_earlier_turns(
    client: httpx.AsyncClient, library: Library, world: World, fake: FakeLLMServer
) -> None:
    bicycles = "# Bicycles\n\nBicycles go in the courtyard racks by the north gate."
    await library.add(bicycles, filename="bicycles.md", title="Bicycles", caller=world.admin)
    fake.configure("openai", text="Staff parking is on level two [1].")
    question = "Where is staff parking?"
    session = new_session()
    first = await ask(client, world.eng, question, session_id=session)
    assert world.parking in source_ids(first.json())
    assert (await ask(client, world.eng, question)).json()["cached"] is True  # warmed, sessionless

    narrowed = await client.patch(
        f"/api/v1/docs/{world.parking}", json={"access": {"groups": ["hr"]}}, headers=world.admin.headers
    )
    assert narrowed.status_code == 200

    fake.configure("openai", text="I do not know.")
    again = await ask(client, world.eng, question)
    assert again.json()["cached"] is False
    assert world.parking not in source_ids(again.json())
    assert "level two" not in again.text

    asked = fake.stats()["openai"]["chat_requests"]
    follow_up = await ask(client, world.eng, "And where do bicycles go?", session_id=session)
    assert follow_up.status_code == 200
    assert fake.stats()["openai"]["chat_requests"] == asked + 1  # the model was asked, with history
    assert "level two" not in prompt_text(fake)  # the earlier turn is not in the history sent
    history = await client.get(f"/api/v1/sessions/{session}/messages", headers=world.eng.headers)
    assert "level two" not in history.text
    assert history.json()["messages"][0]["content"] == "And where do bicycles go?"


async def mcp_calls(app: FastAPI, caller: Caller) -> dict[str, dict[str, Any]]:
    async with mcp_session(app, caller.headers) as session:
        calls = {
            "list": await session.call_tool("list_documents", {}),
            "search": await session.call_tool("search_documents", {"query": SALARY_QUESTION}),
            "ask": await session.call_tool("ask", {"question": SALARY_QUESTION}),
        }
    out = {}
    for name, result in calls.items():
        assert not result.is_error, result.content
        assert result.structured_content is not None
        out[name] = result.structured_content
    return out


async def test_mcp_search_list_and_ask_respect_it(app: FastAPI, world: World, fake: FakeLLMServer) -> None:
    fake.configure("openai", text="Here is what the documents say [1].")
    allowed = await mcp_calls(app, world.hr)
    assert world.salaries in {d["id"] for d in allowed["list"]["documents"]}
    assert any(SECRET in p["text"] for p in allowed["search"]["passages"])
    assert world.salaries in {s["document_id"] for s in allowed["ask"]["sources"]}

    fake.reset()
    refused = await mcp_calls(app, world.eng)
    assert {d["id"] for d in refused["list"]["documents"]} == {world.parking}
    assert all(p["document_id"] != world.salaries for p in refused["search"]["passages"])
    assert world.salaries not in {s["document_id"] for s in refused["ask"]["sources"]}
    assert SECRET not in str(refused) and SECRET not in prompt_text(fake)
