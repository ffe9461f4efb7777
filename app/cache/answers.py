"""The answer cache.

Keys hold everything that can change an answer: tenant, the normalised question, the tenant's
corpus version, the model parameters and (with memory) a digest of the conversation window.
The corpus version is ``tenants.corpus_version`` (``CorpusVersionRepository``), bumped by a
database trigger in the same transaction as any document change, and read on every lookup: once a
change commits, no worker builds the old key again, so no stale answer is served (and a Redis
flush cannot resurrect one).

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
from dataclasses import asdict, dataclass
from typing import Any, Literal, NamedTuple

import structlog
from cachetools import TTLCache
from redis.asyncio import Redis

from app.db.redis import KeySpace
from app.rag.sources import Source

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


@dataclass(frozen=True)
class CachedAnswer:
    """What a cache hit replays: the answer exactly as first sent, with its cited sources."""

    answer: str
    sources: tuple[Source, ...]
    provider: str
    model: str
    usage: dict[str, int] | None

    def to_json(self) -> str:
        return json.dumps({**asdict(self), "sources": [asdict(s) for s in self.sources]})

    @classmethod
    def from_json(cls, raw: str | bytes) -> CachedAnswer:
        data = json.loads(raw)
        return cls(
            answer=data["answer"],
            sources=tuple(Source(**s) for s in data["sources"]),
            provider=data["provider"],
            model=data["model"],
            usage=data.get("usage"),
        )


class CacheHit(NamedTuple):
    answer: CachedAnswer
    layer: Literal["l1", "redis"]  # this process's cache, or the shared one


class AnswerCache:
    """L1 (this process, TTL-bounded) over L2 (Redis, LRU-bounded); both keyed by ``CacheKey``.
    ``ttl_s`` of 0 disables the cache: ``key_for`` returns None."""

    def __init__(
        self, redis: Redis, keys: KeySpace, *, ttl_s: int, max_entries: int, l1_size: int = 1024
    ) -> None:
        self._cache = redis
        self._keys = keys
        self._ttl_s = ttl_s
        self._max_entries = max_entries
        self._l1: TTLCache[str, CachedAnswer] = TTLCache(maxsize=l1_size, ttl=max(ttl_s, 1))
        self._put = redis.register_script(_PUT_SCRIPT)
        self._get = redis.register_script(_GET_SCRIPT)

    @property
    def enabled(self) -> bool:
        return self._ttl_s > 0

    def _render(self, key: CacheKey) -> str:
        return self._keys.key("answer", str(key.tenant_id), key.corpus_version, key.digest)

    def _lru_keys(self) -> list[str]:
        return [self._keys.key("answer-lru"), self._keys.key("answer-lru-clock")]

    def key_for(
        self,
        tenant_id: uuid.UUID,
        corpus_version: str,
        question: str,
        parameters: dict[str, Any],
        context: str = "",
    ) -> CacheKey | None:
        if not self.enabled:
            return None
        material = json.dumps(
            {"q": normalise_question(question), "p": parameters, "c": context}, sort_keys=True, default=str
        )
        return CacheKey(tenant_id, corpus_version, hashlib.sha256(material.encode()).hexdigest())

    async def get(self, key: CacheKey) -> CacheHit | None:
        """The cached answer and the layer that had it ("l1" or "redis")."""
        rendered = self._render(key)
        local = self._l1.get(rendered)
        if local is not None:
            return CacheHit(local, "l1")
        try:
            raw = await self._get(keys=[rendered, *self._lru_keys()])
            if raw is None:
                return None
        except Exception:
            logger.warning("answer_cache_unavailable")
            return None
        answer = CachedAnswer.from_json(raw)
        self._l1[rendered] = answer
        return CacheHit(answer, "redis")

    async def put(self, key: CacheKey, answer: CachedAnswer) -> None:
        rendered = self._render(key)
        self._l1[rendered] = answer
        try:
            await self._put(
                keys=[rendered, *self._lru_keys()], args=[answer.to_json(), self._ttl_s, self._max_entries]
            )
        except Exception:
            logger.warning("answer_cache_unavailable")
