"""A conversation reset forgets its answers everywhere the service keeps them: the history (soft
deleted, purged later by the maintenance job) and the answer ledger's records in Redis (deleted at
once), so the reset conversation's question and answer are not kept for the feedback window."""

from __future__ import annotations

import httpx
import pytest

from app.resources import Resources
from tests.fakes.fake_llm_server import FakeLLMServer
from tests.integration.feedback.test_answer_feedback import (
    POLICY,
    QUESTION,
    answered,
    assert_trace_not_found,
    rate,
)
from tests.support.callers import Caller
from tests.support.library import Library, new_session

pytestmark = pytest.mark.integration


async def ledger_keys(resources: Resources, trace_id: str) -> list[bytes]:
    return [key async for key in resources.redis.scan_iter(match=f"*answered:*:{trace_id}")]


async def test_a_reset_deletes_the_ledger_records_of_that_conversation_only(
    client: httpx.AsyncClient, library: Library, editor: Caller, fake: FakeLLMServer, resources: Resources
) -> None:
    await library.add(POLICY, filename="refunds.txt", title="Refund policy")
    fake.configure("openai", text="Within 30 days [1].")
    reset, kept = new_session(), new_session()
    reset_traces = [
        await answered(client, editor, QUESTION, session_id=reset),
        await answered(client, editor, "When is a refund paid?", session_id=reset),
    ]
    kept_trace = await answered(client, editor, "Are refunds paid within a month?", session_id=kept)
    for trace_id in [*reset_traces, kept_trace]:
        assert await ledger_keys(resources, trace_id), "recorded for feedback"

    response = await client.delete(f"/api/v1/sessions/{reset}", headers=editor.headers)
    assert response.status_code == 204, response.text

    for trace_id in reset_traces:
        assert await ledger_keys(resources, trace_id) == [], "the reset conversation's answer is kept"
        assert_trace_not_found(await rate(client, editor, trace_id, 5))
    assert await ledger_keys(resources, kept_trace)
    assert (await rate(client, editor, kept_trace, 4)).status_code == 201
