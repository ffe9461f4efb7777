"""Preparing a chat turn, up to the router: one unit of work reads the conversation window, the
corpus version (when the cache Redis does not know it) and the retrieved chunks on one database
session. A turn answered without the router (a cache hit, a question with no matching passages) is
finished in that same unit of work: one connection at most, one commit. The session connects on
its first statement, so a cache hit without memory opens none."""

from __future__ import annotations

import hashlib
import json
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import asdict, replace
from functools import partial
from typing import Any

import anyio
from sqlalchemy.ext.asyncio import AsyncSession

from app.auth.access import AccessSet, may_see_all
from app.auth.principal import Principal
from app.cache.answers import CacheKey
from app.chat.finish import TurnFinisher
from app.chat.ports import AnswerStore, CorpusStates, Memory, Retriever
from app.chat.retrieval import RetrievalStage
from app.chat.rewrite import QueryRewriter
from app.chat.turns import FixedTurn, Outcome, PreparedTurn, RoutedTurn, TurnStatus
from app.chat.types import NO_CONTEXT_ANSWER, ChatInput
from app.db.unit_of_work import UnitOfWork, end_read
from app.llm.chain import ProviderChain
from app.observability.context import current_trace_id, new_trace_id
from app.observability.telemetry import Telemetry
from app.rag.embeddings import Embedder
from app.rag.prompt import Prompt, Turn, bare_prompt_tokens, build_prompt, prompt_budget
from app.rag.query import RetrievedChunk
from app.rag.rerank import Reranker, reranker_identity
from app.rag.sources import Source, source_for
from app.rag.tokens import TokenCounter
from app.settings import Settings

# Whether a caller may see every document an answer cited (``app.auth.access.may_see_all``).
SourcesVisible = Callable[[AsyncSession, uuid.UUID, AccessSet, list[str]], Awaitable[bool]]


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
        corpus_states: CorpusStates,
        retriever: Retriever,
        embedder: Embedder,
        reranker: Reranker,
        counter: TokenCounter,
        telemetry: Telemetry,
        sources_visible: SourcesVisible = may_see_all,
        rewriter: QueryRewriter | None = None,
    ) -> None:
        self._settings = settings
        self._rewriter = rewriter
        self._sources_visible = sources_visible
        self._unit_of_work = unit_of_work
        self._memory = memory
        self._cache = cache
        self._corpus_states = corpus_states
        self._counter = counter
        self._telemetry = telemetry
        self.retrieval = RetrievalStage(
            settings=settings, retriever=retriever, embedder=embedder, reranker=reranker, telemetry=telemetry
        )

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
        """``build_prompt``, inline when every passage has its stored token count and there is no
        history: then it tokenizes only the passages' short headings (the question was counted,
        and remembered, by ``validate``), which costs less than a hop to a thread
        (``scripts/benchmark_prompt.py``). Otherwise in a worker thread: tokenizing a long history
        or passages stored before their counts is CPU work (linear, bounded by the API's caps),
        and the token counter lets the event loop run meanwhile."""
        budget = self.prompt_budget(chat)
        fit = partial(
            build_prompt, chat.question, history, chunks, budget_tokens=budget, counter=self._counter
        )
        if not history and all(chunk.text_tokens is not None for chunk in chunks):
            return fit()
        return await anyio.to_thread.run_sync(fit)

    async def _history(self, db: AsyncSession, principal: Principal, chat: ChatInput) -> list[Turn]:
        if chat.session is None:
            return list(chat.history)
        async with self._telemetry.tracer.span("memory") as span:
            history = await self._memory.window(db, principal, chat.session)
            span.update(output={"turns": len(history)})
        return history

    async def _cached(
        self, db: AsyncSession, principal: Principal, chat: ChatInput, history: list[Turn]
    ) -> tuple[CacheKey | None, tuple[Outcome, list[Source]] | None]:
        """Where this turn's answer is cached, and the cached answer (as an outcome) with its
        sources, or None; never an answer citing a document this caller may not see (one warmed
        by a caller granted it personally). A hit reads PostgreSQL only when the tenant has
        access lists and the caller is no admin."""
        if not (self._cache.enabled and chat.shared_cache):
            return None, None
        parameters = _cache_parameters(chat, self.retrieval.reranker, self.retrieval.embedding_model)
        access = AccessSet.of(principal)
        parameters["access"] = access.cache_scope()  # the groups retrieval may see
        probe = self._cache.probe(principal.tenant_id, chat.question, parameters, _history_digest(history))
        if probe is None:
            return None, None
        async with self._telemetry.tracer.span("cache_lookup") as span:
            found = await self._cache.lookup(probe, partial(self._corpus_states, db, principal.tenant_id))
            hit = found.hit
            cited = [s.document_id for s in hit.answer.sources] if hit is not None else []
            checked = found.restricted and access.restricted
            if checked and not await self._sources_visible(db, principal.tenant_id, access, cited):
                hit = None
            span.update(output={"hit": hit is not None, "layer": hit.layer if hit else None})
        self._telemetry.metrics.cache_lookup(hit=hit is not None, layer=hit.layer if hit else "answer")
        if hit is None:
            return found.key, None
        cached = hit.answer
        outcome = Outcome(
            cached.answer, cached.provider, cached.model, cached.usage, TurnStatus.ok, cached=True
        )
        return found.key, (outcome, list(cached.sources))

    async def _retrieval_query(
        self, chat: ChatInput, history: list[Turn], chain: ProviderChain | None
    ) -> str:
        """The follow-up made standalone for retrieval (``CONVERSATION_REWRITE``)."""
        if self._rewriter is None:
            return chat.question
        return await self._rewriter(chat.question, history, chain)

    async def prepare(
        self,
        principal: Principal,
        chat: ChatInput,
        finisher: TurnFinisher,
        chain: ProviderChain | None = None,
    ) -> PreparedTurn:
        """The turn, routed or answered; an answered one is finished here by ``finisher``. A
        follow-up is searched as made standalone from ``history`` (``chain``: the request's own,
        for an LLM rewrite)."""
        trace_id = current_trace_id() or new_trace_id()
        started = time.perf_counter()
        async with self._unit_of_work() as db:
            history = await self._history(db, principal, chat)
            key, cached = await self._cached(db, principal, chat, history)
            searched = chat.question
            if cached is not None:
                outcome, sources = cached
            else:
                searched = await self._retrieval_query(chat, history, chain)
                chunks = await self.retrieval.search(
                    db, principal, chat, searched, judge_relevance=not history
                )
                if chunks:
                    prompt = await self._fit_prompt(chat, history, chunks)
                    sources = [source_for(n, chunk) for n, chunk in enumerate(prompt.passages, start=1)]
                    # No write: the read ends here, so no connection is held while the model
                    # answers.
                    await end_read(db)
                    return RoutedTurn(
                        trace_id, started, key, history, sources, prompt, retrieval_query=searched
                    )
                outcome, sources = Outcome(NO_CONTEXT_ANSWER, "none", "none", None, TurnStatus.ok), []
            turn = FixedTurn(trace_id, started, key, history, sources, outcome, retrieval_query=searched)
            finished = await finisher.finish(principal, chat, turn, outcome, streamed=False, db=db)
            await end_read(db)  # when the finisher had nothing to write
        return replace(turn, sources=finished.sources, cited=finished.cited)
