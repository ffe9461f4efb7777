from __future__ import annotations

import json

import httpx
import pytest
from sqlalchemy import exc as sa_exc

from app.auth.principal import Role
from app.chat.pipeline import Preparation
from app.rag.embeddings import LocalEmbedder
from app.settings import Settings
from tests.fakes.fake_llm_server import FakeLLMServer
from tests.support.apps import running_app
from tests.support.callers import Caller
from tests.support.library import Library, new_session

pytestmark = pytest.mark.integration


def parse_sse(raw: str) -> list[tuple[str, dict[str, object]]]:
    events = []
    for block in raw.strip().split("\n\n"):
        lines = [line for line in block.splitlines() if not line.startswith(":")]
        if not lines:
            continue
        name = next(line[7:] for line in lines if line.startswith("event: "))
        data = json.loads(next(line[6:] for line in lines if line.startswith("data: ")))
        events.append((name, data))
    return events


async def test_stream_sends_sources_then_deltas_then_done(
    client: httpx.AsyncClient, library: Library, editor: Caller, fake: FakeLLMServer
) -> None:
    await library.add("The quarterly review happens in the Blue Room.", filename="review.txt")
    fake.configure("openai", text="It happens in the Blue Room [1].")
    session = new_session()
    response = await client.post(
        "/api/v1/chat",
        json={"question": "Where is the quarterly review?", "session_id": session},
        headers={**editor.headers, "Accept": "text/event-stream"},
    )
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/event-stream")
    assert response.headers["cache-control"] == "no-cache"
    assert response.headers["x-accel-buffering"] == "no"
    events = parse_sse(response.text)
    names = [name for name, _ in events]
    assert names[0] == "sources" and names[-1] == "done"
    assert set(names[1:-1]) == {"delta"} and len(names) > 3
    text = "".join(str(data["text"]) for name, data in events if name == "delta")
    assert text == "It happens in the Blue Room [1]."
    done = events[-1][1]
    assert done["provider"] == "openai" and done["cached"] is False and done["cited"] == [1]
    assert done["trace_id"] == response.headers["X-Trace-ID"]
    # history holds exactly what was streamed
    messages = (await client.get(f"/api/v1/sessions/{session}/messages", headers=editor.headers)).json()[
        "messages"
    ]
    assert messages[-1]["content"] == text
    assert messages[-1]["sources"] == events[0][1]["sources"]
    # the same question again streams from the cache
    again = parse_sse(
        (
            await client.post(
                "/api/v1/chat",
                json={"question": "Where is the quarterly review?", "stream": True},
                headers=editor.headers,
            )
        ).text
    )
    assert [name for name, _ in again] == ["sources", "delta", "done"]
    assert again[-1][1]["cached"] is True
    assert again[1][1]["text"] == text


async def test_a_failure_after_the_first_token_is_an_error_event_and_a_failed_turn(
    client: httpx.AsyncClient, library: Library, editor: Caller, fake: FakeLLMServer
) -> None:
    await library.add("The quarterly review happens in the Blue Room.", filename="review.txt")
    fake.configure("openai", mode="cut", cut_after_tokens=3, text="one two three four five six seven")
    session = new_session()
    response = await client.post(
        "/api/v1/chat",
        json={"question": "Where is the quarterly review?", "session_id": session, "stream": True},
        headers=editor.headers,
    )
    events = parse_sse(response.text)
    names = [name for name, _ in events]
    assert names[0] == "sources" and "delta" in names
    assert names[-1] == "error" and "done" not in names
    assert events[-1][1]["trace_id"] == response.headers["X-Trace-ID"]
    partial = "".join(str(data["text"]) for name, data in events if name == "delta")
    messages = (await client.get(f"/api/v1/sessions/{session}/messages", headers=editor.headers)).json()[
        "messages"
    ]
    assert messages[-1]["status"] == "failed"
    assert messages[-1]["content"] == partial


@pytest.mark.parametrize(
    ("failure", "code"),
    [
        (
            sa_exc.OperationalError("SELECT", {}, OSError("server closed the connection")),
            "database_unavailable",
        ),
        (RuntimeError("a bug"), "internal_error"),
    ],
    ids=["database", "bug"],
)
async def test_a_stream_that_fails_after_its_200_ends_with_an_error_event(
    client: httpx.AsyncClient,
    library: Library,
    editor: Caller,
    monkeypatch: pytest.MonkeyPatch,
    failure: Exception,
    code: str,
) -> None:
    await library.add("The quarterly review happens in the Blue Room.", filename="review.txt")

    async def preparation_fails(*args: object, **kwargs: object) -> None:
        raise failure

    monkeypatch.setattr(Preparation, "prepare", preparation_fails)
    response = await client.post(
        "/api/v1/chat",
        json={"question": "Where is the quarterly review?", "stream": True},
        headers=editor.headers,
    )
    assert response.status_code == 200  # the stream had started
    events = parse_sse(response.text)
    assert events, "the stream ended without a single event"
    name, data = events[-1]
    assert name == "error", events
    assert data["code"] == code
    assert data["trace_id"] == response.headers["X-Trace-ID"]


async def test_streams_per_principal_are_capped_across_workers_and_released_when_done(
    settings: Settings, embedder: LocalEmbedder, fake: FakeLLMServer
) -> None:
    async with running_app(settings, embedder=embedder, max_streams_per_principal=2) as (app, client, make):
        resources = app.state.resources
        caller = await make(tenant="acme", role=Role.editor)
        await Library(client, resources, caller).add("The archive is on level two.", filename="a.txt")
        body = {"question": "Where is the archive?", "stream": True}
        identity = f"{caller.tenant_id}/{caller.principal_id}"
        # two answers already streaming for this caller, e.g. from other workers
        held = [await resources.stream_slots.acquire(identity) for _ in range(2)]

        refused = await client.post("/api/v1/chat", json=body, headers=caller.headers)
        assert refused.status_code == 429, refused.text
        assert refused.json()["code"] == "too_many_streams"
        assert refused.headers["Retry-After"] == "1"
        other = await make(tenant="acme", role=Role.reader)  # another caller is not affected
        assert (await client.post("/api/v1/chat", json=body, headers=other.headers)).status_code == 200

        await resources.stream_slots.release(identity, held.pop())
        answered = await client.post("/api/v1/chat", json=body, headers=caller.headers)
        assert answered.status_code == 200
        assert parse_sse(answered.text)[-1][0] == "done"
        # the finished stream gave its slot back: one more may start
        assert await resources.stream_slots.acquire(identity) is not None
