from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from fastapi import FastAPI
from redis.asyncio import Redis
from sqlalchemy import update

from app.auth.principal import Principal, Role
from app.db.models import Conversation
from app.embedded.redis import EmbeddedRedis
from app.memory.retention import expire_conversations
from app.memory.service import SessionNotFoundError, TurnRecord
from app.rag.prompt import Turn
from app.settings import Settings
from tests.support.callers import Caller, MakeCaller
from tests.support.memory import MemoryCalls, memory_calls

pytestmark = pytest.mark.integration


def principal_of(caller: Caller) -> Principal:
    return Principal(id=caller.principal_id, tenant_id=caller.tenant_id, role=caller.role, kind="api_key")


@pytest.fixture
async def own_redis(tmp_path: Path) -> AsyncIterator[Redis]:
    """A Redis of this test's own, so FLUSHALL hits nobody else."""
    server = EmbeddedRedis(tmp_path, "memory-redis")
    client = Redis.from_url(server.start())
    yield client
    await client.aclose()
    server.stop()


async def record(memory: MemoryCalls, who: Principal, session_id: str, n: int, status: str = "ok") -> None:
    await memory.record_turn(
        who,
        session_id,
        TurnRecord(
            question=f"q{n}",
            answer=f"a{n}",
            sources=[],
            status=status,
            provider="fake",
            model="m",
            trace_id="t",
        ),
    )


async def test_memory_survives_redis_flushall(
    app: FastAPI, own_redis: Redis, make_caller: MakeCaller
) -> None:
    resources = app.state.resources
    memory = memory_calls(own_redis, resources.session_factory, resources.settings)
    who = principal_of(await make_caller())
    session_id = str(uuid.uuid4())
    for n in range(3):
        await record(memory, who, session_id, n)
    assert await memory.window(who, session_id) == [Turn("q0", "a0"), Turn("q1", "a1"), Turn("q2", "a2")]
    await own_redis.flushall()
    assert await memory.window(who, session_id) == [Turn("q0", "a0"), Turn("q1", "a1"), Turn("q2", "a2")]
    await record(memory, who, session_id, 3)
    assert (await memory.window(who, session_id))[-1] == Turn("q3", "a3")


async def test_window_keeps_the_last_max_turns_and_skips_failed_answers(
    app: FastAPI, settings: Settings, make_caller: MakeCaller
) -> None:
    resources = app.state.resources
    memory = memory_calls(
        resources.redis, resources.session_factory, settings.model_copy(update={"memory_max_turns": 3})
    )
    who = principal_of(await make_caller())
    session_id = str(uuid.uuid4())
    await memory.window(who, session_id)  # builds an (empty) window first
    for n in range(5):
        await record(memory, who, session_id, n)
    await record(memory, who, session_id, 99, status="failed")
    assert await memory.window(who, session_id) == [Turn("q2", "a2"), Turn("q3", "a3"), Turn("q4", "a4")]
    stored = (await memory.messages(who, session_id)).messages
    assert len(stored) == 12
    assert stored[-1].status == "failed"


async def test_sessions_belong_to_their_creator(app: FastAPI, make_caller: MakeCaller) -> None:
    resources = app.state.resources
    memory = memory_calls(resources.redis, resources.session_factory, resources.settings)
    owner = principal_of(await make_caller(tenant="acme", role=Role.reader))
    colleague = principal_of(await make_caller(tenant="acme", role=Role.editor))
    admin = principal_of(await make_caller(tenant="acme", role=Role.admin))
    foreign_admin = principal_of(await make_caller(tenant="globex", role=Role.admin))
    session_id = str(uuid.uuid4())
    await record(memory, owner, session_id, 1)
    with pytest.raises(SessionNotFoundError):
        await memory.window(colleague, session_id)
    with pytest.raises(SessionNotFoundError):
        await record(memory, colleague, session_id, 2)
    with pytest.raises(SessionNotFoundError):
        await memory.messages(foreign_admin, session_id)
    assert (
        len((await memory.messages(admin, session_id)).messages) == 2
    )  # admins read their tenant's sessions


async def test_reset_empties_the_session_and_the_id_can_start_again(
    app: FastAPI, make_caller: MakeCaller
) -> None:
    resources = app.state.resources
    memory = memory_calls(resources.redis, resources.session_factory, resources.settings)
    who = principal_of(await make_caller())
    session_id = str(uuid.uuid4())
    await record(memory, who, session_id, 1)
    await memory.delete(who, session_id)
    assert await memory.window(who, session_id) == []
    with pytest.raises(SessionNotFoundError):
        await memory.messages(who, session_id)
    await record(memory, who, session_id, 2)
    assert await memory.window(who, session_id) == [Turn("q2", "a2")]


async def test_retention_soft_deletes_idle_sessions(app: FastAPI, make_caller: MakeCaller) -> None:
    resources = app.state.resources
    memory = memory_calls(resources.redis, resources.session_factory, resources.settings)
    who = principal_of(await make_caller())
    idle, active = "idle-session", str(uuid.uuid4())
    await record(memory, who, idle, 1)
    await record(memory, who, active, 1)
    async with resources.session_factory() as db, db.begin():
        await db.execute(
            update(Conversation)
            .where(Conversation.client_id == idle)
            .values(last_active_at=datetime.now(UTC) - timedelta(days=31))
        )
    assert await expire_conversations(resources.session_factory, retention_days=30) == 1
    with pytest.raises(SessionNotFoundError):
        await memory.messages(who, idle)
    assert len((await memory.messages(who, active)).messages) == 2


async def test_the_same_client_id_is_a_separate_conversation_per_principal(
    app: FastAPI, make_caller: MakeCaller
) -> None:
    resources = app.state.resources
    memory = memory_calls(resources.redis, resources.session_factory, resources.settings)
    alice = principal_of(await make_caller(tenant="acme", role=Role.reader))
    bob = principal_of(await make_caller(tenant="acme", role=Role.reader))
    carol = principal_of(await make_caller(tenant="globex", role=Role.reader))
    for who, n in ((alice, 1), (bob, 2), (carol, 3)):
        await memory.window(who, "test")  # builds the Redis windows first
        await record(memory, who, "test", n)
    assert await memory.window(alice, "test") == [Turn("q1", "a1")]
    assert await memory.window(bob, "test") == [Turn("q2", "a2")]
    assert await memory.window(carol, "test") == [Turn("q3", "a3")]
    histories = [await memory.messages(who, "test") for who in (alice, bob, carol)]
    assert len({h.conversation_id for h in histories}) == 3
    assert {h.session_id for h in histories} == {"test"}
    # the Redis windows are keyed by the internal conversation id, never by the bare client id
    keys = {key.decode() for key in await resources.redis.keys(resources.settings.redis_key_prefix + "*")}
    assert not any(key.endswith(":test") or ":test:" in key for key in keys)
    assert all(any(str(h.conversation_id) in key for key in keys) for h in histories)

    await memory.delete(bob, "test")
    assert await memory.window(bob, "test") == []
    assert await memory.window(alice, "test") == [Turn("q1", "a1")]


async def test_a_conversation_from_before_client_ids_answers_to_its_uuid(
    app: FastAPI, make_caller: MakeCaller
) -> None:
    """Migration 0004 gives existing rows ``client_id = id::text``."""
    resources = app.state.resources
    memory = memory_calls(resources.redis, resources.session_factory, resources.settings)
    who = principal_of(await make_caller())
    legacy = uuid.uuid4()
    async with resources.session_factory() as db, db.begin():
        db.add(Conversation(id=legacy, tenant_id=who.tenant_id, principal_id=who.id, client_id=str(legacy)))
    await record(memory, who, str(legacy), 1)
    history = await memory.messages(who, str(legacy))
    assert history.conversation_id == legacy
    assert [m.content for m in history.messages] == ["q1", "a1"]


async def test_an_admin_reaches_an_opaque_session_by_its_internal_id_only(
    app: FastAPI, make_caller: MakeCaller
) -> None:
    resources = app.state.resources
    memory = memory_calls(resources.redis, resources.session_factory, resources.settings)
    owner = principal_of(await make_caller(tenant="acme", role=Role.reader))
    admin = principal_of(await make_caller(tenant="acme", role=Role.admin))
    await record(memory, owner, "ticket-7", 1)
    internal = (await memory.messages(owner, "ticket-7")).conversation_id
    with pytest.raises(SessionNotFoundError):
        await memory.messages(admin, "ticket-7")  # the admin's own "ticket-7" does not exist
    assert (await memory.messages(admin, str(internal))).session_id == "ticket-7"
    with pytest.raises(SessionNotFoundError):
        await memory.window(admin, str(internal))  # reading, not continuing
    # the owner may use the internal id as well; it names the same conversation
    await record(memory, owner, str(internal), 2)
    assert await memory.window(owner, "ticket-7") == [Turn("q1", "a1"), Turn("q2", "a2")]
    await memory.delete(admin, str(internal))
    with pytest.raises(SessionNotFoundError):
        await memory.messages(owner, "ticket-7")
