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
from app.memory.service import ConversationMemory, SessionNotFoundError, expire_conversations
from app.rag.prompt import Turn
from app.settings import Settings
from tests.support.callers import Caller, MakeCaller

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


async def record(
    memory: ConversationMemory, who: Principal, session_id: uuid.UUID, n: int, status: str = "ok"
) -> None:
    await memory.record_turn(
        who,
        session_id,
        question=f"q{n}",
        answer=f"a{n}",
        sources=[],
        status=status,
        provider="fake",
        model="m",
        trace_id="t",
    )


async def test_memory_survives_redis_flushall(
    app: FastAPI, own_redis: Redis, make_caller: MakeCaller
) -> None:
    resources = app.state.resources
    memory = ConversationMemory(own_redis, resources.session_factory, resources.settings)
    who = principal_of(await make_caller())
    session_id = uuid.uuid4()
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
    memory = ConversationMemory(
        resources.redis, resources.session_factory, settings.model_copy(update={"memory_max_turns": 3})
    )
    who = principal_of(await make_caller())
    session_id = uuid.uuid4()
    await memory.window(who, session_id)  # builds an (empty) window first
    for n in range(5):
        await record(memory, who, session_id, n)
    await record(memory, who, session_id, 99, status="failed")
    assert await memory.window(who, session_id) == [Turn("q2", "a2"), Turn("q3", "a3"), Turn("q4", "a4")]
    stored = await memory.messages(who, session_id)
    assert len(stored) == 12
    assert stored[-1].status == "failed"


async def test_sessions_belong_to_their_creator(app: FastAPI, make_caller: MakeCaller) -> None:
    resources = app.state.resources
    memory = ConversationMemory(resources.redis, resources.session_factory, resources.settings)
    owner = principal_of(await make_caller(tenant="acme", role=Role.reader))
    colleague = principal_of(await make_caller(tenant="acme", role=Role.editor))
    admin = principal_of(await make_caller(tenant="acme", role=Role.admin))
    foreign_admin = principal_of(await make_caller(tenant="globex", role=Role.admin))
    session_id = uuid.uuid4()
    await record(memory, owner, session_id, 1)
    with pytest.raises(SessionNotFoundError):
        await memory.window(colleague, session_id)
    with pytest.raises(SessionNotFoundError):
        await record(memory, colleague, session_id, 2)
    with pytest.raises(SessionNotFoundError):
        await memory.messages(foreign_admin, session_id)
    assert len(await memory.messages(admin, session_id)) == 2  # admins read their tenant's sessions


async def test_reset_empties_the_session_and_the_id_can_start_again(
    app: FastAPI, make_caller: MakeCaller
) -> None:
    resources = app.state.resources
    memory = ConversationMemory(resources.redis, resources.session_factory, resources.settings)
    who = principal_of(await make_caller())
    session_id = uuid.uuid4()
    await record(memory, who, session_id, 1)
    await memory.delete(who, session_id)
    assert await memory.window(who, session_id) == []
    with pytest.raises(SessionNotFoundError):
        await memory.messages(who, session_id)
    await record(memory, who, session_id, 2)
    assert await memory.window(who, session_id) == [Turn("q2", "a2")]


async def test_retention_soft_deletes_idle_sessions(app: FastAPI, make_caller: MakeCaller) -> None:
    resources = app.state.resources
    memory = ConversationMemory(resources.redis, resources.session_factory, resources.settings)
    who = principal_of(await make_caller())
    idle, active = uuid.uuid4(), uuid.uuid4()
    await record(memory, who, idle, 1)
    await record(memory, who, active, 1)
    async with resources.session_factory() as db, db.begin():
        await db.execute(
            update(Conversation)
            .where(Conversation.id == idle)
            .values(last_active_at=datetime.now(UTC) - timedelta(days=31))
        )
    assert await expire_conversations(resources.session_factory, retention_days=30) == 1
    with pytest.raises(SessionNotFoundError):
        await memory.messages(who, idle)
    assert len(await memory.messages(who, active)) == 2
