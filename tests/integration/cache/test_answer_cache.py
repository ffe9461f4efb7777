from __future__ import annotations

import uuid

import pytest
from fastapi import FastAPI
from sqlalchemy import func, select

from app.cache.answers import AnswerCache, CachedAnswer, CacheHit, CacheKey, normalise_question
from app.cache.repository import corpus_version
from app.db.models import Document
from app.db.redis import KeySpace
from app.settings import Settings
from tests.support.callers import MakeCaller

pytestmark = pytest.mark.integration

TENANT = uuid.UUID(int=7)


class Worker:
    """One worker's answer cache, keyed the way the chat pipeline keys it (corpus version read
    from PostgreSQL on every lookup)."""

    def __init__(self, app: FastAPI, settings: Settings) -> None:
        self._sessions = app.state.resources.session_factory
        self.cache = AnswerCache(
            app.state.resources.cache_redis,
            KeySpace(settings.redis_key_prefix),
            ttl_s=settings.cache_ttl_s,
            max_entries=settings.cache_max_entries,
        )

    async def key_for(
        self, tenant: uuid.UUID, question: str, parameters: dict[str, object], context: str = ""
    ) -> CacheKey | None:
        async with self._sessions() as db:
            version = await corpus_version(db, tenant)
        return self.cache.key_for(tenant, version, question, parameters, context)

    async def get(self, key: CacheKey) -> CacheHit | None:
        return await self.cache.get(key)

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
    same = await worker_b.key_for(TENANT, "what is hnsw", {"top_k": 5})
    assert same == key
    assert await worker_b.get(same) == (answer("a graph index"), "redis")
    assert await worker_b.get(same) == (answer("a graph index"), "l1")


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
