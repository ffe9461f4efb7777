"""The composition root. ``create_app`` builds the app: its error handlers, middleware
(``install_middleware``), routers (``include_routers``) and the MCP server, and a lifespan that
composes the process's capabilities into ``app.resources.Resources`` and disposes of them when it
ends.

Read ``compose`` top to bottom: each step opens one capability (``open_*``, ``start_*`` when it
holds something to close or load; ``build_*`` when it only wires objects together) and puts its
cleanup on the lifespan's exit stack, so shutdown runs the steps backwards: the MCP server stops
first, the database engine last. A step that refuses (no DATABASE_URL, stored vectors of another
model, a reranker without its model) ends the start before anything is served; what the earlier
steps opened is closed."""

from __future__ import annotations

import gc
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass

import httpx
import structlog
from fastapi import FastAPI
from fastapi.middleware.cors import CORSMiddleware
from redis.asyncio import Redis
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from app.api import chat as chat_api
from app.api import (
    documents,
    health,
    jobs,
    keys,
    me,
    openai_compat,
    rate_limit,
    service_limits,
    sessions,
    usage,
)
from app.api import feedback as feedback_api
from app.api import metrics as metrics_api
from app.api import providers as providers_api
from app.api.auth import AuthenticateFirstMiddleware
from app.api.mcp_server import mount_mcp
from app.api.middleware import EdgeMiddleware
from app.auth.authenticator import Authenticator
from app.auth.jwt import JwtVerifier
from app.cache.answers import AnswerCache
from app.cache.corpus import CorpusChanges, track_corpus_changes
from app.cache.repository import corpus_state, corpus_version
from app.chat.pipeline import Preparation
from app.chat.rewrite import QueryRewriter
from app.chat.service import ChatService
from app.db.engine import create_engine, create_read_sessions, create_session_factory
from app.db.migrations import head_revision
from app.db.readiness import ReadinessProbe
from app.db.redis import KeySpace, create_redis
from app.db.replicas import ReadSessions
from app.documents.runtime import start_documents_runtime
from app.errors import install_error_handlers
from app.feedback.ledger import RedisAnswerLedger
from app.feedback.service import FeedbackService
from app.limits.budgets import TokenBudgets, log_unpriced_models
from app.limits.limiter import RequestLimiter
from app.limits.streams import StreamSlots
from app.llm.chain import ProviderChain
from app.llm.factory import build_caller_chains, build_provider_chain
from app.llm.telemetry_observer import TelemetryRouterObserver
from app.memory.service import ConversationMemory
from app.memory.window import WindowStore
from app.observability.logging import configure_logging
from app.observability.metrics import DomainMetrics
from app.observability.telemetry import Telemetry, build_metrics, open_telemetry
from app.rag.embeddings import Embedder
from app.rag.runtime import RagRuntime, start_rag
from app.resources import Resources
from app.security.body_limit import BodyLimits
from app.security.proxies import TrustedProxies
from app.settings import Settings

logger = structlog.get_logger(__name__)


def create_app(settings: Settings | None = None, *, embedder: Embedder | None = None) -> FastAPI:
    """``embedder`` shares an already-loaded embedding model (tests); by default the lifespan
    creates the one the settings name."""
    settings = settings or Settings()
    configure_logging(settings)
    metrics = build_metrics(settings)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        async with AsyncExitStack() as stack:
            app.state.resources = await compose(stack, settings, metrics, embedder=embedder)
            # The MCP server at /mcp serves its requests in this task group; it stops first.
            await stack.enter_async_context(mcp_server.session_manager.run())
            # Everything built so far (models, tokenizers, metadata) lives as long as the worker:
            # kept out of the collector's generations, a full collection no longer walks it and
            # stops requests for tens of milliseconds (the p99 under load).
            gc.freeze()
            logger.info("app_started")
            yield
            logger.info("app_stopping")

    app = FastAPI(
        title="RAG chat API",
        version="0.1.0",
        lifespan=lifespan,
        description="Chat with your documents: retrieval over pgvector and a fail-over LLM router.",
    )
    install_error_handlers(app)
    install_middleware(app, settings)
    include_routers(app)
    mcp_server = mount_mcp(app)
    return app


def install_middleware(app: FastAPI, settings: Settings) -> None:
    """Each layer added wraps the ones before it: a request meets the edge layer first
    (``app.api.middleware``: ids, size limits, security and rate-limit headers, access log and
    HTTP metrics), then CORS, and authentication last."""
    # Innermost: authenticates /api/ requests from their headers before any body is read, inside
    # CORS so that a refusal carries the CORS headers a browser needs to read it.
    app.add_middleware(AuthenticateFirstMiddleware)
    if settings.cors_origins:
        app.add_middleware(
            CORSMiddleware,
            allow_origins=settings.cors_origins,
            allow_methods=["*"],
            allow_headers=["*"],
            expose_headers=["X-Request-ID", "X-Trace-ID"],
        )
    app.add_middleware(
        EdgeMiddleware,
        body_limits=BodyLimits(settings.max_request_body_bytes, settings.max_upload_bytes),
        proxies=TrustedProxies(tuple(settings.trusted_proxies)),
    )


# The app tries each router in this order until one matches: the chat surfaces, the hot path,
# come first. No two of them serve the same method and path, so the order changes nothing else.
ROUTERS = (
    chat_api.router,
    openai_compat.router,
    health.router,
    metrics_api.router,
    me.router,
    keys.router,
    rate_limit.router,
    usage.router,
    service_limits.router,
    documents.router,
    jobs.router,
    providers_api.router,
    sessions.router,
    feedback_api.router,
)


def include_routers(app: FastAPI) -> None:
    for router in ROUTERS:
        app.include_router(router)


async def compose(
    stack: AsyncExitStack, settings: Settings, metrics: DomainMetrics, *, embedder: Embedder | None = None
) -> Resources:
    """Every process-wide object, in the order they open; ``stack`` closes them in reverse."""
    stores = open_stores(stack, settings)
    limiter = open_limiter(stack, settings, stores, metrics)
    authenticator = open_authenticator(stack, settings, stores)
    telemetry = await stack.enter_async_context(
        open_telemetry(
            settings,
            metrics,
            engine=stores.engine,
            redis_pools={"main": stores.redis, "cache": stores.cache_redis},
        )
    )
    log_unpriced_models(settings)
    read_sessions = await open_read_sessions(stack, settings, stores, telemetry)
    rag = await start_rag(stack, settings, read_sessions, corpus_version=corpus_version, embedder=embedder)
    job_queue = await start_documents_runtime(
        stack, settings, stores.session_factory, rag.embedder, metrics=telemetry.metrics
    )
    provider_chain = await open_provider_chain(stack, settings, stores.redis, telemetry)
    conversation = build_conversation(settings, stores, telemetry)
    return Resources(
        settings=settings,
        engine=stores.engine,
        session_factory=stores.session_factory,
        read_sessions=read_sessions,
        redis=stores.redis,
        cache_redis=stores.cache_redis,
        readiness=ReadinessProbe(stores.engine, stores.redis, head_revision(), read_sessions=read_sessions),
        limiter=limiter,
        stream_slots=StreamSlots(
            stores.redis, stores.keys.key("streams", ""), settings.max_streams_per_principal
        ),
        authenticator=authenticator,
        telemetry=telemetry,
        embedder=rag.embedder,
        reranker=rag.reranker,
        job_queue=job_queue,
        provider_chain=provider_chain,
        caller_chains=build_caller_chains(settings, provider_chain),
        memory=conversation.memory,
        chat=build_chat(settings, stores, rag, provider_chain, conversation, telemetry, limiter),
        feedback=FeedbackService(
            ledger=conversation.ledger,
            unit_of_work=stores.session_factory,
            read_unit_of_work=read_sessions.session,
            telemetry=telemetry,
        ),
    )


@dataclass(frozen=True)
class Stores:
    """The primary database and the Redis servers (the cache's own when CACHE_REDIS_URL is set)."""

    engine: AsyncEngine
    session_factory: async_sessionmaker[AsyncSession]
    redis_url: str
    redis: Redis
    cache_redis: Redis
    keys: KeySpace


def open_stores(stack: AsyncExitStack, settings: Settings) -> Stores:
    if settings.database_url is None or settings.redis_url is None:
        raise RuntimeError(
            "create_app needs DATABASE_URL and REDIS_URL; `python -m app serve` starts embedded "
            "servers and sets them"
        )
    redis_url = settings.redis_url
    cache_url = settings.cache_redis_url or redis_url
    engine = create_engine(settings)
    stack.push_async_callback(engine.dispose)
    redis = create_redis(redis_url)
    stack.push_async_callback(redis.aclose)
    cache_redis = redis
    if cache_url != redis_url:
        cache_redis = create_redis(cache_url)
        stack.push_async_callback(cache_redis.aclose)
    keys = KeySpace(settings.redis_key_prefix)
    session_factory = create_session_factory(engine)
    # Document commits tell the answer cache's Redis, so cache hits need no PostgreSQL.
    track_corpus_changes(session_factory, CorpusChanges(cache_redis, keys))
    return Stores(engine, session_factory, redis_url, redis, cache_redis, keys)


def open_limiter(
    stack: AsyncExitStack, settings: Settings, stores: Stores, metrics: DomainMetrics
) -> RequestLimiter:
    """Request rate limits (RATE_LIMIT_*) and the token budgets, both in the main Redis."""
    limiter = RequestLimiter.from_settings(
        settings, stores.redis_url, stores.keys, on_refused=lambda budget: metrics.rate_limited(budget.value)
    )
    stack.push_async_callback(limiter.aclose)
    limiter.token_budgets = TokenBudgets(
        stores.redis, stores.keys.key("budgets", ""), settings, stores.session_factory
    )
    return limiter


def open_authenticator(stack: AsyncExitStack, settings: Settings, stores: Stores) -> Authenticator:
    """API keys, and bearer tokens when AUTH_JWKS_URL is set (its keys fetched over ``jwks_http``)."""
    jwks_http = httpx.AsyncClient(follow_redirects=False)
    stack.push_async_callback(jwks_http.aclose)
    verifier = JwtVerifier.from_settings(settings, jwks_http)
    return Authenticator(stores.session_factory, stores.redis, stores.keys, verifier)


async def open_read_sessions(
    stack: AsyncExitStack, settings: Settings, stores: Stores, telemetry: Telemetry
) -> ReadSessions:
    """Retrieval and read-only listings on DATABASE_REPLICA_URLS (the primary if none)."""
    read_sessions = create_read_sessions(settings, stores.engine, stores.session_factory, telemetry.metrics)
    stack.push_async_callback(read_sessions.aclose)
    await read_sessions.start()
    return read_sessions


async def open_provider_chain(
    stack: AsyncExitStack, settings: Settings, redis: Redis, telemetry: Telemetry
) -> ProviderChain:
    chain = build_provider_chain(settings, redis, observer=TelemetryRouterObserver(telemetry))
    stack.push_async_callback(chain.aclose)
    await chain.warm_up()
    return chain


@dataclass(frozen=True)
class Conversation:
    """What a conversation leaves behind: its turns (memory), cached answers, and who received
    which answer (the feedback ledger)."""

    ledger: RedisAnswerLedger
    memory: ConversationMemory
    cache: AnswerCache


def build_conversation(settings: Settings, stores: Stores, telemetry: Telemetry) -> Conversation:
    # Who received which answer, for feedback: in the main Redis (never the cache's LRU).
    ledger = RedisAnswerLedger(
        stores.redis, stores.keys, window_s=settings.feedback_window_seconds, metrics=telemetry.metrics
    )
    window = WindowStore(
        stores.redis,
        stores.keys,
        max_turns=settings.memory_max_turns,
        ttl_s=settings.memory_retention_days * 86400,
    )
    # A reset forgets the conversation's answers in the ledger too.
    memory = ConversationMemory(window, max_turns=settings.memory_max_turns, answers=ledger)
    cache = AnswerCache(
        stores.cache_redis, stores.keys, ttl_s=settings.cache_ttl_s, max_entries=settings.cache_max_entries
    )
    return Conversation(ledger=ledger, memory=memory, cache=cache)


def build_chat(
    settings: Settings,
    stores: Stores,
    rag: RagRuntime,
    chain: ProviderChain,
    conversation: Conversation,
    telemetry: Telemetry,
    limiter: RequestLimiter,
) -> ChatService:
    preparation = Preparation(
        settings=settings,
        unit_of_work=stores.session_factory,
        memory=conversation.memory,
        cache=conversation.cache,
        corpus_states=corpus_state,
        retriever=rag.retriever,
        embedder=rag.embedder,
        reranker=rag.reranker,
        counter=rag.counter,
        telemetry=telemetry,
        rewriter=QueryRewriter(settings, stores.redis, stores.keys, telemetry),  # CONVERSATION_REWRITE
    )
    return ChatService(
        settings=settings,
        preparation=preparation,
        chain=chain,
        memory=conversation.memory,
        cache=conversation.cache,
        unit_of_work=stores.session_factory,
        telemetry=telemetry,
        ledger=conversation.ledger,
        budgets=limiter.token_budgets,
    )
