"""The chat pipeline: answer cache → memory → query embedding → retrieval → prompt → router.

``ChatService.answer`` returns one ``ChatAnswer``; ``ChatService.stream`` yields typed events the
HTTP layer renders as SSE. Both record the turn in conversation memory with exactly the text and
sources the client received, and both are served from the answer cache when possible.
"""

from __future__ import annotations

import hashlib
import json
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import asdict, dataclass, field
from typing import Any

import anyio
import structlog
from cachetools import LRUCache

from app.auth.principal import Principal
from app.cache.answers import AnswerCache, CacheKey, normalise_question
from app.llm.chain import ProviderChain
from app.llm.types import (
    ChatRequest,
    Message,
    Passage,
    StreamEnd,
    StreamFailed,
    StreamStart,
    TextDelta,
    Usage,
)
from app.memory.service import ConversationMemory
from app.observability.context import current_trace_id, new_trace_id
from app.observability.metrics.domain import DomainMetrics
from app.observability.telemetry import Telemetry
from app.rag.citations import cited_numbers
from app.rag.embeddings import Embedder
from app.rag.prompt import Prompt, Turn, bare_prompt_tokens, build_prompt, prompt_budget
from app.rag.retrieval import (
    RetrievalFilters,
    RetrievalMode,
    RetrievalQuery,
    RetrievedChunk,
    SessionFactory,
    retrieve,
)
from app.rag.tokens import TokenCounter
from app.security.injection import detect_injection
from app.settings import Settings

logger = structlog.get_logger(__name__)

NO_CONTEXT_ANSWER = (
    "I don't know from your documents: nothing in them matches this question. "
    "Try rephrasing it, or upload a document that covers it."
)
SNIPPET_CHARS = 300
EXTRACTIVE = "extractive"


@dataclass(frozen=True)
class ChatInput:
    question: str
    # The client's session id (``app.memory.service.SessionId``); a UUID is read as its text.
    session_id: str | uuid.UUID | None = None
    model: str | None = None
    temperature: float | None = None
    max_tokens: int | None = None
    top_k: int = 5
    filters: RetrievalFilters = field(default_factory=RetrievalFilters)
    mode: RetrievalMode = RetrievalMode.hybrid
    vector_weight: float = 1.0
    text_weight: float = 1.0
    # Earlier turns a stateless client sends itself (the OpenAI-compatible surface); a stored
    # session's window replaces them when ``session_id`` is given.
    history: tuple[Turn, ...] = ()

    @property
    def session(self) -> str | None:
        """The session id as memory, responses and traces use it (scoped by memory, not here)."""
        return None if self.session_id is None else str(self.session_id)


@dataclass(frozen=True)
class Source:
    number: int
    document_id: str
    version: int
    title: str
    page: int
    chunk_id: int
    score: float
    snippet: str
    tags: list[str]
    cited: bool = False


@dataclass(frozen=True)
class ChatAnswer:
    answer: str
    sources: list[Source]
    provider: str
    model: str
    cached: bool
    degraded: bool
    trace_id: str
    usage: dict[str, int] | None
    latency_ms: float
    session_id: str | None


# --- stream events (rendered as SSE by the API layer) ---------------------------------------------


@dataclass(frozen=True)
class SourcesEvent:
    sources: list[Source]


@dataclass(frozen=True)
class DeltaEvent:
    text: str


@dataclass(frozen=True)
class DoneEvent:
    provider: str
    model: str
    usage: dict[str, int] | None
    trace_id: str
    cached: bool
    degraded: bool
    cited: list[int]
    latency_ms: float
    session_id: str | None


@dataclass(frozen=True)
class ErrorEvent:
    code: str
    message: str
    trace_id: str


ChatEvent = SourcesEvent | DeltaEvent | DoneEvent | ErrorEvent


@dataclass(frozen=True)
class _Prepared:
    trace_id: str
    started: float
    cache_key: CacheKey | None
    cached: dict[str, Any] | None
    history: list[Turn]
    prompt: Prompt | None  # None: nothing retrieved, answer without the router
    sources: list[Source]


def _usage_dict(usage: Usage | None) -> dict[str, int] | None:
    if usage is None:
        return None
    return {
        "prompt_tokens": usage.prompt_tokens,
        "completion_tokens": usage.completion_tokens,
        "total_tokens": usage.total_tokens,
    }


def _source(number: int, chunk: RetrievedChunk) -> Source:
    snippet = chunk.text if len(chunk.text) <= SNIPPET_CHARS else chunk.text[: SNIPPET_CHARS - 1] + "…"
    return Source(
        number=number,
        document_id=str(chunk.document_id),
        version=chunk.version,
        title=chunk.title,
        page=chunk.page,
        chunk_id=chunk.chunk_id,
        score=round(chunk.score, 6),
        snippet=snippet,
        tags=list(chunk.tags),
    )


def _mark_cited(sources: list[Source], answer: str) -> tuple[list[Source], list[int]]:
    cited = cited_numbers(answer, len(sources))
    marked = [Source(**{**asdict(s), "cited": s.number in cited}) for s in sources]
    return marked, cited


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


class ChatService:
    def __init__(
        self,
        *,
        settings: Settings,
        sessions: SessionFactory,
        embedder: Embedder,
        chain: ProviderChain,
        memory: ConversationMemory,
        cache: AnswerCache,
        counter: TokenCounter,
        telemetry: Telemetry | None = None,
    ) -> None:
        self._settings = settings
        self._sessions = sessions
        self._embedder = embedder
        self._chain = chain
        self._memory = memory
        self._cache = cache
        self._counter = counter
        self._telemetry = telemetry or Telemetry.disabled()
        self._query_vectors: LRUCache[str, list[float]] = LRUCache(maxsize=2048)

    # --- preparation shared by both paths --------------------------------------------------------

    def validate(self, chat: ChatInput) -> None:
        """Checks that must fail as a 4xx before any streaming starts (and before retrieval)."""
        self._chain.routes(chat.model)  # raises UnknownModelError (422) for an unknown pin
        # 422 invalid_max_tokens / question_too_long, naming the numbers, before any work is done
        build_prompt(chat.question, [], [], budget_tokens=self._prompt_budget(chat), counter=self._counter)

    def _prompt_budget(self, chat: ChatInput) -> int:
        answer_tokens = chat.max_tokens or self._settings.answer_max_tokens
        return prompt_budget(
            self._settings.prompt_budget_tokens, answer_tokens, bare_prompt_tokens(self._counter)
        )

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

    def _cache_parameters(self, chat: ChatInput) -> dict[str, Any]:
        return {
            "model": chat.model,
            "temperature": chat.temperature,
            "max_tokens": chat.max_tokens,
            "top_k": chat.top_k,
            "tags": sorted(chat.filters.tags),
            "documents": sorted(str(d) for d in chat.filters.document_ids),
            "mode": chat.mode.value,
            "weights": [chat.vector_weight, chat.text_weight],
        }

    async def _prepare(self, principal: Principal, chat: ChatInput) -> _Prepared:
        trace_id = current_trace_id() or new_trace_id()
        started = time.perf_counter()
        tracer, metrics = self._telemetry.tracer, self._telemetry.metrics
        history: list[Turn] = list(chat.history)
        if chat.session is not None:
            async with tracer.span("memory") as span:
                history = await self._memory.window(principal, chat.session)
                span.update(output={"turns": len(history)})
        context = ""
        if history:
            context = hashlib.sha256(json.dumps([asdict(t) for t in history]).encode()).hexdigest()
        cache_key = await self._cache.key_for(
            principal.tenant_id, chat.question, self._cache_parameters(chat), context
        )
        if cache_key is not None:
            async with tracer.span("cache_lookup") as span:
                hit = await self._cache.get(cache_key)
                span.update(output={"hit": hit is not None, "layer": hit[1] if hit else None})
            metrics.cache_lookup(hit=hit is not None, layer=hit[1] if hit else "answer")
            if hit is not None:
                payload, _layer = hit
                sources = [Source(**s) for s in payload["sources"]]
                return _Prepared(trace_id, started, cache_key, payload, history, None, sources)
        vector = None
        if chat.mode is not RetrievalMode.text:
            vector = await self._embed_query(chat.question)
        retrieval_span = tracer.span(
            "retrieval", kind="retriever", input={"query": chat.question, "mode": chat.mode.value}
        )
        async with retrieval_span as span:
            with metrics.vector_search_timer(chat.mode.value):
                chunks = await self._retrieve(principal, chat, vector)
            span.update(output={"chunks": [c.chunk_id for c in chunks]})
        _flag_injection(chat.question, chunks, metrics)
        if not chunks:
            return _Prepared(trace_id, started, cache_key, None, history, None, [])
        budget = self._prompt_budget(chat)
        prompt = build_prompt(chat.question, history, chunks, budget_tokens=budget, counter=self._counter)
        sources = [_source(n, chunk) for n, chunk in enumerate(prompt.passages, start=1)]
        return _Prepared(trace_id, started, cache_key, None, history, prompt, sources)

    async def _retrieve(
        self, principal: Principal, chat: ChatInput, vector: list[float] | None
    ) -> list[RetrievedChunk]:
        return await retrieve(
            self._sessions,
            RetrievalQuery(
                tenant_id=principal.tenant_id,
                text=chat.question,
                vector=vector,
                top_k=chat.top_k,
                mode=chat.mode,
                filters=chat.filters,
                vector_weight=chat.vector_weight,
                text_weight=chat.text_weight,
                ef_search=self._settings.hnsw_ef_search,
                min_similarity=self._settings.retrieval_min_similarity,
            ),
        )

    def _router_request(self, chat: ChatInput, prompt: Prompt) -> ChatRequest:
        return ChatRequest(
            messages=tuple(Message(m.role, m.content) for m in prompt.messages),
            passages=tuple(
                Passage(number=n, text=c.text, title=c.title, page=c.page)
                for n, c in enumerate(prompt.passages, start=1)
            ),
            temperature=chat.temperature,
            max_tokens=chat.max_tokens or self._settings.answer_max_tokens,
            model=chat.model,
        )

    def _cacheable(self, provider: str, degraded: bool) -> bool:
        if degraded or provider == "none":
            return False
        if provider != EXTRACTIVE:
            return True
        # Quoting passages is a fallback while generators are down: don't pin it in the cache.
        return not any(
            link.provider.availability().configured for link in self._chain.links if link.name != EXTRACTIVE
        )

    async def _remember(
        self,
        principal: Principal,
        chat: ChatInput,
        *,
        answer: str,
        sources: list[Source],
        status: str,
        provider: str,
        model: str,
        trace_id: str,
    ) -> None:
        if chat.session is None:
            return
        await self._memory.record_turn(
            principal,
            chat.session,
            question=chat.question,
            answer=answer,
            sources=[asdict(s) for s in sources],
            status=status,
            provider=provider,
            model=model,
            trace_id=trace_id,
        )

    def _elapsed_ms(self, prepared: _Prepared) -> float:
        return round((time.perf_counter() - prepared.started) * 1000, 2)

    # --- one-shot answers ------------------------------------------------------------------------

    def _trace(self, principal: Principal, chat: ChatInput, *, stream: bool) -> Any:
        return self._telemetry.tracer.trace(
            "chat",
            input={"question": chat.question},
            metadata={"stream": stream, "top_k": chat.top_k, "mode": chat.mode.value, "model": chat.model},
            user_id=principal.id,
            session_id=chat.session,
        )

    async def answer(self, principal: Principal, chat: ChatInput) -> ChatAnswer:
        self.validate(chat)
        async with self._trace(principal, chat, stream=False) as trace:
            result = await self._answer(principal, chat)
            trace.update(output=result.answer)
        return result

    async def _answer(self, principal: Principal, chat: ChatInput) -> ChatAnswer:
        prepared = await self._prepare(principal, chat)
        session = chat.session
        if prepared.cached is not None:
            payload = prepared.cached
            result = ChatAnswer(
                answer=payload["answer"],
                sources=prepared.sources,
                provider=payload["provider"],
                model=payload["model"],
                cached=True,
                degraded=False,
                trace_id=prepared.trace_id,
                usage=payload.get("usage"),
                latency_ms=self._elapsed_ms(prepared),
                session_id=session,
            )
        elif prepared.prompt is None:
            result = ChatAnswer(
                answer=NO_CONTEXT_ANSWER,
                sources=[],
                provider="none",
                model="none",
                cached=False,
                degraded=False,
                trace_id=prepared.trace_id,
                usage=None,
                latency_ms=self._elapsed_ms(prepared),
                session_id=session,
            )
        else:
            request = self._router_request(chat, prepared.prompt)
            async with self._telemetry.tracer.generation(
                "generation", model=chat.model, input=[m.__dict__ for m in request.messages]
            ) as generation:
                completion = await self._chain.complete(request)
                generation.update(output=completion.text, usage=_usage_dict(completion.usage))
            sources, _ = _mark_cited(prepared.sources, completion.text)
            result = ChatAnswer(
                answer=completion.text,
                sources=sources,
                provider=completion.provider,
                model=completion.model,
                cached=False,
                degraded=completion.degraded,
                trace_id=prepared.trace_id,
                usage=_usage_dict(completion.usage),
                latency_ms=self._elapsed_ms(prepared),
                session_id=session,
            )
            if prepared.cache_key is not None and self._cacheable(result.provider, result.degraded):
                await self._cache.put(prepared.cache_key, self._cache_payload(result))
        await self._remember(
            principal,
            chat,
            answer=result.answer,
            sources=result.sources,
            status="failed" if result.degraded else "ok",
            provider=result.provider,
            model=result.model,
            trace_id=result.trace_id,
        )
        return result

    @staticmethod
    def _cache_payload(result: ChatAnswer) -> dict[str, Any]:
        return {
            "answer": result.answer,
            "sources": [asdict(s) for s in result.sources],
            "provider": result.provider,
            "model": result.model,
            "usage": result.usage,
        }

    # --- streaming -------------------------------------------------------------------------------

    async def stream(self, principal: Principal, chat: ChatInput) -> AsyncIterator[ChatEvent]:
        """Events: ``SourcesEvent`` first, ``DeltaEvent``s, then ``DoneEvent`` or ``ErrorEvent``.

        Call ``validate`` before starting the HTTP response so bad input is still a 4xx.
        """
        # Spans cannot stay open across yields (each chunk is produced in its own task), so the
        # trace covers the preparation and the generation is recorded once the stream ends.
        async with self._trace(principal, chat, stream=True):
            prepared = await self._prepare(principal, chat)
        session = chat.session
        if prepared.cached is not None or prepared.prompt is None:
            async for fixed in self._stream_fixed(principal, chat, prepared, session):
                yield fixed
            return

        yield SourcesEvent(prepared.sources)
        streamed: list[str] = []
        provider, model, status = "none", "none", "cancelled"
        try:
            async for event in self._chain.stream(self._router_request(chat, prepared.prompt)):
                if isinstance(event, StreamStart):
                    provider, model = event.provider, event.model
                elif isinstance(event, TextDelta):
                    streamed.append(event.text)
                    yield DeltaEvent(event.text)
                elif isinstance(event, StreamEnd):
                    status = "failed" if event.degraded else "ok"
                    answer = "".join(streamed)
                    sources, cited = _mark_cited(prepared.sources, answer)
                    done = DoneEvent(
                        provider=event.provider,
                        model=event.model,
                        usage=_usage_dict(event.usage),
                        trace_id=prepared.trace_id,
                        cached=False,
                        degraded=event.degraded,
                        cited=cited,
                        latency_ms=self._elapsed_ms(prepared),
                        session_id=session,
                    )
                    if prepared.cache_key is not None and self._cacheable(event.provider, event.degraded):
                        await self._cache.put(
                            prepared.cache_key,
                            {
                                "answer": answer,
                                "sources": [asdict(s) for s in sources],
                                "provider": event.provider,
                                "model": event.model,
                                "usage": done.usage,
                            },
                        )
                    yield done
                elif isinstance(event, StreamFailed):
                    status = "failed"
                    yield ErrorEvent(code=event.code, message=event.message, trace_id=prepared.trace_id)
        finally:
            # Runs on success, failure and client disconnect (cancellation): shield the write so
            # history holds exactly what the client was sent, and how it ended.
            self._telemetry.tracer.record_generation(
                "generation",
                model=model,
                output="".join(streamed),
                metadata={"provider": provider, "status": status, "stream": True},
            )
            with anyio.CancelScope(shield=True):
                await self._remember(
                    principal,
                    chat,
                    answer="".join(streamed),
                    sources=prepared.sources,
                    status=status,
                    provider=provider,
                    model=model,
                    trace_id=prepared.trace_id,
                )

    async def _stream_fixed(
        self, principal: Principal, chat: ChatInput, prepared: _Prepared, session: str | None
    ) -> AsyncIterator[ChatEvent]:
        """A cache hit or a no-context answer, as a short stream."""
        if prepared.cached is not None:
            payload = prepared.cached
            answer, provider, model = payload["answer"], payload["provider"], payload["model"]
            usage, cached = payload.get("usage"), True
        else:
            answer, provider, model, usage, cached = NO_CONTEXT_ANSWER, "none", "none", None, False
        yield SourcesEvent(prepared.sources)
        yield DeltaEvent(answer)
        await self._remember(
            principal,
            chat,
            answer=answer,
            sources=prepared.sources,
            status="ok",
            provider=provider,
            model=model,
            trace_id=prepared.trace_id,
        )
        yield DoneEvent(
            provider=provider,
            model=model,
            usage=usage,
            trace_id=prepared.trace_id,
            cached=cached,
            degraded=False,
            cited=[s.number for s in prepared.sources if s.cited],
            latency_ms=self._elapsed_ms(prepared),
            session_id=session,
        )
