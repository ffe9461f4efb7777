"""Run the real app in-process with settings of the test's choosing and extra test routes."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
from asgi_lifespan import LifespanManager
from fastapi import APIRouter, FastAPI

from app.main import create_app
from app.settings import Settings
from tests.support.callers import MakeCaller, caller_factory


@asynccontextmanager
async def running_app(
    settings: Settings, *, routers: Sequence[APIRouter] = (), **overrides: Any
) -> AsyncIterator[tuple[FastAPI, httpx.AsyncClient, MakeCaller]]:
    app = create_app(settings.model_copy(update=overrides))
    for router in routers:
        app.include_router(router)
    async with LifespanManager(app, startup_timeout=60, shutdown_timeout=30):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
            yield app, client, caller_factory(app.state.resources.session_factory)


def read_json_lines(directory: Path) -> list[dict[str, Any]]:
    lines: list[dict[str, Any]] = []
    for path in sorted(directory.glob("ragchat-*.log")):
        lines += [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return lines
