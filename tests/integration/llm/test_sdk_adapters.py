"""Each adapter drives its real SDK against the fake server's wire protocol."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import openai
import pytest
from google import genai
from google.genai import types as genai_types

from app.llm.errors import (
    AuthFailed,
    ContentFiltered,
    ContextTooLong,
    EmptyResponse,
    MalformedResponse,
    RateLimited,
    ServerError,
)
from app.llm.factory import provider_for
from app.llm.provider import Provider
from app.llm.types import ChatRequest, Message, Usage
from app.settings import Settings
from tests.fakes.fake_llm_server import DEFAULT_TEXT, FakeLLMServer
from tests.support.llm import SDK_PROVIDERS

pytestmark = pytest.mark.integration

REQUEST = ChatRequest(
    messages=(Message("system", "Be brief."), Message("user", "What is the capital of France?")),
    temperature=0.2,
    max_tokens=64,
)


@pytest.fixture
async def adapters(router_settings: Settings) -> AsyncIterator[dict[str, Provider]]:
    built = {name: provider_for(router_settings, name) for name in SDK_PROVIDERS}
    yield built
    for provider in built.values():
        await provider.aclose()


@pytest.mark.parametrize("name", SDK_PROVIDERS)
async def test_complete_returns_text_model_and_usage(
    name: str, adapters: dict[str, Provider], fake: FakeLLMServer
) -> None:
    generation = await adapters[name].complete(REQUEST, "model-x")
    assert generation.text == DEFAULT_TEXT
    assert generation.usage is not None and generation.usage.completion_tokens == len(DEFAULT_TEXT.split())
    sent = fake.stats()[name]
    assert sent["authorization"] in (f"Bearer test-key-{name}", f"test-key-{name}")
    body = sent["last_request"]
    if name == "gemini":
        assert body["systemInstruction"]["parts"][0]["text"] == "Be brief."
        assert body["generationConfig"]["temperature"] == 0.2
        assert body["generationConfig"]["maxOutputTokens"] == 64
    else:
        assert body["model"] == "model-x"
        assert body["messages"][0] == {"role": "system", "content": "Be brief."}
        assert body["temperature"] == 0.2 and body["max_tokens"] == 64


@pytest.mark.parametrize("name", SDK_PROVIDERS)
async def test_stream_yields_tokens_then_usage(
    name: str, adapters: dict[str, Provider], fake: FakeLLMServer
) -> None:
    chunks = [chunk async for chunk in adapters[name].stream(REQUEST, "model-x")]
    texts = [c for c in chunks if isinstance(c, str)]
    assert len(texts) == len(DEFAULT_TEXT.split())
    assert "".join(texts) == DEFAULT_TEXT
    assert isinstance(chunks[-1], Usage) and chunks[-1].completion_tokens == len(texts)


@pytest.mark.parametrize("name", SDK_PROVIDERS)
@pytest.mark.parametrize(
    ("behaviour", "error"),
    [
        ({"mode": "error", "status": 429, "retry_after": 7}, RateLimited),
        ({"mode": "error", "status": 401}, AuthFailed),
        ({"mode": "error", "status": 503}, ServerError),
        ({"mode": "context_too_long"}, ContextTooLong),
        ({"mode": "malformed"}, MalformedResponse),
    ],
)
async def test_errors_are_typed_and_the_sdk_never_retries_on_its_own(
    name: str, behaviour: dict[str, object], error: type, adapters: dict[str, Provider], fake: FakeLLMServer
) -> None:
    fake.configure(name, **behaviour)
    with pytest.raises(error) as raised:
        await adapters[name].complete(REQUEST, "model-x")
    if error is RateLimited:
        assert raised.value.retry_after == 7
    with pytest.raises(error):
        _ = [chunk async for chunk in adapters[name].stream(REQUEST, "model-x")]
    assert fake.requests(name) == 2  # one per call: SDK retries are off, the policy owns them


@pytest.mark.parametrize("name", SDK_PROVIDERS)
async def test_an_answer_without_text_is_never_an_empty_success(
    name: str, adapters: dict[str, Provider], fake: FakeLLMServer
) -> None:
    """JSON: ``EmptyResponse``. Streamed: no text at all (the router then raises it before anything
    reaches the client)."""
    fake.configure(name, mode="empty")
    with pytest.raises(EmptyResponse):
        await adapters[name].complete(REQUEST, "model-x")
    chunks = [chunk async for chunk in adapters[name].stream(REQUEST, "model-x")]
    assert not [chunk for chunk in chunks if isinstance(chunk, str) and chunk.strip()]


@pytest.mark.parametrize("name", SDK_PROVIDERS)
@pytest.mark.parametrize("mode", ["blocked", "content_policy"])
async def test_a_content_filters_refusal_is_content_filtered_in_both_modes(
    name: str, mode: str, adapters: dict[str, Provider], fake: FakeLLMServer
) -> None:
    """Each wire's refusal (a 400 ``content_policy_violation`` / ``content_filter``, a
    ``content_filter`` or ``SAFETY`` finish without text, Gemini's blocked prompt) is
    ``ContentFiltered``, never an empty answer the router would fall back from."""
    fake.configure(name, mode=mode)
    with pytest.raises(ContentFiltered):
        await adapters[name].complete(REQUEST, "model-x")
    with pytest.raises(ContentFiltered):
        _ = [chunk async for chunk in adapters[name].stream(REQUEST, "model-x")]


@pytest.mark.parametrize("name", SDK_PROVIDERS)
async def test_provider_without_a_key_is_unconfigured(name: str, router_settings: Settings) -> None:
    provider = provider_for(router_settings.model_copy(update={f"{name}_api_key": None}), name)
    availability = provider.availability()
    assert not availability.configured
    assert availability.reason == f"{name.upper()}_API_KEY is not set"


async def test_fake_serves_openai_embeddings_through_the_sdk(fake: FakeLLMServer) -> None:
    client = openai.AsyncOpenAI(api_key="k", base_url=fake.openai_base_url, max_retries=0)
    try:
        as_base64 = await client.embeddings.create(
            model="text-embedding-3-small", input=["a", "b"], dimensions=12
        )
        as_floats = await client.embeddings.create(
            model="text-embedding-3-small", input=["a"], dimensions=12, encoding_format="float"
        )
    finally:
        await client.close()
    assert [len(item.embedding) for item in as_base64.data] == [12, 12]
    assert as_base64.data[0].embedding == pytest.approx(as_floats.data[0].embedding, rel=1e-6)
    assert as_base64.data[0].embedding != as_base64.data[1].embedding


async def test_fake_serves_gemini_embeddings_through_the_sdk(fake: FakeLLMServer) -> None:
    http = httpx.AsyncClient()  # as the adapter does: httpx, not the SDK's aiohttp default
    client = genai.Client(
        api_key="k",
        http_options=genai_types.HttpOptions(base_url=fake.gemini_base_url, httpx_async_client=http),
    )
    try:
        batch = await client.aio.models.embed_content(
            model="gemini-embedding-001",
            contents=["alpha", "beta"],
            config=genai_types.EmbedContentConfig(output_dimensionality=16),
        )
        again = await client.aio.models.embed_content(
            model="gemini-embedding-001",
            contents="alpha",
            config=genai_types.EmbedContentConfig(output_dimensionality=16),
        )
    finally:
        await client.aio.aclose()
        await http.aclose()
    assert batch.embeddings is not None and again.embeddings is not None
    assert [len(e.values or []) for e in batch.embeddings] == [16, 16]
    assert batch.embeddings[0].values == pytest.approx(again.embeddings[0].values)
