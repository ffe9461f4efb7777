"""What a cache hit costs in round trips: a reader's repeated question in a tenant without access
lists reads nothing from PostgreSQL (the corpus version and the access-list flag come from the
cache Redis, in the script that reads the answer), and a tenant with access lists is still
checked per caller. Counted by real hooks: SQLAlchemy's ``before_cursor_execute`` on the app's
engine, and every command the app's Redis clients send."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import httpx
import pytest
from redis.asyncio import Redis
from sqlalchemy import event

from app.auth.principal import Role
from app.resources import Resources
from tests.fakes.fake_llm_server import FakeLLMServer
from tests.support.callers import Caller
from tests.support.clock import SteppedClock
from tests.support.library import Library, ask

pytestmark = [pytest.mark.integration, pytest.mark.pgvector]


class RoundTrips:
    def __init__(self) -> None:
        self.statements: list[str] = []
        self.connections = 0  # checked out of the pool
        self.redis: Counter[str] = Counter()  # command name → times sent
        self.limits: Counter[str] = Counter()  # the same, on the rate limiter's own connections


@contextmanager
def counting(resources: Resources, monkeypatch: pytest.MonkeyPatch) -> Iterator[RoundTrips]:
    """Statements on the app's engine; commands on its Redis clients (the main one, and the cache's
    when it has its own) and, apart, on the rate limiter's storage (its own connections)."""
    trips = RoundTrips()
    engine = resources.engine.sync_engine

    def on_execute(_conn: Any, _cursor: Any, statement: str, *_: Any) -> None:
        trips.statements.append(statement)

    def on_checkout(*_: Any) -> None:
        trips.connections += 1

    clients: dict[int, Redis] = {
        id(resources.redis): resources.redis,
        id(resources.cache_redis): resources.cache_redis,
    }
    counters = [(client, trips.redis) for client in clients.values()]
    counters.append((resources.limiter.redis, trips.limits))
    for client, counter in counters:
        sent = client.execute_command

        async def counted(
            *args: Any, _sent: Any = sent, _counter: Counter[str] = counter, **options: Any
        ) -> Any:
            _counter[str(args[0]).upper()] += 1
            return await _sent(*args, **options)

        monkeypatch.setattr(client, "execute_command", counted)
    event.listen(engine, "before_cursor_execute", on_execute)
    event.listen(engine.pool, "checkout", on_checkout)
    try:
        yield trips
    finally:
        event.remove(engine, "before_cursor_execute", on_execute)
        event.remove(engine.pool, "checkout", on_checkout)
        for client, _ in counters:
            monkeypatch.delattr(client, "execute_command")


async def warm(client: httpx.AsyncClient, library: Library, fake: FakeLLMServer, reader: Caller) -> None:
    fake.configure("openai", text="In the Blue Room [1].")
    first = await ask(client, reader, "Where is the quarterly review?")
    assert first.status_code == 200 and first.json()["cached"] is False, first.text


async def test_a_cache_hit_in_a_tenant_without_access_lists_reads_no_postgres_and_one_cache_script(
    client: httpx.AsyncClient,
    library: Library,
    make_caller: Any,
    resources: Resources,
    fake: FakeLLMServer,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    await library.add("The quarterly review happens in the Blue Room.", filename="review.txt")
    resources.authenticator.clock = SteppedClock(base=lambda: 0.0)  # verified keys stay trusted
    reader = await make_caller(tenant="acme", role=Role.reader)
    await warm(client, library, fake, reader)
    second = await ask(client, reader, "Where is the quarterly review?")  # the key is now trusted
    assert second.json()["cached"] is True

    with counting(resources, monkeypatch) as hit:
        response = await ask(client, reader, "Where is the quarterly review?")
    assert response.status_code == 200 and response.json()["cached"] is True, response.text
    assert (hit.statements, hit.connections) == ([], 0)
    # the cache lookup (corpus state and answer: one script) and the answer ledger's record
    # (in the main Redis: never in the cache's LRU); token budgets are off by default
    assert hit.redis == Counter({"EVALSHA": 1, "SET": 1}), hit.redis
    # the per-IP, tenant and principal rate limits: one script for the three (the key is trusted)
    assert hit.limits == Counter({"EVALSHA": 1}), hit.limits

    feedback = await client.post(
        "/api/v1/feedback",
        json={"trace_id": response.json()["trace_id"], "score": 1},
        headers=reader.headers,
    )
    assert feedback.status_code in (200, 201, 204), feedback.text  # the ledger had the record


async def test_in_a_tenant_with_access_lists_a_readers_hit_still_checks_the_sources(
    client: httpx.AsyncClient,
    library: Library,
    make_caller: Any,
    resources: Resources,
    fake: FakeLLMServer,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    await library.add("The quarterly review happens in the Blue Room.", filename="review.txt")
    admin = await make_caller(tenant="acme", role=Role.admin)
    await library.add(
        "Payroll closes on the 25th.", filename="payroll.txt", access_groups="finance", caller=admin
    )
    resources.authenticator.clock = SteppedClock(base=lambda: 0.0)
    reader = await make_caller(tenant="acme", role=Role.reader)
    await warm(client, library, fake, reader)
    assert (await ask(client, reader, "Where is the quarterly review?")).json()["cached"] is True

    with counting(resources, monkeypatch) as hit:
        response = await ask(client, reader, "Where is the quarterly review?")
    assert response.json()["cached"] is True, response.text
    assert len(hit.statements) == 1 and "documents" in hit.statements[0], hit.statements


async def test_after_a_committed_upload_or_delete_the_next_question_is_not_answered_from_the_cache(
    client: httpx.AsyncClient, library: Library, make_caller: Any, fake: FakeLLMServer
) -> None:
    review = await library.add("The quarterly review happens in the Blue Room.", filename="review.txt")
    reader = await make_caller(tenant="acme", role=Role.reader)
    await warm(client, library, fake, reader)
    assert (await ask(client, reader, "Where is the quarterly review?")).json()["cached"] is True

    await library.add("The quarterly review moved to the Red Room.", filename="moved.txt")
    assert (await ask(client, reader, "Where is the quarterly review?")).json()["cached"] is False
    assert (await ask(client, reader, "Where is the quarterly review?")).json()["cached"] is True
    await library.delete(review)
    assert (await ask(client, reader, "Where is the quarterly review?")).json()["cached"] is False
