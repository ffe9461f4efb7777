"""The capabilities the app's lifespan composes (``app.main``) and disposes of when it ends.

Endpoints never see this object: each takes the one capability it uses through its own
dependency (``app.api.deps``). Only the ASGI layers that run outside dependency injection (the
authentication middleware, the MCP server) read it, through ``app.api.deps.resources_of``."""

from __future__ import annotations

from dataclasses import dataclass

from redis.asyncio import Redis
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from app.auth.authenticator import Authenticator
from app.chat.service import ChatService
from app.db.readiness import ReadinessProbe
from app.db.replicas import ReadSessions
from app.documents.queue import JobQueue
from app.feedback.service import FeedbackService
from app.limits.limiter import RequestLimiter
from app.limits.streams import StreamSlots
from app.llm.caller_keys import CallerChains
from app.llm.chain import ProviderChain
from app.memory.service import ConversationMemory
from app.observability.telemetry import Telemetry
from app.rag.embeddings import Embedder
from app.rag.rerank import Reranker
from app.settings import Settings


@dataclass(frozen=True)
class Resources:
    settings: Settings
    engine: AsyncEngine
    session_factory: async_sessionmaker[AsyncSession]
    read_sessions: ReadSessions  # read-only queries: a healthy replica, else the primary
    redis: Redis
    cache_redis: Redis
    readiness: ReadinessProbe
    limiter: RequestLimiter
    stream_slots: StreamSlots
    authenticator: Authenticator
    telemetry: Telemetry
    embedder: Embedder
    reranker: Reranker  # RERANKER: the rerank stage the chat pipeline and the MCP search share
    job_queue: JobQueue
    provider_chain: ProviderChain
    caller_chains: CallerChains  # per-request chains with the callers' own provider keys
    memory: ConversationMemory
    chat: ChatService
    feedback: FeedbackService
