"""ChatService on in-memory stores (the ``app.chat.ports`` protocols) and scripted providers: the
pipeline's decisions alone, without PostgreSQL, Redis or a model."""

from __future__ import annotations

import asyncio
import hashlib
import json
import threading
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import pytest

from app.auth.principal import Principal, Role
from app.cache.answers import CachedAnswer, CacheHit, CacheKey, CacheLookup, CacheProbe, ReadCorpusState
from app.cache.corpus import CorpusState
from app.chat.pipeline import Preparation
from app.chat.service import ChatService
from app.chat.types import NO_CONTEXT_ANSWER, ChatInput, DeltaEvent, DoneEvent, ErrorEvent, SourcesEvent
from app.llm.errors import ServerError
from app.memory.service import RecordedTurn, TurnRecord
from app.observability.telemetry import Telemetry
from app.rag.prompt import Turn
from app.rag.query import RetrievalQuery, RetrievedChunk
from app.rag.rerank import NoReranker
from app.rag.tokens import TokenCounter, WordPieceTokenCounter
from app.settings import Settings
from tests.support.chains import chain_of
from tests.support.embedders import HashingEmbedder
from tests.support.scripted import ScriptedProvider, Step
from tests.support.tokens import WhitespaceTokenCounter

pytestmark = pytest.mark.unit

ALICE = Principal(id="key:alice", tenant_id=uuid.UUID(int=1), role=Role.reader, kind="api_key")
CHUNK = RetrievedChunk(
    chunk_id=7,
    document_id=uuid.UUID(int=9),
    version=1,
    title="Returns policy",
    page=2,
    text="The refund window is 30 days from delivery.",
    tags=("policy",),
    score=0.9,
)


class FakeDb:
    """A unit of work's session: in a transaction from its opening to its commit."""

    def __init__(self) -> None:
        self.commits = 0
        self.open = False

    def in_transaction(self) -> bool:
        return self.open

    async def commit(self) -> None:
        self.commits += 1
        self.open = False


@dataclass
class InMemoryMemory:
    turns: dict[tuple[str, str], list[TurnRecord]] = field(default_factory=dict)

    async def window(self, db: Any, principal: Principal, session_id: str) -> list[Turn]:
        return [
            Turn(t.question, t.answer)
            for t in self.turns.get((principal.id, session_id), [])
            if t.status == "ok"
        ]

    async def record_turn(
        self, db: Any, principal: Principal, session_id: str, turn: TurnRecord
    ) -> RecordedTurn:
        self.turns.setdefault((principal.id, session_id), []).append(turn)
        return RecordedTurn(uuid.uuid4(), turn)

    async def publish(self, recorded: RecordedTurn) -> None:
        return None


@dataclass
class InMemoryCache:
    entries: dict[CacheKey, CachedAnswer] = field(default_factory=dict)

    @property
    def enabled(self) -> bool:
        return True

    def probe(
        self, tenant_id: uuid.UUID, question: str, parameters: dict[str, Any], context: str = ""
    ) -> CacheProbe | None:
        material = json.dumps(
            [question.lower().rstrip("?"), parameters, context], sort_keys=True, default=str
        )
        return CacheProbe(tenant_id, hashlib.sha256(material.encode()).hexdigest())

    async def lookup(self, probe: CacheProbe, read_state: ReadCorpusState) -> CacheLookup:
        state = await read_state()
        key = CacheKey(probe.tenant_id, str(state.version), probe.digest)
        hit = self.entries.get(key)
        return CacheLookup(key, None if hit is None else CacheHit(hit, "l1"), state.restricted)

    async def put(self, key: CacheKey, answer: CachedAnswer) -> None:
        self.entries[key] = answer


@dataclass
class Harness:
    service: ChatService
    memory: InMemoryMemory
    cache: InMemoryCache
    db: FakeDb
    retrieved: list[RetrievedChunk]


def harness(
    *providers: ScriptedProvider,
    chunks: list[RetrievedChunk] | None = None,
    embedder: HashingEmbedder | None = None,
    cache: InMemoryCache | None = None,
    counter: TokenCounter | None = None,
) -> Harness:
    settings = Settings(_env_file=None)
    memory, db = InMemoryMemory(), FakeDb()
    cache = cache or InMemoryCache()
    retrieved = [CHUNK] if chunks is None else chunks

    @asynccontextmanager
    async def unit_of_work() -> AsyncIterator[Any]:
        db.open = True
        yield db

    async def retriever(_: Any, query: RetrievalQuery) -> list[RetrievedChunk]:
        return retrieved

    async def corpus_state(_: Any, tenant_id: uuid.UUID) -> CorpusState:
        return CorpusState(1, restricted=True)

    async def sources_visible(_: Any, tenant_id: uuid.UUID, access: Any, documents: list[str]) -> bool:
        return True  # every caller here may see every document

    preparation = Preparation(
        settings=settings,
        unit_of_work=unit_of_work,
        memory=memory,
        cache=cache,
        corpus_states=corpus_state,
        retriever=retriever,
        embedder=embedder or HashingEmbedder(),
        reranker=NoReranker(),
        counter=counter or WhitespaceTokenCounter(),
        telemetry=Telemetry.disabled(),
        sources_visible=sources_visible,
    )
    service = ChatService(
        settings=settings,
        preparation=preparation,
        chain=chain_of(*providers),
        memory=memory,
        cache=cache,
        unit_of_work=unit_of_work,
    )
    return Harness(service, memory, cache, db, retrieved)


def generator(*steps: Step) -> ScriptedProvider:
    return ScriptedProvider(list(steps) or [Step(tokens=("30 days", " [1]."))], provider_name="openai")


async def test_a_routed_answer_is_cached_and_the_repeat_never_reaches_the_provider() -> None:
    provider = generator()
    h = harness(provider)
    first = await h.service.answer(ALICE, ChatInput("How long is the refund window?", session_id="s1"))
    again = await h.service.answer(ALICE, ChatInput("how long is the refund window", session_id="s2"))
    assert (first.answer, first.cached, first.sources[0].cited) == ("30 days [1].", False, True)
    assert (again.answer, again.cached, again.provider) == ("30 days [1].", True, "openai")
    assert again.sources == first.sources
    assert provider.calls == 1
    # both turns are in memory, the cached one with the sources it was answered with
    assert [t.status for t in h.memory.turns[(ALICE.id, "s2")]] == ["ok"]
    assert h.memory.turns[(ALICE.id, "s2")][0].sources[0]["cited"] is True


async def test_an_answer_cached_under_another_embedding_model_is_not_served() -> None:
    provider = generator()
    before = harness(provider, embedder=HashingEmbedder(model_name="old-model"))
    await before.service.answer(ALICE, ChatInput("How long is the refund window?", session_id="s1"))
    after = harness(provider, embedder=HashingEmbedder(model_name="new-model"), cache=before.cache)
    again = await after.service.answer(ALICE, ChatInput("How long is the refund window?", session_id="s2"))
    assert again.cached is False and provider.calls == 2


async def test_an_answer_after_earlier_turns_is_not_served_to_a_fresh_session() -> None:
    provider = generator(Step(tokens=("first",)), Step(tokens=("second",)), Step(tokens=("third",)))
    h = harness(provider)
    await h.service.answer(ALICE, ChatInput("Hello there", session_id="long"))
    in_context = await h.service.answer(ALICE, ChatInput("How long is the refund window?", session_id="long"))
    fresh = await h.service.answer(ALICE, ChatInput("How long is the refund window?", session_id="new"))
    assert (in_context.answer, fresh.answer, fresh.cached) == ("second", "third", False)


async def test_a_degraded_answer_is_recorded_as_failed_and_never_cached() -> None:
    h = harness(generator(Step(error=ServerError("503"))))
    result = await h.service.answer(ALICE, ChatInput("How long is the refund window?", session_id="s"))
    assert result.degraded and result.provider == "none"
    assert h.cache.entries == {}
    assert [t.status for t in h.memory.turns[(ALICE.id, "s")]] == ["failed"]


async def test_nothing_retrieved_is_answered_without_the_router_in_one_unit_of_work() -> None:
    provider = generator()
    h = harness(provider, chunks=[])
    result = await h.service.answer(ALICE, ChatInput("What is the meaning of life?", session_id="s"))
    assert (result.answer, result.provider, result.sources) == (NO_CONTEXT_ANSWER, "none", [])
    assert provider.calls == 0
    assert len(h.memory.turns[(ALICE.id, "s")]) == 1
    assert h.db.commits == 1  # preparation recorded the turn and committed once


async def test_a_stream_sends_sources_deltas_and_done_and_records_what_was_sent() -> None:
    h = harness(generator(Step(tokens=("30", " days", " [1]."))))
    events = [e async for e in h.service.stream(ALICE, ChatInput("Refund window?", session_id="s"))]
    assert isinstance(events[0], SourcesEvent) and isinstance(events[-1], DoneEvent)
    text = "".join(e.text for e in events if isinstance(e, DeltaEvent))
    assert text == "30 days [1]." and events[-1].cited == [1]
    (turn,) = h.memory.turns[(ALICE.id, "s")]
    assert (turn.answer, turn.status, turn.sources[0]["cited"]) == (text, "ok", False)
    assert len(h.cache.entries) == 1


async def test_a_stream_that_breaks_ends_with_an_error_and_records_the_partial_answer() -> None:
    h = harness(generator(Step(tokens=("30", " days"), fail_after_tokens=ServerError("reset"))))
    events = [e async for e in h.service.stream(ALICE, ChatInput("Refund window?", session_id="s"))]
    assert isinstance(events[-1], ErrorEvent)
    (turn,) = h.memory.turns[(ALICE.id, "s")]
    assert (turn.answer, turn.status) == ("30 days", "failed")
    assert h.cache.entries == {}


async def test_a_client_that_leaves_mid_stream_leaves_a_cancelled_turn() -> None:
    h = harness(generator(Step(tokens=("30", " days", " [1]."))))
    stream = h.service.stream(ALICE, ChatInput("Refund window?", session_id="s"))
    assert isinstance(await anext(stream), SourcesEvent)
    delta = await anext(stream)
    assert isinstance(delta, DeltaEvent) and delta.text == "30"
    await stream.aclose()  # what the HTTP layer does when the client disconnects
    (turn,) = h.memory.turns[(ALICE.id, "s")]
    assert (turn.answer, turn.status) == ("30", "cancelled")
    assert h.cache.entries == {}


class WatchedCounter:
    """The real WordPiece counter, recording the characters it tokenizes and on which thread."""

    def __init__(self) -> None:
        self._counter = WordPieceTokenCounter()
        self.by_thread: dict[int, int] = {}

    @property
    def characters(self) -> int:
        return sum(self.by_thread.values())

    def count(self, text: str) -> int:
        thread = threading.get_ident()
        self.by_thread[thread] = self.by_thread.get(thread, 0) + len(text)
        return self._counter.count(text)


async def test_a_stored_window_of_the_largest_questions_is_counted_once_per_turn_off_the_loop() -> None:
    """A principal fills its 20-turn window with the largest question validation accepts (945
    ``&``, 4,725 characters once escaped, 2,835 tokens); each later turn used to re-tokenize the
    whole prompt once per dropped turn (about 1 s on the event loop). Now a later turn tokenizes
    its question, its passage and the newest turn, in a worker thread."""
    provider = generator(*[Step(tokens=("ok",)) for _ in range(22)])
    counter = WatchedCounter()
    h = harness(provider, counter=counter)
    largest = "&" * 945
    h.service.validate(ChatInput(largest))  # the largest question passes validation
    for _ in range(20):
        h.memory.turns.setdefault((ALICE.id, "filled"), []).append(
            TurnRecord(largest, "ok", [], "ok", "openai", "m", None)
        )
    counter.by_thread.clear()
    answer = await h.service.answer(ALICE, ChatInput("How long is the refund window?", session_id="filled"))
    assert answer.answer == "ok" and provider.calls == 1
    escaped_turn = len("Q: \nA: ok") + 945 * len("&amp;")
    # the question, the system text and framing, the passage, and one turn that does not fit
    assert counter.characters < 2 * escaped_turn, counter.characters
    # on the event loop: only the budget and validation (system text, framing and the question,
    # which the API bounds); no stored turn and no passage
    on_loop = counter.by_thread.get(threading.get_ident(), 0)
    assert on_loop < escaped_turn, on_loop


@dataclass
class CacheWaitingForMemory(InMemoryCache):
    """Stores an answer only once the turn's memory write has begun."""

    memory_written: asyncio.Event = field(default_factory=asyncio.Event)

    async def put(self, key: CacheKey, answer: CachedAnswer) -> None:
        await self.memory_written.wait()
        await super().put(key, answer)


async def test_the_answer_is_cached_while_the_turn_is_written_not_after() -> None:
    cache = CacheWaitingForMemory()
    h = harness(generator(), cache=cache)
    record_turn = h.memory.record_turn

    async def recording(*args: Any) -> RecordedTurn:
        cache.memory_written.set()
        return await record_turn(*args)

    h.memory.record_turn = recording  # type: ignore[method-assign]
    async with asyncio.timeout(10):  # one after the other, the cache would wait for good
        answer = await h.service.answer(ALICE, ChatInput("How long is the refund window?", session_id="s1"))
    assert answer.answer == "30 days [1]." and len(cache.entries) == 1
    assert [t.status for t in h.memory.turns[(ALICE.id, "s1")]] == ["ok"]
