"""Typed dependencies, one per capability (``MemoryDep``, ``ChainDep``, ``LimiterDep``, …):
an endpoint names exactly what it uses. The lifespan (``app.main``) composes the capabilities.

The request's DB session commits when the endpoint returns normally and rolls back on any
exception; services never commit themselves. The session dependency has ``scope="function"``:
its exit (the commit) runs when the endpoint returns, *before* the response is sent. A write is
durable before the client hears "200/202", and a commit that fails becomes a problem response
instead of a success the database never kept.

Every dependency here is ``async def``: FastAPI runs a plain ``def`` dependency in a worker
thread, a thread hop per dependency per request for what is an attribute read."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Annotated, cast

from fastapi import Depends, FastAPI, Request
from sqlalchemy.ext.asyncio import AsyncSession
from starlette.types import ASGIApp

from app.auth.authenticator import Authenticator
from app.chat.service import ChatService
from app.db.readiness import ReadinessProbe
from app.documents.queue import JobQueue
from app.feedback.service import FeedbackService
from app.limits.limiter import RequestLimiter
from app.limits.streams import StreamSlots
from app.llm.caller_keys import CallerChains
from app.llm.chain import ProviderChain
from app.memory.service import ConversationMemory
from app.observability.telemetry import Telemetry
from app.resources import Resources
from app.settings import Settings


def resources_of(app: ASGIApp | FastAPI) -> Resources:
    """The composed capabilities, for the ASGI layers that run outside dependency injection."""
    return cast(Resources, cast(FastAPI, app).state.resources)


def _resources(request: Request) -> Resources:
    return resources_of(request.app)


async def get_settings(request: Request) -> Settings:
    return _resources(request).settings


async def get_session(request: Request) -> AsyncIterator[AsyncSession]:
    async with _resources(request).session_factory() as session:
        try:
            yield session
            await session.commit()
        except BaseException:
            await session.rollback()
            raise


async def get_read_session(request: Request) -> AsyncIterator[AsyncSession]:
    """A read-only session: on a healthy read replica (``DATABASE_REPLICA_URLS``), else on the
    primary. For listings that may trail the primary by up to ``REPLICA_MAX_LAG_S``; never for
    a read that must see the caller's own write."""
    async with _resources(request).read_sessions.session() as session:
        yield session


async def get_chat_service(request: Request) -> ChatService:
    return _resources(request).chat


async def get_memory(request: Request) -> ConversationMemory:
    return _resources(request).memory


async def get_chain(request: Request) -> ProviderChain:
    return _resources(request).provider_chain


async def get_caller_chains(request: Request) -> CallerChains:
    return _resources(request).caller_chains


async def get_limiter(request: Request) -> RequestLimiter:
    return _resources(request).limiter


async def get_stream_slots(request: Request) -> StreamSlots:
    return _resources(request).stream_slots


async def get_job_queue(request: Request) -> JobQueue:
    return _resources(request).job_queue


async def get_telemetry(request: Request) -> Telemetry:
    return _resources(request).telemetry


async def get_authenticator(request: Request) -> Authenticator:
    return _resources(request).authenticator


async def get_readiness(request: Request) -> ReadinessProbe:
    return _resources(request).readiness


async def get_feedback(request: Request) -> FeedbackService:
    return _resources(request).feedback


SettingsDep = Annotated[Settings, Depends(get_settings)]
SessionDep = Annotated[AsyncSession, Depends(get_session, scope="function")]
ReadSessionDep = Annotated[AsyncSession, Depends(get_read_session, scope="function")]
ChatServiceDep = Annotated[ChatService, Depends(get_chat_service)]
MemoryDep = Annotated[ConversationMemory, Depends(get_memory)]
ChainDep = Annotated[ProviderChain, Depends(get_chain)]
CallerChainsDep = Annotated[CallerChains, Depends(get_caller_chains)]
LimiterDep = Annotated[RequestLimiter, Depends(get_limiter)]
StreamSlotsDep = Annotated[StreamSlots, Depends(get_stream_slots)]
JobQueueDep = Annotated[JobQueue, Depends(get_job_queue)]
TelemetryDep = Annotated[Telemetry, Depends(get_telemetry)]
ReadinessDep = Annotated[ReadinessProbe, Depends(get_readiness)]
AuthenticatorDep = Annotated[Authenticator, Depends(get_authenticator)]
FeedbackDep = Annotated[FeedbackService, Depends(get_feedback)]
