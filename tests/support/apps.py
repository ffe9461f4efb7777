"""The one way tests start the app in process: ``running_app(settings, **overrides)`` runs its
lifespan and yields the app, an HTTP client for it and a factory of real callers. The ``app``,
``client``, ``make_caller`` and ``resources`` fixtures (tests/conftest.py) are one such app, with
the ``settings`` and ``app_embedder`` of the folder or module; a test that needs other settings
starts its own with ``async with running_app(settings, max_upload_mb=1) as (app, client, make):``."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from typing import Any, NamedTuple

import httpx
from asgi_lifespan import LifespanManager
from fastapi import APIRouter, FastAPI

from app.main import create_app
from app.rag.embeddings import Embedder
from app.resources import Resources
from app.settings import Settings
from tests.support.callers import MakeCaller, caller_factory
from tests.support.waiting import wait_for_async

BASE_URL = "http://testserver"


class RunningApp(NamedTuple):
    app: FastAPI
    client: httpx.AsyncClient
    make_caller: MakeCaller

    @property
    def resources(self) -> Resources:
        resources: Resources = self.app.state.resources
        return resources


@asynccontextmanager
async def running_app(
    settings: Settings,
    *,
    embedder: Embedder | None = None,
    routers: Sequence[APIRouter] = (),
    client_addr: tuple[str, int] = ("127.0.0.1", 50000),
    **overrides: Any,
) -> AsyncIterator[RunningApp]:
    """``embedder`` shares an already-loaded model (else the app builds the one its settings name);
    ``routers`` add test-only routes; ``client_addr`` is the peer address the app sees."""
    app = create_app(settings.model_copy(update=overrides) if overrides else settings, embedder=embedder)
    for router in routers:
        app.include_router(router)
    async with LifespanManager(app, startup_timeout=60, shutdown_timeout=30):
        transport = httpx.ASGITransport(app=app, client=client_addr)
        async with httpx.AsyncClient(transport=transport, base_url=BASE_URL, timeout=30) as client:
            yield RunningApp(app, client, caller_factory(app.state.resources.session_factory))


async def readyz_turns(client: httpx.AsyncClient, status: int) -> None:
    """Poll ``/readyz`` until it answers ``status``: its answer is cached for a second."""

    async def answers() -> bool:
        return (await client.get("/readyz")).status_code == status

    await wait_for_async(answers, timeout=10, what=f"/readyz answers {status}")
