"""Preparing a chat turn, up to the router: one unit of work reads the conversation window, the
corpus version and the retrieved chunks on one database session. A cache hit or a question with no
matching passages is answered (and recorded in memory) in that same unit of work."""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import asdict, dataclass
from functools import partial
from typing import Any

import anyio
import structlog
from cachetools import LRUCache

from app.auth.principal import Principal
from app.cache.answers import CacheKey, normalise_question
from app.chat.ports import AnswerStore, CorpusVersions, Memory, Retriever
from app.chat.types import NO_CONTEXT_ANSWER, ChatInput
from app.db.unit_of_work import UnitOfWork
from app.memory.service import RecordedTurn, TurnRecord
from app.observability.context import current_trace_id, new_trace_id
from app.observability.metrics.domain import DomainMetrics
from app.observability.telemetry import Telemetry
from app.rag.embeddings import Embedder
from app.rag.prompt import Prompt, Turn, bare_prompt_tokens, build_prompt, prompt_budget
from app.rag.query import RetrievalMode, RetrievalQuery, RetrievedChunk
from app.rag.relevance import relevance_gate
from app.rag.rerank import Reranker, rerank_stage, reranker_identity, retrieval_depth
from app.rag.sources import Source, source_for
from app.rag.tokens import TokenCounter
from app.security.injection import detect_injection
from app.settings import Settings

logger = structlog.get_logger(__name__)


@dataclass(frozen=True)
class FixedAnswer:
    """An answer known without the router: a cache hit, or "nothing matches" (provider "none")."""

    text: str
    provider: str
    model: str
    usage: dict[str, int] | None
    cached: bool


@dataclass(frozen=True)
class Prepared:
    trace_id: str
    started: float
    cache_key: CacheKey | None
    history: list[Turn]
    sources: list[Source]
    prompt: Prompt | None  # None when ``fixed`` answers the turn
    fixed: FixedAnswer | None  # already recorded in memory

    def elapsed_ms(self) -> float:
        return round((time.perf_counter() - self.started) * 1000, 2)


def turn_record(chat: ChatInput, answer: str, sources: list[Source], **outcome: Any) -> TurnRecord:
    return TurnRecord(question=chat.question, answer=answer, sources=[asdict(s) for s in sources], **outcome)


def _flag_injection(question: str, chunks: list[RetrievedChunk], metrics: DomainMetrics) -> None:
    """Log and count suspected prompt injection. Nothing is blocked: the question is the user's
    own, and retrieved text reaches the model only as escaped, quoted data under instructions that
    say so (``app.rag.prompt.quote_data``)."""
    question_flags = detect_injection(question)
    if question_flags:
        logger.warning("prompt_injection_suspected", source="question", flags=question_flags)
        metrics.prompt_injection("question", question_flags)
    for chunk in chunks:
        flags = detect_injection(chunk.text)
        if flags:
            metrics.prompt_injection("retrieved_chunk", flags)
            logger.warning(
                "prompt_injection_suspected",
                source="retrieved_chunk",
                chunk_id=chunk.chunk_id,
                document_id=str(chunk.document_id),
                flags=flags,
            )


def _cache_parameters(chat: ChatInput, reranker: Reranker, embedding_model: str) -> dict[str, Any]:
    parameters = {
        # Another model retrieves other passages: `make reembed` must not leave old answers served.
        "embedding": embedding_model,
        "model": chat.model,
        "temperature": chat.temperature,
        "max_tokens": chat.max_tokens,
        "top_k": chat.top_k,
        "tags": sorted(chat.filters.tags),
        "documents": sorted(str(d) for d in chat.filters.document_ids),
        "mode": chat.mode.value,
        "weights": [chat.vector_weight, chat.text_weight],
    }
    identity = reranker_identity(reranker)
    if identity is not None:  # another reranker orders other sources: another answer
        parameters["reranker"] = identity
    return parameters


def _history_digest(history: list[Turn]) -> str:
    if not history:
        return ""
    return hashlib.sha256(json.dumps([asdict(t) for t in history]).encode()).hexdigest()


class Preparation:
    def __init__(
        self,
        *,
        settings: Settings,
        unit_of_work: UnitOfWork,
        memory: Memory,
        cache: AnswerStore,
        corpus_versions: CorpusVersions,
        retriever: Retriever,
        embedder: Embedder,
        reranker: Reranker,
        counter: TokenCounter,
        telemetry: Telemetry,
    ) -> None:
        self._settings = settings
        self._unit_of_work = unit_of_work
        self._memory = memory
        self._cache = cache
        self._corpus_versions = corpus_versions
        self._retriever = retriever
        self._embedder = embedder
        self._reranker = reranker
        self._counter = counter
        self._telemetry = telemetry
        self._query_vectors: LRUCache[str, list[float]] = LRUCache(maxsize=2048)

    def count_tokens(self, text: str) -> int:
        return self._counter.count(text)

    def prompt_budget(self, chat: ChatInput) -> int:
        answer_tokens = chat.max_tokens or self._settings.answer_max_tokens
        return prompt_budget(
            self._settings.prompt_budget_tokens, answer_tokens, bare_prompt_tokens(self._counter)
        )

    def validate(self, chat: ChatInput) -> None:
        """422 ``invalid_max_tokens`` / ``question_too_long``, naming the numbers, before any work."""
        build_prompt(chat.question, [], [], budget_tokens=self.prompt_budget(chat), counter=self._counter)

    async def _fit_prompt(self, chat: ChatInput, history: list[Turn], chunks: list[RetrievedChunk]) -> Prompt:
        """``build_prompt`` in a worker thread: tokenizing a long history and the passages is
        CPU work (linear, and bounded by the API's message caps), and the token counter lets the
        event loop run meanwhile. ``validate`` stays inline: it counts only the question, which
        the API bounds."""
        budget = self.prompt_budget(chat)
        fit = partial(
            build_prompt, chat.question, history, chunks, budget_tokens=budget, counter=self._counter
        )
        return await anyio.to_thread.run_sync(fit)

    async def _embed_query(self, question: str) -> list[float]:
        key = f"{self._embedder.model_name}\0{normalise_question(question)}"
        vector = self._query_vectors.get(key)
        if vector is None:
            started = time.perf_counter()
            async with self._telemetry.tracer.span("embedding", kind="embedding", input=question):
                vector = await self._embedder.embed_query(question)
            elapsed = time.perf_counter() - started
            self._telemetry.metrics.embedding(elapsed, self._settings.embedding_provider)
            self._query_vectors[key] = vector
        return vector

    def _query(self, principal: Principal, chat: ChatInput, vector: list[float] | None) -> RetrievalQuery:
        return RetrievalQuery(
            tenant_id=principal.tenant_id,
            text=chat.question,
            vector=vector,
            # With a reranker: its candidates, of which it keeps chat.top_k.
            top_k=retrieval_depth(self._reranker, chat.top_k, self._settings.reranker_candidates),
            mode=chat.mode,
            filters=chat.filters,
            vector_weight=chat.vector_weight,
            text_weight=chat.text_weight,
            ef_search=self._settings.hnsw_ef_search,
            min_similarity=self._settings.retrieval_min_similarity,
        )

    async def prepare(self, principal: Principal, chat: ChatInput) -> Prepared:
        trace_id = current_trace_id() or new_trace_id()
        started = time.perf_counter()
        tracer, metrics = self._telemetry.tracer, self._telemetry.metrics
        recorded: RecordedTurn | None = None
        async with self._unit_of_work() as db:
            history: list[Turn] = list(chat.history)
            if chat.session is not None:
                async with tracer.span("memory") as span:
                    history = await self._memory.window(db, principal, chat.session)
                    span.update(output={"turns": len(history)})
            cache_key = None
            if self._cache.enabled and chat.shared_cache:
                version = await self._corpus_versions(db, principal.tenant_id)
                cache_key = self._cache.key_for(
                    principal.tenant_id,
                    version,
                    chat.question,
                    _cache_parameters(chat, self._reranker, self._embedder.model_name),
                    _history_digest(history),
                )
            fixed: FixedAnswer | None = None
            prompt: Prompt | None = None
            sources: list[Source] = []
            if cache_key is not None:
                async with tracer.span("cache_lookup") as span:
                    hit = await self._cache.get(cache_key)
                    span.update(output={"hit": hit is not None, "layer": hit[1] if hit else None})
                metrics.cache_lookup(hit=hit is not None, layer=hit[1] if hit else "answer")
                if hit is not None:
                    cached = hit[0]
                    sources = list(cached.sources)
                    fixed = FixedAnswer(
                        cached.answer, cached.provider, cached.model, cached.usage, cached=True
                    )
            if fixed is None:
                vector = None
                if chat.mode is not RetrievalMode.text:
                    vector = await self._embed_query(chat.question)
                retrieval_span = tracer.span(
                    "retrieval", kind="retriever", input={"query": chat.question, "mode": chat.mode.value}
                )
                async with retrieval_span as span:
                    with metrics.vector_search_timer(chat.mode.value):
                        chunks = await self._retriever(db, self._query(principal, chat, vector))
                    # issue 28 (relevance gate): passages with no evidence of bearing on the
                    # question are dropped, so the turn gets the "nothing matches" answer. A
                    # follow-up ("and the purge?") is not judged on its own words while the
                    # retrieval query is the question alone.
                    gate = relevance_gate(self._settings)
                    relevant = bool(history) or gate.admits(chunks, chat.mode)
                    span.update(output={"chunks": [c.chunk_id for c in chunks], "relevant": relevant})
                    chunks = chunks if relevant else []
                chunks = await rerank_stage(
                    self._reranker, chat.question, chunks, chat.top_k, self._telemetry
                )
                _flag_injection(chat.question, chunks, metrics)
                if chunks:
                    prompt = await self._fit_prompt(chat, history, chunks)
                    sources = [source_for(n, chunk) for n, chunk in enumerate(prompt.passages, start=1)]
                else:
                    fixed = FixedAnswer(NO_CONTEXT_ANSWER, "none", "none", None, cached=False)
            if fixed is not None and chat.session is not None:
                # Answered without the router: recorded in this unit of work, one commit.
                recorded = await self._memory.record_turn(
                    db,
                    principal,
                    chat.session,
                    turn_record(
                        chat,
                        fixed.text,
                        sources,
                        status="ok",
                        provider=fixed.provider,
                        model=fixed.model,
                        trace_id=trace_id,
                    ),
                )
            await db.commit()  # ends the transaction: no connection is held while the model answers
        if recorded is not None:
            await self._memory.publish(recorded)
        return Prepared(trace_id, started, cache_key, history, sources, prompt, fixed)
