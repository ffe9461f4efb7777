"""Rating answers: only the principal who received an answer may rate it (by the answer's trace
id), rating again replaces the score, and an admin exports the tenant's feedback as JSON lines with
the question, answer and sources that were rated."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from sqlalchemy import select

from app.auth.principal import Role
from app.db.models import AuditLog
from app.rag.embeddings import LocalEmbedder
from app.resources import Resources
from app.settings import Settings
from tests.fakes.fake_llm_server import FakeLLMServer
from tests.support.apps import running_app
from tests.support.callers import Caller, MakeCaller
from tests.support.library import Library, ask, new_session

pytestmark = pytest.mark.integration

POLICY = "Refunds are paid within 30 days of the return being received."
QUESTION = "How fast are refunds paid?"


def parse_sse(raw: str) -> list[tuple[str, dict[str, Any]]]:
    events = []
    for block in raw.strip().split("\n\n"):
        lines = [line for line in block.splitlines() if not line.startswith(":")]
        if lines:
            name = next(line[7:] for line in lines if line.startswith("event: "))
            events.append((name, json.loads(next(line[6:] for line in lines if line.startswith("data: ")))))
    return events


async def rate(
    client: httpx.AsyncClient, caller: Caller, trace_id: str, score: Any, **body: Any
) -> httpx.Response:
    return await client.post(
        "/api/v1/feedback", json={"trace_id": trace_id, "score": score, **body}, headers=caller.headers
    )


async def export(client: httpx.AsyncClient, admin: Caller, **params: Any) -> list[dict[str, Any]]:
    response = await client.get("/api/v1/feedback", params=params, headers=admin.headers)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("application/x-ndjson")
    return [json.loads(line) for line in response.text.splitlines()]


def assert_trace_not_found(response: httpx.Response) -> None:
    assert response.status_code == 404, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    assert response.json()["code"] == "trace_not_found"
    assert response.json()["trace_id"] == response.headers["X-Trace-ID"]


async def answered(client: httpx.AsyncClient, caller: Caller, question: str = QUESTION, **body: Any) -> str:
    response = await ask(client, caller, question, **body)
    assert response.status_code == 200, response.text
    trace_id = str(response.json()["trace_id"])
    assert trace_id == response.headers["X-Trace-ID"]
    return trace_id


async def test_rating_your_own_answer_stores_it_and_the_export_shows_what_was_rated(
    client: httpx.AsyncClient, library: Library, editor: Caller, make_caller: MakeCaller, fake: FakeLLMServer
) -> None:
    document_id = await library.add(POLICY, filename="refunds.txt", title="Refund policy")
    fake.configure("openai", text="Within 30 days [1].")
    trace_id = await answered(client, editor, session_id=new_session())

    rated = await rate(client, editor, trace_id, 5, comment="  Exactly what I needed.\n")
    assert rated.status_code == 201, rated.text
    body = rated.json()
    assert (body["trace_id"], body["score"], body["comment"]) == (trace_id, 5, "Exactly what I needed.")

    admin = await make_caller(tenant="acme", role=Role.admin)
    [line] = await export(client, admin)
    assert line["trace_id"] == trace_id and line["score"] == 5
    assert line["comment"] == "Exactly what I needed."
    assert line["question"] == QUESTION
    assert line["answer"] == "Within 30 days [1]."
    assert line["sources"] == [
        {"document_id": document_id, "title": "Refund policy", "page": 1, "cited": True}
    ]
    assert (line["provider"], line["principal_id"]) == ("openai", editor.principal_id)
    assert line["model"]
    for stamp in ("answered_at", "created_at", "updated_at"):
        assert datetime.fromisoformat(line[stamp]).tzinfo is not None


async def test_rating_again_replaces_the_earlier_score(
    client: httpx.AsyncClient, library: Library, editor: Caller, make_caller: MakeCaller
) -> None:
    await library.add(POLICY, filename="refunds.txt")
    trace_id = await answered(client, editor)
    first = await rate(client, editor, trace_id, -1, comment="wrong")
    second = await rate(client, editor, trace_id, 1)
    assert (first.status_code, second.status_code) == (201, 200)
    assert (second.json()["score"], second.json()["comment"]) == (1, None)
    assert second.json()["created_at"] == first.json()["created_at"]

    [line] = await export(client, await make_caller(tenant="acme", role=Role.admin))
    assert (line["score"], line["comment"]) == (1, None)


async def test_nobody_but_the_principal_who_was_answered_can_rate_it_and_nobody_learns_it_exists(
    client: httpx.AsyncClient, library: Library, editor: Caller, make_caller: MakeCaller
) -> None:
    await library.add(POLICY, filename="refunds.txt")
    trace_id = await answered(client, editor)
    colleague = await make_caller(tenant="acme", role=Role.reader)
    tenant_admin = await make_caller(tenant="acme", role=Role.admin)
    stranger = await make_caller(tenant="globex", role=Role.admin)

    refusals = [await rate(client, caller, trace_id, 1) for caller in (colleague, tenant_admin, stranger)]
    unknown = await rate(client, editor, "ab" * 16, 1)
    for response in (*refusals, unknown):
        assert_trace_not_found(response)
    # one answer for all of them: an existing trace elsewhere reads exactly like an unknown one
    assert {r.json()["detail"] for r in (*refusals, unknown)} == {unknown.json()["detail"]}
    assert await export(client, tenant_admin) == []
    assert await export(client, stranger) == []


@pytest.mark.parametrize(
    ("body", "code"),
    [
        ({"score": 0}, "invalid_score"),
        ({"score": 7}, "invalid_score"),
        ({"score": -2}, "invalid_score"),
        ({"score": True}, "invalid_score"),
        ({"score": 1.5}, "invalid_score"),
        ({"score": "5"}, "invalid_score"),
        ({}, "invalid_score"),
        ({"score": 1, "trace_id": "not-a-trace"}, "invalid_trace_id"),
        ({"score": 1, "comment": "bad\u0000byte"}, "invalid_comment"),
        ({"score": 1, "comment": "x" * 2001}, "invalid_comment"),
        ({"score": 1, "extra": "field"}, "invalid_extra"),
    ],
)
async def test_malformed_feedback_is_a_422_problem(
    client: httpx.AsyncClient, editor: Caller, body: dict[str, Any], code: str
) -> None:
    response = await client.post(
        "/api/v1/feedback", json={"trace_id": "ab" * 16, **body}, headers=editor.headers
    )
    assert response.status_code == 422, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    assert response.json()["code"] == code
    assert response.json()["trace_id"] == response.headers["X-Trace-ID"]


async def test_streamed_cached_fixed_and_openai_compatible_answers_can_be_rated(
    client: httpx.AsyncClient, library: Library, editor: Caller, make_caller: MakeCaller, fake: FakeLLMServer
) -> None:
    await library.add(POLICY, filename="refunds.txt")
    fake.configure("openai", text="Within 30 days [1].")
    streamed = await client.post(
        "/api/v1/chat", json={"question": QUESTION, "stream": True}, headers=editor.headers
    )
    done = parse_sse(streamed.text)[-1]
    assert done[0] == "done", streamed.text
    cached = await ask(client, editor, QUESTION)
    assert cached.json()["cached"] is True
    nothing = await ask(client, editor, "Which colour is the moon's umbrella?", mode="text")
    assert nothing.json()["provider"] == "none"
    completion = await client.post(
        "/v1/chat/completions",
        json={"model": "rag", "messages": [{"role": "user", "content": "When are refunds paid?"}]},
        headers={"Authorization": f"Bearer {editor.key}"},
    )
    assert completion.status_code == 200, completion.text

    traces = {
        "stream": str(done[1]["trace_id"]),
        "cache": str(cached.json()["trace_id"]),
        "none": str(nothing.json()["trace_id"]),
        "openai": completion.headers["X-Trace-ID"],
    }
    assert len(set(traces.values())) == 4
    for score, trace_id in enumerate(traces.values(), start=2):
        assert (await rate(client, editor, trace_id, score)).status_code == 201

    lines = {line["trace_id"]: line for line in await export(client, await make_caller(role=Role.admin))}
    assert set(lines) == set(traces.values())
    assert lines[traces["stream"]]["answer"] == "Within 30 days [1]."
    assert lines[traces["stream"]]["sources"][0]["cited"] is True
    assert lines[traces["cache"]]["answer"] == "Within 30 days [1]."  # what the hit replayed
    assert lines[traces["cache"]]["sources"] == lines[traces["stream"]]["sources"]
    assert (lines[traces["none"]]["provider"], lines[traces["none"]]["sources"]) == ("none", [])
    assert lines[traces["openai"]]["question"] == "When are refunds paid?"


async def test_the_export_is_for_admins_only_and_filters_by_time_and_count(
    client: httpx.AsyncClient, library: Library, editor: Caller, make_caller: MakeCaller
) -> None:
    await library.add(POLICY, filename="refunds.txt")
    for question in (QUESTION, "When do refunds arrive?", "Are refunds paid quickly?"):
        assert (await rate(client, editor, await answered(client, editor, question), 4)).status_code == 201

    refused = await client.get("/api/v1/feedback", headers=editor.headers)
    assert refused.status_code == 403 and refused.json()["code"] == "forbidden"
    admin = await make_caller(tenant="acme", role=Role.admin)
    lines = await export(client, admin)
    assert [line["question"] for line in lines] == [
        QUESTION,
        "When do refunds arrive?",
        "Are refunds paid quickly?",
    ]
    assert len(await export(client, admin, limit=2)) == 2
    tomorrow = (datetime.now(UTC) + timedelta(days=1)).isoformat()
    assert await export(client, admin, since=tomorrow) == []
    assert len(await export(client, admin, since=lines[1]["updated_at"])) == 2
    bad_limit = await client.get("/api/v1/feedback", params={"limit": 0}, headers=admin.headers)
    assert bad_limit.status_code == 422 and bad_limit.json()["code"] == "invalid_limit"


async def feedback_audit_rows(resources: Resources, trace_id: str) -> list[dict[str, Any]]:
    async with resources.session_factory() as db:
        rows = await db.execute(
            select(AuditLog.details)
            .where(AuditLog.action == "feedback.submit", AuditLog.target_id == trace_id)
            .order_by(AuditLog.id)
        )
        return [dict(details) for details in rows.scalars()]


async def test_sending_the_same_rating_again_changes_nothing(
    client: httpx.AsyncClient, library: Library, editor: Caller, resources: Resources
) -> None:
    """A repeat of an identical rating (a retry, a double click, a script) is answered like the
    first but writes no audit row and counts no new score; a changed one does."""
    await library.add(POLICY, filename="refunds.txt")
    trace_id = await answered(client, editor)
    responses = [await rate(client, editor, trace_id, 5, comment="good") for _ in range(4)]
    assert [r.status_code for r in responses] == [201, 200, 200, 200]
    assert all(r.json() == responses[0].json() for r in responses)
    changed = await rate(client, editor, trace_id, 4, comment="good")
    assert (changed.status_code, changed.json()["score"]) == (200, 4)

    assert await feedback_audit_rows(resources, trace_id) == [
        {"score": 5, "replaced": False},
        {"score": 4, "replaced": True},
    ]
    text = (await client.get("/metrics")).text
    assert 'answer_feedback_total{score="5"} 1.0' in text
    assert 'answer_feedback_total{score="4"} 1.0' in text


async def test_rating_is_charged_to_the_chat_budgets(
    settings: Settings, embedder: LocalEmbedder, fake: FakeLLMServer
) -> None:
    async with running_app(
        settings, embedder=embedder, rate_limit_per_principal="3/minute", rate_limit_per_ip="1000/minute"
    ) as (app, client, make_caller):
        editor = await make_caller(tenant="acme")
        await Library(client, app.state.resources, editor).add(POLICY, filename="refunds.txt")
        trace_id = await answered(client, editor)
        codes = [(await rate(client, editor, trace_id, score)).status_code for score in (5, 4, 3)]
        assert codes == [201, 200, 429]
        refused = await rate(client, editor, trace_id, 2)
        assert refused.json()["code"] == "rate_limited"


async def test_feedback_is_counted_in_metrics(
    client: httpx.AsyncClient, library: Library, editor: Caller
) -> None:
    await library.add(POLICY, filename="refunds.txt")
    trace_id = await answered(client, editor)
    await rate(client, editor, trace_id, 3)
    await rate(client, editor, trace_id, -1)
    text = (await client.get("/metrics")).text
    assert 'answer_feedback_total{score="3"} 1.0' in text
    assert 'answer_feedback_total{score="-1"} 1.0' in text
    assert 'answer_feedback_total{score="5"} 0.0' in text
    assert 'answer_records_total{outcome="stored"} 1.0' in text


async def test_an_answer_can_be_rated_for_the_feedback_window_only(
    client: httpx.AsyncClient, library: Library, editor: Caller, resources: Resources
) -> None:
    await library.add(POLICY, filename="refunds.txt")
    trace_id = await answered(client, editor)
    window = resources.settings.feedback_window_seconds
    assert window == 7 * 24 * 3600
    key = f"{resources.settings.redis_key_prefix}answered:{editor.tenant_id}:{trace_id}"
    assert window - 5 <= await resources.redis.ttl(key) <= window
    await resources.redis.delete(key)  # what expiry does at the end of the window
    assert_trace_not_found(await rate(client, editor, trace_id, 1))
