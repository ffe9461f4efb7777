"""The answer cache.

Keys hold everything that can change an answer: tenant, the normalised question, the model
parameters and (with memory) a digest of the conversation window. An entry,
``answer:<tenant>:<digest>``, also holds the tenant's corpus version it was answered under
(``tenants.corpus_version``, bumped by a database trigger in the same transaction as any
document change), and is a hit only while that is still the tenant's version: once a change
commits, no worker serves the old answer.

One script reads the tenant's corpus state (``app.cache.corpus``: the version and whether any
document has an access list) and the entry together: a hit is one Redis round trip and no
PostgreSQL. When that state is unknown (expired, lost, or a document commit in flight) the
caller's ``read_state`` reads it from PostgreSQL and a second script stores it and reads the
entry. So a Redis flush or restart can neither resurrect an old answer nor serve one.

Answers live in the cache Redis (``CACHE_REDIS_URL``, or the embedded LRU server). The L2 is
bounded by ``CACHE_MAX_ENTRIES`` with least-recently-used eviction of our own keys only, so even
when both share one server, rate limits, cooldowns and memory are never evicted for answers. If
Redis is down, the corpus version is read from PostgreSQL and only this process's L1 serves.
"""

from __future__ import annotations

import hashlib
import json
import re
import unicodedata
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Literal, NamedTuple

import structlog
from cachetools import TTLCache
from redis.asyncio import Redis
from redis.exceptions import RedisError

from app.cache.corpus import STATE_TTL_MS, CorpusKeys, CorpusState
from app.db.redis import KeySpace
from app.rag.sources import Source

logger = structlog.get_logger(__name__)

_SPACES = re.compile(r"\s+")
# What ``[\s?!.]+$`` removed, without its quadratic search: once ``_SPACES`` has run, a space is the
# only whitespace left.
_TRAILING_CHARS = " ?!."

# Store, index and trim in one round trip, unless a newer version's answer is there. KEYS: entry,
# LRU index, use counter; ARGV: version, payload, ttl seconds, max entries. A counter (not a
# clock) orders uses exactly.
_PUT_SCRIPT = """
local current = redis.call('GET', KEYS[1])
if current then
  local sep = string.find(current, '\\n', 1, true)
  if sep and tonumber(string.sub(current, 1, sep - 1)) > tonumber(ARGV[1]) then return -1 end
end
redis.call('SET', KEYS[1], ARGV[1] .. '\\n' .. ARGV[2], 'EX', ARGV[3])
redis.call('ZADD', KEYS[2], redis.call('INCR', KEYS[3]), KEYS[1])
local excess = redis.call('ZCARD', KEYS[2]) - tonumber(ARGV[4])
if excess > 0 then
  local victims = redis.call('ZRANGE', KEYS[2], 0, excess - 1)
  redis.call('ZREMRANGEBYRANK', KEYS[2], 0, excess - 1)
  for _, victim in ipairs(victims) do redis.call('DEL', victim) end
end
return excess
"""

# KEYS of both lookups: corpus state, pending commits, epoch (``app.cache.corpus``), entry, LRU
# index, use counter. ARGV[1]: the version this process's L1 holds for the entry ('' if none).
# Reply {version, restricted, 0 | 1 [, payload]}: 1 is a hit, without the payload when the L1
# already has it; {'?', epoch} when the state must be read from PostgreSQL.
_ANSWER_OF = """
local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end
local function committing()
  return redis.call('ZCOUNT', KEYS[2], now_ms(), '+inf') > 0
end
local function answer(v, r)
  local entry = redis.call('GET', KEYS[4])
  if entry then
    local sep = string.find(entry, '\\n', 1, true)
    if sep and string.sub(entry, 1, sep - 1) == v then
      redis.call('ZADD', KEYS[5], redis.call('INCR', KEYS[6]), KEYS[4])
      if ARGV[1] == v then return {v, r, 1} end
      return {v, r, 1, string.sub(entry, sep + 1)}
    end
  end
  return {v, r, 0}
end
local epoch = redis.call('GET', KEYS[3]) or '0'
"""

_LOOKUP_SCRIPT = (
    _ANSWER_OF
    + """
if committing() then return {'?', epoch} end
local state = redis.call('GET', KEYS[1])
if not state then return {'?', epoch} end
local e, v, r = string.match(state, '^(%d+)|(%d+)|(%d)$')
if e ~= epoch then return {'?', epoch} end
return answer(v, r)
"""
)

# After a read from PostgreSQL. ARGV: L1 version, the epoch the lookup saw, version, restricted,
# state ttl in ms. The state is stored only if no commit is in flight or was published since.
_FILL_SCRIPT = (
    _ANSWER_OF
    + """
if epoch == ARGV[2] and not committing() then
  redis.call('SET', KEYS[1], epoch .. '|' .. ARGV[3] .. '|' .. ARGV[4], 'PX', ARGV[5])
end
return answer(ARGV[3], ARGV[4])
"""
)

ReadCorpusState = Callable[[], Awaitable[CorpusState]]


def normalise_question(question: str) -> str:
    text = unicodedata.normalize("NFKC", question).casefold()
    return _SPACES.sub(" ", text).strip().rstrip(_TRAILING_CHARS)


@dataclass(frozen=True)
class CacheProbe:
    """What a lookup asks for: the tenant's answer to one question (its digest)."""

    tenant_id: uuid.UUID
    digest: str


@dataclass(frozen=True)
class CacheKey:
    """Where an answer goes: the probe, under the corpus version it was answered from."""

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
        return json.dumps(
            {
                "answer": self.answer,
                "sources": [source.to_dict() for source in self.sources],
                "provider": self.provider,
                "model": self.model,
                "usage": self.usage,
            }
        )

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
    layer: Literal["l1", "redis"]  # this process's copy, or the shared one's payload


class CacheLookup(NamedTuple):
    key: CacheKey  # where this turn's answer is stored
    hit: CacheHit | None
    restricted: bool  # the tenant has documents with access lists: check a hit's sources


class AnswerCache:
    """L1 (this process, TTL-bounded) over L2 (Redis, LRU-bounded). ``ttl_s`` of 0 disables the
    cache: ``probe`` returns None."""

    def __init__(
        self, redis: Redis, keys: KeySpace, *, ttl_s: int, max_entries: int, l1_size: int = 1024
    ) -> None:
        self._keys = keys
        self._corpus = CorpusKeys(keys)
        self._ttl_s = ttl_s
        self._max_entries = max_entries
        self._l1: TTLCache[str, tuple[str, CachedAnswer]] = TTLCache(maxsize=l1_size, ttl=max(ttl_s, 1))
        self._put = redis.register_script(_PUT_SCRIPT)
        self._lookup = redis.register_script(_LOOKUP_SCRIPT)
        self._fill = redis.register_script(_FILL_SCRIPT)

    @property
    def enabled(self) -> bool:
        return self._ttl_s > 0

    def _render(self, tenant_id: uuid.UUID, digest: str) -> str:
        return self._keys.key("answer", str(tenant_id), digest)

    def _lru_keys(self) -> list[str]:
        return [self._keys.key("answer-lru"), self._keys.key("answer-lru-clock")]

    def probe(
        self, tenant_id: uuid.UUID, question: str, parameters: dict[str, Any], context: str = ""
    ) -> CacheProbe | None:
        if not self.enabled:
            return None
        material = json.dumps(
            {"q": normalise_question(question), "p": parameters, "c": context}, sort_keys=True, default=str
        )
        return CacheProbe(tenant_id, hashlib.sha256(material.encode()).hexdigest())

    async def lookup(self, probe: CacheProbe, read_state: ReadCorpusState) -> CacheLookup:
        """The answer under the tenant's current corpus version, if any: one script when Redis
        knows the version, else ``read_state`` (PostgreSQL) and a second script. Redis down:
        ``read_state`` and this process's L1."""
        rendered = self._render(probe.tenant_id, probe.digest)
        keys = [self._corpus.state(probe.tenant_id), self._corpus.pending, self._corpus.epoch, rendered]
        keys += self._lru_keys()
        local = self._l1.get(rendered)
        held = local[0] if local is not None else ""
        try:
            reply = await self._lookup(keys=keys, args=[held])
            if reply[0] == b"?":
                state = await read_state()
                reply = await self._fill(
                    keys=keys, args=[held, reply[1], state.version, int(state.restricted), STATE_TTL_MS]
                )
        except RedisError:
            logger.warning("answer_cache_unavailable")
            state = await read_state()
            version = str(state.version)
            hit = CacheHit(local[1], "l1") if local is not None and local[0] == version else None
            return CacheLookup(CacheKey(probe.tenant_id, version, probe.digest), hit, state.restricted)
        version = reply[0].decode()
        return CacheLookup(
            CacheKey(probe.tenant_id, version, probe.digest),
            self._hit(rendered, version, reply, local),
            reply[1] == b"1",
        )

    def _hit(
        self, rendered: str, version: str, reply: list[Any], local: tuple[str, CachedAnswer] | None
    ) -> CacheHit | None:
        """Redis's copy when it sent one; else this process's, if of the current version (Redis
        may have lost its copy: a restart, an eviction, a put while it was down)."""
        if reply[2] and len(reply) > 3:
            answer = CachedAnswer.from_json(reply[3])
            self._l1[rendered] = (version, answer)
            return CacheHit(answer, "redis")
        return CacheHit(local[1], "l1") if local is not None and local[0] == version else None

    async def put(self, key: CacheKey, answer: CachedAnswer) -> None:
        rendered = self._render(key.tenant_id, key.digest)
        self._l1[rendered] = (key.corpus_version, answer)
        try:
            await self._put(
                keys=[rendered, *self._lru_keys()],
                args=[key.corpus_version, answer.to_json(), self._ttl_s, self._max_entries],
            )
        except RedisError:
            logger.warning("answer_cache_unavailable")
