from __future__ import annotations

import uuid

import pytest
from fastapi import FastAPI
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.cache.answers import (
    AnswerCache,
    CachedAnswer,
    CacheHit,
    CacheKey,
    CacheLookup,
    CacheProbe,
    normalise_question,
)
from app.cache.corpus import STATE_TTL_MS, CorpusChanges, CorpusKeys, CorpusState
from app.cache.repository import corpus_state
from app.db.models import Document
from app.db.redis import KeySpace
from app.settings import Settings
from tests.support.callers import MakeCaller
from tests.support.waiting import wait_for_async

pytestmark = pytest.mark.integration

TENANT = uuid.UUID(int=7)


class Worker:
    """One worker's answer cache, looked up the way the chat pipeline does: the corpus state from
    the cache Redis, or from PostgreSQL (counted in ``state_reads``) when Redis does not know it."""

    def __init__(self, app: FastAPI, settings: Settings) -> None:
        self._sessions = app.state.resources.session_factory
        self.cache = AnswerCache(
            app.state.resources.cache_redis,
            KeySpace(settings.redis_key_prefix),
            ttl_s=settings.cache_ttl_s,
            max_entries=settings.cache_max_entries,
        )
        self.state_reads = 0

    async def lookup(self, probe: CacheProbe) -> CacheLookup:
        async def read_state() -> CorpusState:
            self.state_reads += 1
            async with self._sessions() as db:
                return await corpus_state(db, probe.tenant_id)

        return await self.cache.lookup(probe, read_state)

    async def key_for(
        self, tenant: uuid.UUID, question: str, parameters: dict[str, object], context: str = ""
    ) -> CacheKey:
        probe = self.cache.probe(tenant, question, parameters, context)
        assert probe is not None
        return (await self.lookup(probe)).key

    async def get(self, key: CacheKey) -> CacheHit | None:
        """The answer to ``key``'s question under the tenant's corpus version now."""
        return (await self.lookup(CacheProbe(key.tenant_id, key.digest))).hit

    async def put(self, key: CacheKey, answer: CachedAnswer) -> None:
        await self.cache.put(key, answer)


def answer(text: str) -> CachedAnswer:
    return CachedAnswer(answer=text, sources=(), provider="fake", model="m", usage=None)


def make_cache(app: FastAPI, settings: Settings | None = None) -> Worker:
    return Worker(app, settings or app.state.resources.settings)


def test_questions_are_normalised() -> None:
    assert normalise_question("  What is   HNSW?? ") == normalise_question("what is hnsw")


async def test_a_stored_answer_is_found_by_another_worker(app: FastAPI) -> None:
    worker_a, worker_b = make_cache(app), make_cache(app)
    key = await worker_a.key_for(TENANT, "What is HNSW?", {"top_k": 5})
    assert key is not None
    assert await worker_a.get(key) is None
    await worker_a.put(key, answer("a graph index"))
    assert await worker_b.get(key) == (answer("a graph index"), "redis")
    assert await worker_b.get(key) == (answer("a graph index"), "l1")  # Redis said: still current
    assert await worker_b.key_for(TENANT, "what is hnsw", {"top_k": 5}) == key


async def test_parameters_and_context_separate_entries(app: FastAPI) -> None:
    cache = make_cache(app)
    base = await cache.key_for(TENANT, "q", {"top_k": 5})
    assert base != await cache.key_for(TENANT, "q", {"top_k": 6})
    assert base != await cache.key_for(TENANT, "q", {"top_k": 5}, context="earlier turns")
    assert base != await cache.key_for(uuid.UUID(int=8), "q", {"top_k": 5})


async def test_any_document_change_makes_every_worker_miss(app: FastAPI, make_caller: MakeCaller) -> None:
    tenant = (await make_caller(tenant="acme")).tenant_id
    worker_a, worker_b = make_cache(app), make_cache(app)
    sessions = app.state.resources.session_factory
    seen = set()
    key = await worker_a.key_for(tenant, "q", {})
    assert key is not None
    for change in ("insert", "retitle", "soft-delete"):
        await worker_a.put(key, answer("old"))
        assert await worker_a.get(key) is not None  # now also in worker A's L1
        seen.add(key)
        async with sessions() as db, db.begin():
            if change == "insert":
                document = Document(tenant_id=tenant, title="t")
                db.add(document)
            else:
                document = (await db.execute(select(Document))).scalars().one()
                if change == "retitle":
                    document.title = "new title"
                else:
                    document.deleted_at = func.now()
        for worker in (worker_a, worker_b):
            fresh = await worker.key_for(tenant, "q", {})
            assert fresh is not None and fresh not in seen, change
            assert await worker.get(fresh) is None
            assert await worker.get(key) is None  # the old answer is not served under any key
        key = fresh


async def test_the_redis_layer_is_bounded_and_evicts_least_recently_used(
    app: FastAPI, settings: Settings
) -> None:
    bounded = settings.model_copy(update={"cache_max_entries": 3})
    cache = make_cache(app, bounded)
    keys = [await cache.key_for(TENANT, f"question {n}", {}) for n in range(4)]
    for n, key in enumerate(keys[:3]):
        assert key is not None
        await cache.put(key, answer(str(n)))
    fresh = make_cache(app, bounded)  # empty L1: only Redis answers
    assert keys[0] is not None
    assert await fresh.get(keys[0]) is not None  # touch: keys[1] is now least recently used
    assert keys[3] is not None
    await cache.put(keys[3], answer("3"))
    other = make_cache(app, bounded)
    assert keys[1] is not None and keys[2] is not None
    assert await other.get(keys[1]) is None
    assert await other.get(keys[0]) is not None
    assert await other.get(keys[2]) is not None
    assert await other.get(keys[3]) is not None


# --- the corpus state in Redis (app.cache.corpus) ------------------------------------------------


def out_of_band(app: FastAPI) -> async_sessionmaker[AsyncSession]:
    """Sessions that commit without telling Redis: a document command run without REDIS_URL, or
    a writer that died between its COMMIT and its publish."""
    return async_sessionmaker(app.state.resources.engine, expire_on_commit=False)


async def add_document(
    sessions: async_sessionmaker[AsyncSession], tenant: uuid.UUID, **fields: object
) -> None:
    async with sessions() as db, db.begin():
        db.add(Document(tenant_id=tenant, title="t", **fields))


def corpus_keys(app: FastAPI) -> CorpusKeys:
    return CorpusKeys(KeySpace(app.state.resources.settings.redis_key_prefix))


async def test_the_corpus_version_is_read_from_postgres_once_then_from_redis(
    app: FastAPI, make_caller: MakeCaller
) -> None:
    tenant = (await make_caller(tenant="acme")).tenant_id
    worker = make_cache(app)
    key = await worker.key_for(tenant, "q", {})
    await worker.put(key, answer("a"))
    for _ in range(5):
        assert await make_cache(app).get(key) is not None
        assert await worker.get(key) is not None
    assert worker.state_reads == 1


async def test_a_lost_corpus_key_is_read_again_from_postgres_and_serves_no_stale_answer(
    app: FastAPI, make_caller: MakeCaller
) -> None:
    tenant = (await make_caller(tenant="acme")).tenant_id
    worker, redis = make_cache(app), app.state.resources.cache_redis
    key = await worker.key_for(tenant, "q", {})
    await worker.put(key, answer("before"))
    await redis.delete(corpus_keys(app).state(tenant))  # evicted, flushed, or a restart without it
    assert await worker.get(key) == (answer("before"), "l1")
    assert worker.state_reads == 2

    await add_document(out_of_band(app), tenant)
    await redis.delete(corpus_keys(app).state(tenant))
    assert await worker.get(key) is None
    assert worker.state_reads == 3
    assert int((await worker.key_for(tenant, "q", {})).corpus_version) > int(key.corpus_version)


async def test_while_a_document_commit_is_in_flight_every_reader_reads_postgres(
    app: FastAPI, make_caller: MakeCaller
) -> None:
    tenant = (await make_caller(tenant="acme")).tenant_id
    worker, resources = make_cache(app), app.state.resources
    key = await worker.key_for(tenant, "q", {})
    await worker.put(key, answer("before"))
    changes = CorpusChanges(resources.cache_redis, KeySpace(resources.settings.redis_key_prefix))
    token = await changes.begin()  # what a tracked session does just before its COMMIT
    await add_document(out_of_band(app), tenant)  # committed; the publish has not run yet
    assert await worker.get(key) is None  # not served from the state Redis still holds
    assert await worker.get(key) is None
    assert worker.state_reads == 3  # nothing stored while the commit is in flight
    await changes.end(token)
    fresh = await worker.key_for(tenant, "q", {})
    assert await worker.get(fresh) is None
    assert worker.state_reads == 4


async def test_a_commit_redis_never_heard_of_is_seen_within_the_state_ttl(
    app: FastAPI, make_caller: MakeCaller
) -> None:
    tenant = (await make_caller(tenant="acme")).tenant_id
    worker = make_cache(app)
    key = await worker.key_for(tenant, "q", {})
    await worker.put(key, answer("before"))
    await add_document(out_of_band(app), tenant)

    async def missed() -> bool:
        return await worker.get(key) is None

    await wait_for_async(missed, timeout=STATE_TTL_MS / 1000 + 1, interval=0.05, what="the state to expire")


async def test_a_tracked_commit_or_rollback_leaves_no_commit_in_flight(
    app: FastAPI, make_caller: MakeCaller
) -> None:
    tenant = (await make_caller(tenant="acme")).tenant_id
    resources, keys = app.state.resources, corpus_keys(app)
    epoch = int(await resources.cache_redis.get(keys.epoch) or 0)
    await add_document(resources.session_factory, tenant)
    async with resources.session_factory() as db:
        db.add(Document(tenant_id=tenant, title="never committed"))
        await db.flush()
        await db.rollback()
    assert await resources.cache_redis.zcard(keys.pending) == 0
    assert int(await resources.cache_redis.get(keys.epoch)) == epoch + 1


async def test_the_state_says_whether_the_tenant_has_access_lists(
    app: FastAPI, make_caller: MakeCaller
) -> None:
    tenant = (await make_caller(tenant="acme")).tenant_id
    worker, sessions = make_cache(app), app.state.resources.session_factory
    probe = CacheProbe(tenant, "d" * 64)
    await add_document(sessions, tenant)
    assert (await worker.lookup(probe)).restricted is False
    await add_document(sessions, tenant, access=["g:finance"])
    assert (await worker.lookup(probe)).restricted is True
