"""What the chat pipeline needs from the stores around it. ``ChatService`` depends on these
protocols, so unit tests drive it with in-memory stand-ins and production wires the real stores
(``app.memory.service.ConversationMemory``, ``app.cache.answers.AnswerCache``,
``app.feedback.ledger.RedisAnswerLedger``, …)."""

from __future__ import annotations

import uuid
from typing import Any, Protocol

from sqlalchemy.ext.asyncio import AsyncSession

from app.auth.principal import Principal
from app.cache.answers import CachedAnswer, CacheKey, CacheLookup, CacheProbe, ReadCorpusState
from app.cache.corpus import CorpusState
from app.feedback.ledger import AnsweredTurn
from app.memory.service import RecordedTurn, TurnRecord
from app.rag.prompt import Turn
from app.rag.query import RetrievalQuery, RetrievedChunk


class Memory(Protocol):
    async def window(self, db: AsyncSession, principal: Principal, session_id: str) -> list[Turn]: ...

    async def record_turn(
        self, db: AsyncSession, principal: Principal, session_id: str, turn: TurnRecord
    ) -> RecordedTurn: ...

    async def publish(self, recorded: RecordedTurn) -> None: ...


class AnswerStore(Protocol):
    @property
    def enabled(self) -> bool: ...

    def probe(
        self, tenant_id: uuid.UUID, question: str, parameters: dict[str, Any], context: str = ""
    ) -> CacheProbe | None: ...

    async def lookup(self, probe: CacheProbe, read_state: ReadCorpusState) -> CacheLookup: ...

    async def put(self, key: CacheKey, answer: CachedAnswer) -> None: ...


class Retriever(Protocol):
    async def __call__(self, db: AsyncSession, query: RetrievalQuery) -> list[RetrievedChunk]: ...


class CorpusStates(Protocol):
    """The tenant's corpus state as PostgreSQL has it (read when the cache Redis does not)."""

    async def __call__(self, db: AsyncSession, tenant_id: uuid.UUID) -> CorpusState: ...


class AnswerLedger(Protocol):
    """Who received which answer, by trace id, so that feedback on it can be checked. ``record``
    never raises: a failed write is the ledger's to log and count, never the chat answer's."""

    async def record(self, turn: AnsweredTurn) -> None: ...
