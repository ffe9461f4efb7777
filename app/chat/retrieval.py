"""The retrieval stage, one for every way of reading the documents: the chat pipeline runs it to
ground an answer, the MCP ``search_documents`` tool to return passages. It embeds the question
(remembering recent query vectors), searches under a ``retrieval`` span timed in
``vector_search_duration_seconds``, reranks (``app.rag.rerank.rerank_stage``) and counts suspected
prompt injection in the question and the passages found (``prompt_injection_flags_total``)."""

from __future__ import annotations

import asyncio
import time

import structlog
from cachetools import LRUCache
from sqlalchemy.ext.asyncio import AsyncSession

from app.auth.access import AccessSet
from app.auth.principal import Principal
from app.cache.answers import normalise_question
from app.chat.ports import Retriever
from app.chat.types import ChatInput
from app.observability.metrics.domain import DomainMetrics
from app.observability.telemetry import Telemetry
from app.rag.embeddings import Embedder
from app.rag.query import RetrievalMode, RetrievalQuery, RetrievedChunk
from app.rag.relevance import relevance_gate
from app.rag.rerank import Reranker, rerank_stage, retrieval_depth
from app.security.injection import detect_injection
from app.settings import Settings

logger = structlog.get_logger(__name__)

QUERY_VECTORS_KEPT = 2048
# A vector is kept as a tuple of floats: the collector stops tracking such a tuple, where a full
# collection walks every element of every list. With a few hundred list vectors kept, each full
# collection took 41-56 ms of CPU, stalling every request on the worker; 5-14 ms with tuples.
QueryVector = tuple[float, ...]


def flag_injection(question: str, chunks: list[RetrievedChunk], metrics: DomainMetrics) -> None:
    """Log and count suspected prompt injection. Nothing is blocked: the question is the user's
    own, and retrieved text reaches the model only as escaped, quoted data under instructions that
    say so (``app.rag.prompt.quote_data``). A passage's flags were found at ingestion
    (``RetrievedChunk.injection_flags``); only a chunk stored before that is scanned here."""
    question_flags = detect_injection(question)
    if question_flags:
        logger.warning("prompt_injection_suspected", source="question", flags=question_flags)
        metrics.prompt_injection("question", question_flags)
    for chunk in chunks:
        flags = detect_injection(chunk.text) if chunk.injection_flags is None else list(chunk.injection_flags)
        if flags:
            metrics.prompt_injection("retrieved_chunk", flags)
            logger.warning(
                "prompt_injection_suspected",
                source="retrieved_chunk",
                chunk_id=chunk.chunk_id,
                document_id=str(chunk.document_id),
                flags=flags,
            )


def _settle(embedding: asyncio.Future[QueryVector]) -> None:
    """An embedding the search did not wait for (it failed first) is cancelled; one that failed
    unawaited has its error taken, so asyncio does not log it as never retrieved."""
    if not embedding.done():
        embedding.cancel()
    elif not embedding.cancelled():
        embedding.exception()


class RetrievalStage:
    def __init__(
        self,
        *,
        settings: Settings,
        retriever: Retriever,
        embedder: Embedder,
        reranker: Reranker,
        telemetry: Telemetry,
    ) -> None:
        self._settings = settings
        self._retriever = retriever
        self._embedder = embedder
        self._reranker = reranker
        self._telemetry = telemetry
        self._query_vectors: LRUCache[str, QueryVector] = LRUCache(maxsize=QUERY_VECTORS_KEPT)

    @property
    def embedding_model(self) -> str:
        return self._embedder.model_name

    @property
    def reranker(self) -> Reranker:
        return self._reranker

    async def _embed_query(self, question: str) -> QueryVector:
        key = f"{self._embedder.model_name}\0{normalise_question(question)}"
        vector = self._query_vectors.get(key)
        if vector is None:
            started = time.perf_counter()
            async with self._telemetry.tracer.span("embedding", kind="embedding", input=question):
                vector = tuple(await self._embedder.embed_query(question))
            elapsed = time.perf_counter() - started
            self._telemetry.metrics.embedding(elapsed, self._settings.embedding_provider)
            self._query_vectors[key] = vector
        return vector

    def _query(
        self,
        principal: Principal,
        chat: ChatInput,
        text: str,
        vector: asyncio.Future[QueryVector] | None,
    ) -> RetrievalQuery:
        return RetrievalQuery(
            tenant_id=principal.tenant_id,
            text=text,
            vector=None,
            pending_vector=vector,
            # With a reranker: its candidates, of which it keeps chat.top_k.
            top_k=retrieval_depth(self._reranker, chat.top_k, self._settings.reranker_candidates),
            mode=chat.mode,
            filters=chat.filters,
            vector_weight=chat.vector_weight,
            text_weight=chat.text_weight,
            ef_search=self._settings.hnsw_ef_search,
            min_similarity=self._settings.retrieval_min_similarity,
            access=AccessSet.of(principal).grants,  # enforced in the search's SQL
        )

    async def search(
        self,
        db: AsyncSession,
        principal: Principal,
        chat: ChatInput,
        query: str | None = None,
        *,
        judge_relevance: bool = True,
    ) -> list[RetrievedChunk]:
        """The ``chat.top_k`` passages of ``principal``'s tenant that best match ``query`` (the
        question unless a follow-up was made standalone), searched on ``db`` (or on a read replica
        as fresh as it: ``app.rag.replica_retrieval``)."""
        tracer, metrics = self._telemetry.tracer, self._telemetry.metrics
        searched = chat.question if query is None else query
        # The question is embedded (in a thread) while the search sends the statements that
        # need no vector (``ChunkSearchRepository``: the settings, the full-text search).
        vector = None
        if chat.mode is not RetrievalMode.text:
            vector = asyncio.ensure_future(self._embed_query(searched))
        span_input = {"query": searched, "mode": chat.mode.value}
        try:
            async with tracer.span("retrieval", kind="retriever", input=span_input) as span:
                with metrics.vector_search_timer(chat.mode.value):
                    chunks = await self._retriever(db, self._query(principal, chat, searched, vector))
                # The relevance gate (``app.rag.relevance``): passages with no evidence of bearing
                # on what was searched are dropped, so a chat turn gets the "nothing matches"
                # answer. Not for a follow-up (``judge_relevance`` False): its thresholds were
                # calibrated on questions asked alone, not on follow-ups made standalone.
                relevant = not judge_relevance or relevance_gate(self._settings).admits(chunks, chat.mode)
                span.update(output={"chunks": [c.chunk_id for c in chunks], "relevant": relevant})
                chunks = chunks if relevant else []
        finally:
            if vector is not None:
                _settle(vector)
        chunks = await rerank_stage(self._reranker, searched, chunks, chat.top_k, self._telemetry)
        flag_injection(chat.question, chunks, metrics)
        return chunks
