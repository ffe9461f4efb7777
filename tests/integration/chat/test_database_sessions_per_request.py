"""How many database connections one chat request checks out: each is a pool round trip, and
under load each is a wait for a free connection. One unit of work prepares the turn (memory window,
corpus version, both searches), a cache hit is recorded in it too, and the connection goes back to
the pool before the model is asked."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import httpx
import pytest
from sqlalchemy import event
from sqlalchemy.orm import Session

from app.auth.principal import Role
from app.resources import Resources
from tests.fakes.fake_llm_server import FakeLLMServer
from tests.support.callers import Caller, caller_factory
from tests.support.clock import SteppedClock
from tests.support.library import Library, ask

pytestmark = [pytest.mark.integration, pytest.mark.pgvector]


class Checkouts:
    def __init__(self) -> None:
        self.connections = 0
        self.sessions: set[int] = set()


@contextmanager
def counting(resources: Resources) -> Iterator[Checkouts]:
    counts = Checkouts()
    pool = resources.engine.sync_engine.pool

    def on_checkout(*_: Any) -> None:
        counts.connections += 1

    def on_begin(session: Session, *_: Any) -> None:
        counts.sessions.add(id(session))

    event.listen(pool, "checkout", on_checkout)
    event.listen(Session, "after_begin", on_begin)
    try:
        yield counts
    finally:
        event.remove(pool, "checkout", on_checkout)
        event.remove(Session, "after_begin", on_begin)


async def test_a_full_answer_uses_three_connections_and_a_cache_hit_two(
    client: httpx.AsyncClient, library: Library, editor: Caller, resources: Resources, fake: FakeLLMServer
) -> None:
    await library.add("The quarterly review happens in the Blue Room.", filename="review.txt")
    fake.configure("openai", text="In the Blue Room [1].")
    resources.authenticator.clock = SteppedClock(base=lambda: 0.0)  # verified keys stay trusted
    make = caller_factory(resources.session_factory)
    first, second = await make(tenant="acme", role=Role.reader), await make(tenant="acme", role=Role.reader)

    with counting(resources) as full:
        response = await ask(client, first, "Where is the quarterly review?", session_id=str(uuid.uuid4()))
    assert response.status_code == 200 and response.json()["cached"] is False, response.text
    # the key's lookup; the tenant's token-budget overrides (read at most every 5 s per worker);
    # preparation (window, corpus version, vector and text search); the turn
    assert (full.connections, len(full.sessions)) == (4, 4)

    with counting(resources) as hit:
        response = await ask(client, second, "Where is the quarterly review?", session_id=str(uuid.uuid4()))
    assert response.status_code == 200 and response.json()["cached"] is True, response.text
    # the key's lookup; preparation, which answers from the cache and records the turn
    assert (hit.connections, len(hit.sessions)) == (2, 2)

    with counting(resources) as trusted:
        response = await ask(client, second, "Where is the quarterly review?", session_id=str(uuid.uuid4()))
    assert response.status_code == 200 and response.json()["cached"] is True, response.text
    # a key verified less than a second ago is not looked up again
    assert (trusted.connections, len(trusted.sessions)) == (1, 1)
