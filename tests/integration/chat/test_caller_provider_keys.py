"""Bring your own key: ``X-Provider-Key-*`` on the chat endpoints, in process against real
PostgreSQL and Redis, with the providers played by the wire-level fake through the real SDKs.

Each promise of ``app.llm.caller_keys`` has its test here: the key reaches the provider for that
request only; the shared answer cache is neither read nor written; a refused key is a clear
``provider_key_rejected`` that benches nobody and quotes no key; unusable headers are refused; the
headers are documented. (That the key is in no log line is ``tests/e2e/test_provider_keys_server.py``.)"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from app.auth.principal import Role
from app.rag.embeddings import LocalEmbedder
from app.resources import Resources
from app.settings import Settings
from tests.fakes.fake_llm_server import FakeLLMServer
from tests.support.apps import running_app
from tests.support.callers import Caller, MakeCaller
from tests.support.library import Library, ask

pytestmark = [pytest.mark.integration, pytest.mark.pgvector]

CALLER_KEY = "sk-caller-0123456789-own-key"  # a test key, shaped like OpenAI's
OPERATOR_KEY = "test-key-openai"  # fake_openai_overrides: the operator's OPENAI_API_KEY
GUIDE = "# Returns\n\nThe refund window is 30 days from delivery. Refunds go to the original card."
QUESTION = "How long is the refund window?"


def own_key(provider: str = "openai", key: str = CALLER_KEY) -> dict[str, str]:
    return {f"X-Provider-Key-{provider.capitalize()}": key}


async def ask_with(
    client: httpx.AsyncClient, caller: Caller, question: str, extra: dict[str, str], **body: Any
) -> httpx.Response:
    return await client.post(
        "/api/v1/chat", json={"question": question, **body}, headers={**caller.headers, **extra}
    )


def sse_events(text: str) -> list[tuple[str, dict[str, Any]]]:
    events = []
    for block in text.strip().split("\n\n"):
        lines = dict(line.split(": ", 1) for line in block.splitlines() if not line.startswith(":"))
        if "event" in lines:
            events.append((lines["event"], json.loads(lines["data"])))
    return events


async def cooldown_keys(resources: Resources) -> list[bytes]:
    prefix = resources.settings.redis_key_prefix
    return [key async for key in resources.redis.scan_iter(match=prefix + "llm:*")]


async def test_a_callers_key_answers_that_request_and_only_that_one(
    client: httpx.AsyncClient, library: Library, editor: Caller, fake: FakeLLMServer
) -> None:
    await library.add(GUIDE, filename="returns.md")
    mine = await ask_with(client, editor, QUESTION, own_key())
    assert mine.status_code == 200, mine.text
    assert mine.json()["provider"] == "openai"
    assert fake.stats()["openai"]["authorization"] == f"Bearer {CALLER_KEY}"

    theirs = await ask(client, editor, "When do refunds reach the card?")
    assert theirs.status_code == 200, theirs.text
    assert fake.stats()["openai"]["authorization"] == f"Bearer {OPERATOR_KEY}"


async def test_answers_made_with_a_callers_key_neither_read_nor_fill_the_shared_cache(
    client: httpx.AsyncClient, library: Library, editor: Caller, fake: FakeLLMServer
) -> None:
    await library.add(GUIDE, filename="returns.md")
    assert (await ask(client, editor, QUESTION)).json()["cached"] is False
    assert (await ask(client, editor, QUESTION)).json()["cached"] is True  # the operator's answer is cached

    before = fake.stats()["openai"]["chat_requests"]
    for _ in range(2):  # not read, and (second time) not written by the first caller-key answer
        mine = await ask_with(client, editor, QUESTION, own_key())
        assert mine.status_code == 200, mine.text
        assert mine.json()["cached"] is False
    streamed = await ask_with(client, editor, QUESTION, own_key(), stream=True)
    assert ("done", {**sse_events(streamed.text)[-1][1], "cached": False}) == sse_events(streamed.text)[-1]
    assert fake.stats()["openai"]["chat_requests"] == before + 3

    other = "Where do refunds go?"
    assert (await ask_with(client, editor, other, own_key())).json()["cached"] is False
    assert (await ask(client, editor, other)).json()["cached"] is False  # the caller-key answer was not kept


async def test_a_refused_callers_key_is_provider_key_rejected_and_benches_nobody(
    client: httpx.AsyncClient,
    library: Library,
    editor: Caller,
    fake: FakeLLMServer,
    resources: Resources,
    make_caller: MakeCaller,
) -> None:
    await library.add(GUIDE, filename="returns.md")
    fake.configure("openai", reject_keys=[CALLER_KEY])  # quotes the key in its 401, as OpenAI does

    refused = await ask_with(client, editor, QUESTION, own_key())
    assert refused.status_code == 422, refused.text
    assert refused.headers["content-type"].startswith("application/problem+json")
    problem = refused.json()
    assert problem["code"] == "provider_key_rejected"
    assert "openai" in problem["detail"] and "X-Provider-Key-Openai" in problem["detail"]
    assert CALLER_KEY not in refused.text

    streamed = await ask_with(client, editor, QUESTION, own_key(), stream=True)
    assert streamed.status_code == 200
    event, data = sse_events(streamed.text)[-1]
    assert (event, data["code"]) == ("error", "provider_key_rejected")
    assert CALLER_KEY not in streamed.text

    # The operator's provider is not benched, in Redis or in /providers, and still answers.
    assert await cooldown_keys(resources) == []
    admin = await make_caller(tenant="acme", role=Role.admin)
    providers = (await client.get("/api/v1/providers", headers=admin.headers)).json()["providers"]
    openai = next(p for p in providers if p["name"] == "openai")
    assert (openai["state"], openai["healthy"], openai["last_error_code"]) == ("ok", True, None)
    answered = await ask(client, editor, QUESTION)
    assert answered.json()["provider"] == "openai"
    assert fake.stats()["openai"]["authorization"] == f"Bearer {OPERATOR_KEY}"


async def test_a_callers_key_is_not_benched_by_the_operators_cooldown(
    client: httpx.AsyncClient, library: Library, editor: Caller, fake: FakeLLMServer, resources: Resources
) -> None:
    await library.add(GUIDE, filename="returns.md")
    fake.configure("openai", mode="error", status=401)  # the operator's key is refused: benched
    assert (await ask(client, editor, QUESTION)).json()["provider"] != "openai"
    assert len(await cooldown_keys(resources)) == 1
    fake.configure("openai")

    mine = await ask_with(client, editor, "Where do refunds go?", own_key())
    assert mine.json()["provider"] == "openai"
    assert fake.stats()["openai"]["authorization"] == f"Bearer {CALLER_KEY}"


async def test_provider_key_headers_that_cannot_be_used_are_refused_without_quoting_them(
    client: httpx.AsyncClient, editor: Caller
) -> None:
    for headers, says in (
        (own_key(key="two words"), "X-Provider-Key-Openai"),
        (own_key("gemini", "AIza-not-routed-here"), "does not route requests to gemini"),
    ):
        response = await ask_with(client, editor, QUESTION, headers)
        assert response.status_code == 422, response.text
        assert response.json()["code"] == "invalid_provider_key"
        assert says in response.json()["detail"]
        assert next(iter(headers.values())) not in response.text


async def test_the_openai_compatible_surface_takes_the_same_headers(
    client: httpx.AsyncClient, library: Library, editor: Caller, fake: FakeLLMServer
) -> None:
    await library.add(GUIDE, filename="returns.md")
    response = await client.post(
        "/v1/chat/completions",
        json={"model": "rag", "messages": [{"role": "user", "content": QUESTION}]},
        headers={"Authorization": f"Bearer {editor.key}", **own_key()},
    )
    assert response.status_code == 200, response.text
    assert response.json()["rag"]["cached"] is False
    assert fake.stats()["openai"]["authorization"] == f"Bearer {CALLER_KEY}"


async def test_the_provider_key_headers_and_limits_are_documented(
    client: httpx.AsyncClient, editor: Caller
) -> None:
    schema = (await client.get("/openapi.json")).json()
    for path in ("/api/v1/chat", "/v1/chat/completions"):
        headers = {p["name"] for p in schema["paths"][path]["post"]["parameters"] if p["in"] == "header"}
        assert {"X-Provider-Key-Gemini", "X-Provider-Key-Groq", "X-Provider-Key-Openai"} <= headers, path
    limits = (await client.get("/api/v1/limits", headers=editor.headers)).json()
    assert limits["provider_key_headers"] == {"openai": "X-Provider-Key-Openai"}  # LLM_PROVIDERS=openai
    assert limits["max_upload_mb"] == 10
    assert "pdf" in limits["upload_extensions"]
    chat = schema["components"]["schemas"]["ChatBody"]["properties"]
    temperature = next(s for s in chat["temperature"]["anyOf"] if s.get("type") == "number")
    assert limits["chat"]["temperature"] == {
        "minimum": temperature["minimum"],
        "maximum": temperature["maximum"],
        "default": None,
    }
    assert limits["chat"]["max_tokens"]["default"] == 512  # ANSWER_MAX_TOKENS


@pytest.fixture
async def groq_by_caller_only(
    settings: Settings, fake: FakeLLMServer, app_embedder: LocalEmbedder
) -> AsyncIterator[tuple[httpx.AsyncClient, Library]]:
    """Groq first in the chain, but the operator has no Groq key."""
    groq = {"llm_providers": ["groq", "openai"], "groq_base_url": fake.groq_base_url, "groq_api_key": None}
    async with running_app(settings, embedder=app_embedder, **groq) as running:
        editor = await running.make_caller(tenant="acme", role=Role.editor)
        yield running.client, Library(running.client, running.resources, editor)


async def test_a_callers_key_opens_a_provider_the_operator_has_no_key_for(
    groq_by_caller_only: tuple[httpx.AsyncClient, Library], fake: FakeLLMServer
) -> None:
    client, library = groq_by_caller_only
    await library.add(GUIDE, filename="returns.md")
    pinned = await ask_with(client, library.caller, QUESTION, {}, model="groq")
    assert pinned.status_code == 422 and pinned.json()["code"] == "unknown_model"

    groq_key = "gsk-caller-groq-key-0123"
    mine = await ask_with(client, library.caller, QUESTION, own_key("groq", groq_key), model="groq")
    assert mine.status_code == 200, mine.text
    assert mine.json()["provider"] == "groq"
    assert fake.stats()["groq"]["authorization"] == f"Bearer {groq_key}"

    # Auto (no pin): the caller's Groq first, although the operator lists it first without a key.
    auto = await ask_with(client, library.caller, "Where do refunds go?", own_key("groq", groq_key))
    assert auto.json()["provider"] == "groq"
