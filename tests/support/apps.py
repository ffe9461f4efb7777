"""An app with settings of the test's choosing (and optional extra routers), plus its client."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from typing import Any

import httpx
from asgi_lifespan import LifespanManager
from fastapi import APIRouter, FastAPI

from app.main import create_app
from app.rag.embeddings import Embedder
from app.settings import Settings
from tests.support.callers import MakeCaller, caller_factory


@asynccontextmanager
async def running_app(
    settings: Settings,
    *,
    routers: Sequence[APIRouter] = (),
    client_addr: tuple[str, int] = ("127.0.0.1", 50000),
    embedder: Embedder | None = None,
    **overrides: Any,
) -> AsyncIterator[tuple[FastAPI, httpx.AsyncClient, MakeCaller]]:
    app = create_app(settings.model_copy(update=overrides) if overrides else settings, embedder=embedder)
    for router in routers:
        app.include_router(router)
    async with LifespanManager(app, startup_timeout=60):
        transport = httpx.ASGITransport(app=app, client=client_addr)
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
            yield app, client, caller_factory(app.state.resources.session_factory)
