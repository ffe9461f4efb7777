"""The tenant's corpus state in the cache Redis, so that a cache hit reads no PostgreSQL.

``tenants.corpus_version`` stays the truth: a trigger bumps it in the same transaction as any
change to the tenant's documents. The cache Redis holds a copy per tenant, ``corpus:<tenant>`` =
``<epoch>|<version>|<restricted>`` (restricted: some document of the tenant has an access list),
read in the same script as the answer (``app.cache.answers``). The copy is trusted only while:

- no document commit is in flight: a session that changes documents (``CorpusTrackedSession``)
  adds a token to ``corpus-pending`` (a sorted set scored by its deadline) before its COMMIT,
  and removes it after, bumping ``corpus-epoch`` in the same script; while a token is live,
  readers read PostgreSQL;
- its epoch is the current one: every document commit makes every copy stale, so the next
  reader of each tenant reads PostgreSQL once and stores the copy again (only if no commit
  published meanwhile: the epoch it saw is still current);
- it is younger than ``STATE_TTL_MS``: a writer that cannot reach the cache Redis (a document
  command run without ``REDIS_URL``, a Redis outage during the commit) and a Redis restored from
  an older snapshot are seen within that time.

A lost key (restart, flush, eviction) reads as "unknown": that reader reads PostgreSQL. A writer
that dies between its COMMIT and its publish leaves a token that expires after
``PENDING_DEADLINE_MS``; by then its tenant's copy has expired too (``STATE_TTL_MS`` is shorter).
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from itertools import chain
from typing import Any

import structlog
from redis.asyncio import Redis
from sqlalchemy import event
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from sqlalchemy.orm import ORMExecuteState, Session, SessionTransaction
from sqlalchemy.util import await_
from sqlalchemy.util.concurrency import in_greenlet

from app.db.models import Document
from app.db.redis import KeySpace

logger = structlog.get_logger(__name__)

STATE_TTL_MS = 1000
PENDING_DEADLINE_MS = 10_000

# KEYS: pending set; ARGV: token, deadline in ms from now. Expired tokens go first.
_BEGIN_SCRIPT = """
local now = redis.call('TIME')
local ms = tonumber(now[1]) * 1000 + math.floor(tonumber(now[2]) / 1000)
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', '(' .. ms)
redis.call('ZADD', KEYS[1], ms + tonumber(ARGV[2]), ARGV[1])
"""

# KEYS: pending set, epoch; ARGV: token.
_END_SCRIPT = """
redis.call('INCR', KEYS[2])
redis.call('ZREM', KEYS[1], ARGV[1])
"""

_DOCUMENTS = Document.__tablename__
_CHANGES = "corpus_changes"  # session.info: the CorpusChanges publishing this factory's commits
_CHANGED = "corpus_changed"  # session.info: this transaction changed documents
_PENDING = "corpus_pending"  # session.info: the pending token of the commit under way


@dataclass(frozen=True)
class CorpusState:
    """What a cache lookup needs of the tenant's corpus, as of one read."""

    version: int
    restricted: bool  # some document has an access list: a hit's sources are checked per caller

    def render(self, epoch: str) -> str:
        return f"{epoch}|{self.version}|{int(self.restricted)}"

    @classmethod
    def parse(cls, version: Any, restricted: Any) -> CorpusState:
        return cls(int(version), str(restricted) in ("1", "True", "true"))


@dataclass(frozen=True)
class CorpusKeys:
    """The Redis keys of the corpus state, in the cache Redis."""

    keys: KeySpace

    def state(self, tenant_id: object) -> str:
        return self.keys.key("corpus", str(tenant_id))

    @property
    def pending(self) -> str:
        return self.keys.key("corpus-pending")

    @property
    def epoch(self) -> str:
        return self.keys.key("corpus-epoch")


class CorpusChanges:
    """The writer's side: a token before a document commit, the epoch bump after it. Never
    raises: a commit goes through when the cache Redis is down (``STATE_TTL_MS`` bounds it)."""

    def __init__(self, redis: Redis, keys: KeySpace) -> None:
        self._keys = CorpusKeys(keys)
        self._begin = redis.register_script(_BEGIN_SCRIPT)
        self._end = redis.register_script(_END_SCRIPT)

    async def begin(self) -> str:
        token = secrets.token_hex(8)
        try:
            await self._begin(keys=[self._keys.pending], args=[token, PENDING_DEADLINE_MS])
        except Exception as exc:
            logger.warning("corpus_publish_failed", stage="begin", error_type=type(exc).__name__)
        return token

    async def end(self, token: str) -> None:
        try:
            await self._end(keys=[self._keys.pending, self._keys.epoch], args=[token])
        except Exception as exc:
            logger.warning("corpus_publish_failed", stage="end", error_type=type(exc).__name__)


class CorpusTrackedSession(Session):
    """A session whose commits that change documents are published (see the module doc)."""


def track_corpus_changes(factory: async_sessionmaker[AsyncSession], changes: CorpusChanges) -> None:
    """Make every session of ``factory`` publish its document commits through ``changes``."""
    factory.configure(sync_session_class=CorpusTrackedSession, info={_CHANGES: changes})


def _touches_documents(session: Session) -> bool:
    return any(isinstance(o, Document) for o in chain(session.new, session.dirty, session.deleted))


@event.listens_for(CorpusTrackedSession, "after_flush")
def _flushed(session: Session, _: Any) -> None:
    if _touches_documents(session):  # still the pre-flush state here
        session.info[_CHANGED] = True


@event.listens_for(CorpusTrackedSession, "do_orm_execute")
def _executed(state: ORMExecuteState) -> None:
    table = getattr(state.statement, "table", None)
    if (state.is_insert or state.is_update or state.is_delete) and getattr(table, "name", None) == _DOCUMENTS:
        state.session.info[_CHANGED] = True


@event.listens_for(CorpusTrackedSession, "before_commit")
def _before_commit(session: Session) -> None:
    """Also on a savepoint's release: a token taken early only makes readers wait longer."""
    changes = session.info.get(_CHANGES)
    if changes is None or _PENDING in session.info or not in_greenlet():
        return
    if session.info.get(_CHANGED) or _touches_documents(session):
        session.info[_PENDING] = await_(changes.begin())


@event.listens_for(CorpusTrackedSession, "after_commit")
def _after_commit(session: Session) -> None:
    if not session.in_nested_transaction():
        _publish(session)


@event.listens_for(CorpusTrackedSession, "after_transaction_end")
def _ended(session: Session, transaction: SessionTransaction) -> None:
    if transaction.parent is None:
        _publish(session)  # a failed COMMIT may have committed: publish it all the same
        session.info.pop(_CHANGED, None)


def _publish(session: Session) -> None:
    token = session.info.pop(_PENDING, None)
    session.info.pop(_CHANGED, None)
    if token is None:
        return
    changes: CorpusChanges = session.info[_CHANGES]
    if in_greenlet():
        await_(changes.end(token))
    else:  # a session closed outside the event loop's greenlet: the token expires on its own
        logger.warning("corpus_publish_failed", stage="end", error_type="outside_greenlet")
