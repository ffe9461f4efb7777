"""The official ``openai`` SDK against the real server's OpenAI-compatible surface (/v1): plain and
streamed completions, sync and async, pinned providers, and the SDK's own exception classes for
our errors (404 model, 401 key, 429 with Retry-After, a stream that breaks after its first token).

One server for the module: starting it is the slow part."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from typing import Any

import openai
import pytest

from tests.fakes.fake_llm_server import FakeLLMServer
from tests.support.server import (
    ServerProcess,
    create_api_key,
    fake_openai_env,
    service_env,
    start_server,
    upload_and_wait,
)
from tests.support.services import RedisForTests, truncate_app_tables

pytestmark = pytest.mark.e2e

PER_PRINCIPAL_LIMIT = 12  # chats per minute and key; the main key makes fewer, the limited one more
DOC = "# Kickoff\n\nThe project kickoff is on the fourth floor, in the Orchid room."


class ServedModule:
    def __init__(self, server: ServerProcess, key: str, limited_key: str) -> None:
        self.server = server
        self.key = key
        self.limited_key = limited_key

    @property
    def base_url(self) -> str:
        return self.server.base_url + "/v1"

    def client(self, key: str | None = None) -> openai.OpenAI:
        return openai.OpenAI(base_url=self.base_url, api_key=key or self.key, max_retries=0, timeout=60)


@pytest.fixture(scope="module")
def served_module(
    database_url: str,
    redis_server: RedisForTests,
    worker_name: str,
    tmp_path_factory: pytest.TempPathFactory,
    fake_llm_server: FakeLLMServer,
) -> Iterator[ServedModule]:
    """One server for the module (``served`` is one per test), emptied of its data after it."""
    tmp_path = tmp_path_factory.mktemp("openai_sdk")
    env = service_env(
        database_url,
        redis_server.url,
        f"test:{worker_name}:openai-sdk:{time.time_ns()}:",
        tmp_path / "data",
        **{
            "RUN_WORKER_IN_PROCESS": "true",
            **fake_openai_env(fake_llm_server.openai_base_url),
            "RATE_LIMIT_PER_PRINCIPAL": f"{PER_PRINCIPAL_LIMIT}/minute",
            "RATE_LIMIT_PER_IP": "10000/minute",
        },
    )
    try:
        key = create_api_key(env)
        limited_key = create_api_key(env, tenant="limited", role="reader")
        server = start_server(env, tmp_path / "server.log", workers=1)
        try:
            upload_and_wait(server.base_url, {"Authorization": f"Bearer {key}"}, DOC)
            yield ServedModule(server, key, limited_key)
        finally:
            server.stop()
    finally:
        truncate_app_tables(database_url)


def extra(model: Any) -> dict[str, Any]:
    data: dict[str, Any] = model.to_dict()
    return data


def test_sync_completion(served_module: ServedModule, fake: FakeLLMServer) -> None:
    fake.configure("openai", text="On the fourth floor [1].", response_model="gpt-4o-mini-2024-07-18")
    completion = served_module.client().chat.completions.create(
        model="rag",
        messages=[
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": "Where is the kickoff?"},
        ],
        temperature=0.1,
        max_tokens=200,
    )
    assert completion.object == "chat.completion"
    assert completion.model == "rag/openai/gpt-4o-mini-2024-07-18"  # who answered, as it named itself
    assert completion.choices[0].message.role == "assistant"
    assert completion.choices[0].message.content == "On the fourth floor [1]."
    assert completion.choices[0].finish_reason == "stop"
    assert completion.usage is not None and completion.usage.total_tokens > 0
    rag = (completion.model_extra or {})["rag"]
    assert rag["provider"] == "openai"
    assert completion.id == f"chatcmpl-{rag['trace_id']}"
    assert rag["sources"][0]["title"] == "notes.md" and rag["sources"][0]["cited"] is True


def test_async_completion_and_models(served_module: ServedModule, fake: FakeLLMServer) -> None:
    fake.configure("openai", text="In the Orchid room [1].")

    async def run() -> tuple[Any, list[str]]:
        client = openai.AsyncOpenAI(
            base_url=served_module.base_url, api_key=served_module.key, max_retries=0, timeout=60
        )
        async with client:
            completion = await client.chat.completions.create(
                model="rag", messages=[{"role": "user", "content": "Which room is the kickoff in?"}]
            )
            models = [m.id async for m in client.models.list()]
        return completion, models

    completion, models = asyncio.run(run())
    assert completion.choices[0].message.content == "In the Orchid room [1]."
    assert models[:2] == ["rag", "rag/openai"]


def test_streaming_iteration(served_module: ServedModule, fake: FakeLLMServer) -> None:
    fake.configure("openai", text="The kickoff is on the fourth floor [1].", response_model="gpt-4o-mini-x")
    stream = served_module.client().chat.completions.create(
        model="rag",
        messages=[{"role": "user", "content": "Tell me where the kickoff takes place."}],
        stream=True,
    )
    chunks = list(stream)
    assert chunks[0].choices[0].delta.role == "assistant"
    assert {c.model for c in chunks} == {"rag/openai/gpt-4o-mini-x"}
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == "The kickoff is on the fourth floor [1]."
    last = chunks[-1]
    assert last.choices[0].finish_reason == "stop"
    rag = extra(last)["rag"]
    assert rag["provider"] == "openai"
    assert rag["sources"][0]["title"] == "notes.md"


def test_a_pinned_provider(served_module: ServedModule, fake: FakeLLMServer) -> None:
    fake.configure("openai", text="Fourth floor [1].")
    completion = served_module.client().chat.completions.create(
        model="rag/openai", messages=[{"role": "user", "content": "Kickoff floor?"}]
    )
    assert completion.model == "rag/openai/gpt-4o-mini"
    assert (completion.model_extra or {})["rag"]["provider"] == "openai"


def test_an_unknown_model_raises_not_found(served_module: ServedModule) -> None:
    with pytest.raises(openai.NotFoundError) as raised:
        served_module.client().chat.completions.create(
            model="gpt-4o", messages=[{"role": "user", "content": "Where is the kickoff?"}]
        )
    assert raised.value.code == "model_not_found"
    assert raised.value.param == "model"


def test_a_bad_key_raises_authentication_error(served_module: ServedModule) -> None:
    with pytest.raises(openai.AuthenticationError) as raised:
        served_module.client("not-a-real-key").chat.completions.create(
            model="rag", messages=[{"role": "user", "content": "Where is the kickoff?"}]
        )
    assert raised.value.code == "invalid_api_key"
    assert raised.value.status_code == 401


def test_the_rate_limit_raises_rate_limit_error_with_retry_after(served_module: ServedModule) -> None:
    client = served_module.client(served_module.limited_key)  # its own tenant: no documents, no model calls
    with pytest.raises(openai.RateLimitError) as raised:  # noqa: PT012
        for _ in range(PER_PRINCIPAL_LIMIT + 1):
            client.chat.completions.create(model="rag", messages=[{"role": "user", "content": "Anything?"}])
    assert raised.value.status_code == 429
    assert int(raised.value.response.headers["retry-after"]) >= 1
    assert raised.value.type == "rate_limit_error"


def test_a_failure_after_the_first_token_raises_api_error(
    served_module: ServedModule, fake: FakeLLMServer
) -> None:
    """Last: the cut may bench the provider for the rest of the module."""
    fake.configure("openai", text="The kickoff is on the fourth floor [1].", mode="cut", cut_after_tokens=2)
    stream = served_module.client().chat.completions.create(
        model="rag",
        messages=[{"role": "user", "content": "On which floor does the kickoff happen?"}],
        stream=True,
    )
    received: list[str] = []
    with pytest.raises(openai.APIError) as raised:  # noqa: PT012
        for chunk in stream:
            if chunk.choices:
                received.append(chunk.choices[0].delta.content or "")
    assert "".join(received)  # the first tokens arrived before the failure
    assert isinstance(raised.value.body, dict) and raised.value.body["trace_id"]
