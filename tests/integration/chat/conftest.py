"""Chat tests: the real app, the session's real embedding model, real PostgreSQL and Redis, and
the OpenAI provider played by the wire-level fake through the real SDK."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx
import pytest
from asgi_lifespan import LifespanManager
from fastapi import FastAPI
from pydantic import SecretStr

from app.auth.principal import Role
from app.documents.ingestion import IngestionContext
from app.main import create_app
from app.rag.embeddings import LocalEmbedder
from app.resources import Resources
from app.settings import Settings
from tests.fakes.fake_llm_server import FakeLLMServer
from tests.support.callers import Caller, caller_factory


@pytest.fixture(scope="session")
def fake_llm_server() -> Iterator[FakeLLMServer]:
    server = FakeLLMServer().start()
    yield server
    server.stop()


@pytest.fixture
def fake(fake_llm_server: FakeLLMServer) -> Iterator[FakeLLMServer]:
    fake_llm_server.reset()
    yield fake_llm_server
    fake_llm_server.reset()


@pytest.fixture
def chat_settings(settings: Settings, fake: FakeLLMServer) -> Settings:
    return settings.model_copy(
        update={
            "llm_providers": ["openai"],
            "openai_api_key": SecretStr("test-key-openai"),
            "openai_base_url": fake.openai_base_url,
            "openai_timeout_s": 2.0,
            "router_cooldown_s": 0.5,
            "run_worker_in_process": False,
        }
    )


@pytest.fixture
async def chat_app(chat_settings: Settings, embedder: LocalEmbedder) -> AsyncIterator[FastAPI]:
    application = create_app(chat_settings, embedder=embedder)
    async with LifespanManager(application, startup_timeout=60):
        yield application


@pytest.fixture
def resources(chat_app: FastAPI) -> Resources:
    resources: Resources = chat_app.state.resources
    return resources


@pytest.fixture
async def http(chat_app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=chat_app)
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver", timeout=30) as client:
        yield client


@pytest.fixture
async def editor(resources: Resources) -> Caller:
    return await caller_factory(resources.session_factory)(tenant="acme", role=Role.editor)


class Library:
    """Uploads documents as a user would and runs the ingestion jobs to completion."""

    def __init__(self, http: httpx.AsyncClient, resources: Resources, caller: Caller) -> None:
        self.http = http
        self.resources = resources
        self.caller = caller

    async def run_jobs(self) -> None:
        context = IngestionContext(
            self.resources.session_factory, self.resources.embedder, self.resources.settings
        )
        await self.resources.job_queue.run_worker(context, burst=True)

    async def add(
        self, text: str | bytes, *, filename: str = "doc.md", caller: Caller | None = None, **fields: Any
    ) -> str:
        data = text.encode() if isinstance(text, str) else text
        response = await self.http.post(
            "/api/v1/docs",
            files={"file": (filename, data, "application/octet-stream")},
            data={"title": fields.pop("title", filename), **fields},
            headers=(caller or self.caller).headers,
        )
        assert response.status_code == 202, response.text
        await self.run_jobs()
        job = await self.http.get(response.json()["status_url"], headers=(caller or self.caller).headers)
        assert job.json()["status"] == "succeeded", job.text
        return str(response.json()["document_id"])

    async def replace(self, document_id: str, text: str | bytes, *, filename: str = "doc.md") -> None:
        data = text.encode() if isinstance(text, str) else text
        response = await self.http.put(
            f"/api/v1/docs/{document_id}",
            files={"file": (filename, data, "application/octet-stream")},
            headers=self.caller.headers,
        )
        assert response.status_code == 202, response.text
        await self.run_jobs()

    async def delete(self, document_id: str) -> None:
        response = await self.http.delete(f"/api/v1/docs/{document_id}", headers=self.caller.headers)
        assert response.status_code in (200, 204), response.text


@pytest.fixture
def library(http: httpx.AsyncClient, resources: Resources, editor: Caller) -> Library:
    return Library(http, resources, editor)


async def ask(http: httpx.AsyncClient, caller: Caller, question: str, **body: Any) -> httpx.Response:
    return await http.post("/api/v1/chat", json={"question": question, **body}, headers=caller.headers)


def new_session() -> str:
    return str(uuid.uuid4())
