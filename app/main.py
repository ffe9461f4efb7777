"""App factory. The lifespan owns every process-wide resource and disposes of it on shutdown."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager

import httpx
import structlog
from fastapi import FastAPI
from fastapi.middleware.cors import CORSMiddleware

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
from app.api.middleware import CorrelationMiddleware
from app.auth.authenticator import Authenticator
from app.auth.jwt import JwtVerifier
from app.cache.answers import AnswerCache
from app.cache.repository import corpus_version
from app.chat.pipeline import Preparation
from app.chat.rewrite import QueryRewriter
from app.chat.service import ChatService
from app.db.engine import create_engine, create_read_sessions, create_session_factory
from app.db.migrations import head_revision
from app.db.readiness import ReadinessProbe
from app.db.redis import KeySpace, create_redis
from app.documents.runtime import start_documents_runtime
from app.errors import install_error_handlers
from app.feedback.ledger import RedisAnswerLedger
from app.feedback.service import FeedbackService
from app.limits.budgets import TokenBudgets, log_unpriced_models
from app.limits.limiter import RequestLimiter
from app.limits.middleware import RateLimitHeadersMiddleware
from app.limits.streams import StreamSlots
from app.llm.factory import build_caller_chains, build_provider_chain
from app.llm.telemetry_observer import TelemetryRouterObserver
from app.memory.service import ConversationMemory
from app.memory.window import WindowStore
from app.observability.http import install_http_metrics
from app.observability.logging import configure_logging
from app.observability.telemetry import build_metrics, open_telemetry
from app.rag.embeddings import Embedder
from app.rag.replica_retrieval import ReplicaRetriever
from app.rag.rerank import open_reranker
from app.rag.retrieval import retrieve
from app.rag.tokens import WordPieceTokenCounter
from app.resources import Resources
from app.security.body_limit import BodySizeLimitMiddleware
from app.security.headers import SecurityHeadersMiddleware
from app.security.proxies import TrustedProxies
from app.security.request_limits import RequestSizeLimitMiddleware
from app.settings import Settings

logger = structlog.get_logger(__name__)


def _require_urls(settings: Settings) -> tuple[str, str, str]:
    if settings.database_url is None or settings.redis_url is None:
        raise RuntimeError(
            "create_app needs DATABASE_URL and REDIS_URL; `python -m app serve` starts embedded "
            "servers and sets them"
        )
    return settings.database_url, settings.redis_url, settings.cache_redis_url or settings.redis_url


def create_app(settings: Settings | None = None, *, embedder: Embedder | None = None) -> FastAPI:
    """``embedder`` shares an already-loaded embedding model (tests); by default the lifespan
    creates the one the settings name."""
    settings = settings or Settings()
    configure_logging(settings)
    metrics = build_metrics(settings)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        _, redis_url, cache_url = _require_urls(settings)
        async with AsyncExitStack() as stack:
            engine = create_engine(settings)
            stack.push_async_callback(engine.dispose)
            redis = create_redis(redis_url)
            stack.push_async_callback(redis.aclose)
            cache_redis = redis
            if cache_url != redis_url:
                cache_redis = create_redis(cache_url)
                stack.push_async_callback(cache_redis.aclose)
            keys = KeySpace(settings.redis_key_prefix)
            limiter = RequestLimiter.from_settings(
                settings, redis_url, keys, on_refused=lambda budget: metrics.rate_limited(budget.value)
            )
            stack.push_async_callback(limiter.aclose)
            jwks_http = httpx.AsyncClient(follow_redirects=False)
            stack.push_async_callback(jwks_http.aclose)
            telemetry = await stack.enter_async_context(
                open_telemetry(
                    settings, metrics, engine=engine, redis_pools={"main": redis, "cache": cache_redis}
                )
            )
            session_factory = create_session_factory(engine)
            limiter.token_budgets = TokenBudgets(redis, keys.key("budgets", ""), settings, session_factory)
            log_unpriced_models(settings)
            # Retrieval and read-only listings on DATABASE_REPLICA_URLS (the primary if none).
            read_sessions = create_read_sessions(settings, engine, session_factory, telemetry.metrics)
            stack.push_async_callback(read_sessions.aclose)
            await read_sessions.start()
            reranker = await open_reranker(settings, stack)
            docs_runtime = await start_documents_runtime(
                stack, settings, session_factory, embedder=embedder, metrics=telemetry.metrics
            )
            provider_chain = build_provider_chain(
                settings, redis, observer=TelemetryRouterObserver(telemetry)
            )
            stack.push_async_callback(provider_chain.aclose)
            await provider_chain.warm_up()
            # Who received which answer, for feedback: in the main Redis (never the cache's LRU).
            ledger = RedisAnswerLedger(
                redis, keys, window_s=settings.feedback_window_seconds, metrics=telemetry.metrics
            )
            memory = ConversationMemory(
                WindowStore(
                    redis,
                    keys,
                    max_turns=settings.memory_max_turns,
                    ttl_s=settings.memory_retention_days * 86400,
                ),
                max_turns=settings.memory_max_turns,
                answers=ledger,  # a reset forgets the conversation's answers there too
            )
            cache = AnswerCache(
                cache_redis, keys, ttl_s=settings.cache_ttl_s, max_entries=settings.cache_max_entries
            )
            preparation = Preparation(
                settings=settings,
                unit_of_work=session_factory,
                memory=memory,
                cache=cache,
                corpus_versions=corpus_version,
                retriever=ReplicaRetriever(read_sessions, retrieve, corpus_version)
                if read_sessions.configured
                else retrieve,
                embedder=docs_runtime.embedder,
                reranker=reranker,
                counter=WordPieceTokenCounter(settings.embedding_tokenizer_path),
                telemetry=telemetry,
                rewriter=QueryRewriter(settings, redis, keys, telemetry),  # CONVERSATION_REWRITE
            )
            chat = ChatService(
                settings=settings,
                preparation=preparation,
                chain=provider_chain,
                memory=memory,
                cache=cache,
                unit_of_work=session_factory,
                telemetry=telemetry,
                ledger=ledger,
                budgets=limiter.token_budgets,
            )
            app.state.resources = Resources(
                settings=settings,
                engine=engine,
                session_factory=session_factory,
                read_sessions=read_sessions,
                redis=redis,
                cache_redis=cache_redis,
                readiness=ReadinessProbe(engine, redis, head_revision(), read_sessions=read_sessions),
                limiter=limiter,
                stream_slots=StreamSlots(redis, keys.key("streams", ""), settings.max_streams_per_principal),
                authenticator=Authenticator(
                    session_factory, redis, keys, JwtVerifier.from_settings(settings, jwks_http)
                ),
                telemetry=telemetry,
                embedder=docs_runtime.embedder,
                reranker=reranker,
                job_queue=docs_runtime.job_queue,
                provider_chain=provider_chain,
                caller_chains=build_caller_chains(settings, provider_chain),
                memory=memory,
                chat=chat,
                feedback=FeedbackService(
                    ledger=ledger,
                    unit_of_work=session_factory,
                    read_unit_of_work=read_sessions.session,
                    telemetry=telemetry,
                ),
            )
            # The MCP server at /mcp serves its requests in this task group; it stops first.
            await stack.enter_async_context(mcp_server.session_manager.run())
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
    # Innermost: authenticates /api/ requests from their headers before any body is read.
    app.add_middleware(AuthenticateFirstMiddleware)
    if settings.cors_origins:
        app.add_middleware(
            CORSMiddleware,
            allow_origins=settings.cors_origins,
            allow_methods=["*"],
            allow_headers=["*"],
            expose_headers=["X-Request-ID", "X-Trace-ID"],
        )
    app.add_middleware(RateLimitHeadersMiddleware)
    app.add_middleware(
        BodySizeLimitMiddleware,
        max_bytes=settings.max_request_body_bytes,
        upload_max_bytes=settings.max_upload_bytes,
    )
    app.add_middleware(SecurityHeadersMiddleware, proxies=TrustedProxies(tuple(settings.trusted_proxies)))
    install_http_metrics(app, metrics)
    # Oversized URLs and headers are refused (414/431) before any other layer works on them,
    # inside the correlation layer so that the problem carries a trace id and is logged.
    app.add_middleware(RequestSizeLimitMiddleware)
    app.add_middleware(CorrelationMiddleware)
    app.include_router(health.router)
    app.include_router(metrics_api.router)
    app.include_router(me.router)
    app.include_router(keys.router)
    app.include_router(rate_limit.router)
    app.include_router(usage.router)
    app.include_router(service_limits.router)
    app.include_router(documents.router)
    app.include_router(jobs.router)
    app.include_router(providers_api.router)
    app.include_router(chat_api.router)
    app.include_router(sessions.router)
    app.include_router(feedback_api.router)
    app.include_router(openai_compat.router)
    mcp_server = mount_mcp(app)
    return app
