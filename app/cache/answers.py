"""The answer cache.

Keys hold everything that can change an answer: tenant, the normalised question, the tenant's
corpus version, the model parameters and (with memory) a digest of the conversation window.
The corpus version is ``tenants.corpus_version``, bumped by a database trigger in the same
transaction as any document change, and read on every lookup: once a change commits, no worker
builds the old key again, so no stale answer is served (and a Redis flush cannot resurrect one).

Answers live in the cache Redis (``CACHE_REDIS_URL``, or the embedded LRU server). The L2 is
bounded by ``CACHE_MAX_ENTRIES`` with least-recently-used eviction of our own keys only, so even
when both share one server, rate limits, cooldowns and memory are never evicted for answers. If
Redis is down the cache is skipped.
"""

from __future__ import annotations

import hashlib
import json
import re
import unicodedata
import uuid
from dataclasses import dataclass
from typing import Any

import structlog
from cachetools import TTLCache
from redis.asyncio import Redis
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.db.models import Tenant
from app.resources import redis_key
from app.settings import Settings

logger = structlog.get_logger(__name__)

_SPACES = re.compile(r"\s+")
# What ``[\s?!.]+$`` removed, without its quadratic search: once ``_SPACES`` has run, a space is the
# only whitespace left.
_TRAILING_CHARS = " ?!."

# Store, index and trim in one round trip. KEYS: entry, LRU index, use counter;
# ARGV: payload, ttl seconds, max entries. A counter (not a clock) orders uses exactly.
_PUT_SCRIPT = """
redis.call('SET', KEYS[1], ARGV[1], 'EX', ARGV[2])
redis.call('ZADD', KEYS[2], redis.call('INCR', KEYS[3]), KEYS[1])
local excess = redis.call('ZCARD', KEYS[2]) - tonumber(ARGV[3])
if excess > 0 then
  local victims = redis.call('ZRANGE', KEYS[2], 0, excess - 1)
  redis.call('ZREMRANGEBYRANK', KEYS[2], 0, excess - 1)
  for _, victim in ipairs(victims) do redis.call('DEL', victim) end
end
return excess
"""

# Read an entry and mark it used. KEYS: entry, LRU index, use counter.
_GET_SCRIPT = """
local value = redis.call('GET', KEYS[1])
if value then redis.call('ZADD', KEYS[2], redis.call('INCR', KEYS[3]), KEYS[1]) end
return value
"""


def normalise_question(question: str) -> str:
    text = unicodedata.normalize("NFKC", question).casefold()
    return _SPACES.sub(" ", text).strip().rstrip(_TRAILING_CHARS)


@dataclass(frozen=True)
class CacheKey:
    tenant_id: uuid.UUID
    corpus_version: str
    digest: str

    def render(self, settings: Settings) -> str:
        return redis_key(settings, "answer", str(self.tenant_id), self.corpus_version, self.digest)


class AnswerCache:
    def __init__(
        self,
        sessions: async_sessionmaker[AsyncSession],
        cache_redis: Redis,
        settings: Settings,
        l1_size: int = 1024,
    ) -> None:
        self._sessions = sessions
        self._cache = cache_redis
        self._settings = settings
        self._l1: TTLCache[str, dict[str, Any]] = TTLCache(maxsize=l1_size, ttl=max(settings.cache_ttl_s, 1))
        self._put = cache_redis.register_script(_PUT_SCRIPT)
        self._get = cache_redis.register_script(_GET_SCRIPT)

    @property
    def enabled(self) -> bool:
        return self._settings.cache_ttl_s > 0

    def _lru_keys(self) -> list[str]:
        return [redis_key(self._settings, "answer-lru"), redis_key(self._settings, "answer-lru-clock")]

    async def corpus_version(self, tenant_id: uuid.UUID) -> str:
        async with self._sessions() as session:
            version = (
                await session.execute(select(Tenant.corpus_version).where(Tenant.id == tenant_id))
            ).scalar_one_or_none()
        return str(version or 0)

    async def key_for(
        self, tenant_id: uuid.UUID, question: str, parameters: dict[str, Any], context: str = ""
    ) -> CacheKey | None:
        if not self.enabled:
            return None
        version = await self.corpus_version(tenant_id)
        material = json.dumps(
            {"q": normalise_question(question), "p": parameters, "c": context}, sort_keys=True, default=str
        )
        return CacheKey(tenant_id, version, hashlib.sha256(material.encode()).hexdigest())

    async def get(self, key: CacheKey) -> tuple[dict[str, Any], str] | None:
        """The cached payload and the layer that had it ("l1" or "redis")."""
        rendered = key.render(self._settings)
        local = self._l1.get(rendered)
        if local is not None:
            return local, "l1"
        try:
            raw = await self._get(keys=[rendered, *self._lru_keys()])
            if raw is None:
                return None
        except Exception:
            logger.warning("answer_cache_unavailable")
            return None
        payload: dict[str, Any] = json.loads(raw)
        self._l1[rendered] = payload
        return payload, "redis"

    async def put(self, key: CacheKey, payload: dict[str, Any]) -> None:
        rendered = key.render(self._settings)
        self._l1[rendered] = payload
        try:
            await self._put(
                keys=[rendered, *self._lru_keys()],
                args=[json.dumps(payload), self._settings.cache_ttl_s, self._settings.cache_max_entries],
            )
        except Exception:
            logger.warning("answer_cache_unavailable")
