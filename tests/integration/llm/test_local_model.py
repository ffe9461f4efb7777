"""gpt4all with a tiny random llama written at test time: tokens stream off the event loop,
timeouts hold, the local model is never benched, and a file that would abort llama.cpp is
reported unconfigured instead of killing the worker."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from app.llm.errors import ProviderTimeout
from app.llm.link import ProviderLink
from app.llm.local import LocalProvider
from app.llm.observer import NoopObserver
from app.llm.policy import ProviderPolicy
from app.llm.types import ChatRequest, Message, StreamEnd, StreamFailed, TextDelta, Usage
from tests.fakes.fake_llm_server import FakeLLMServer
from tests.support.llm import StartRouterApp
from tests.support.tiny_gguf import write_tiny_llama

pytestmark = pytest.mark.integration

REQUEST = ChatRequest(messages=(Message("user", "hello world"),), max_tokens=8, temperature=0.0)
# About 8000 tokens: even this tiny model needs well over a second for them, whatever the load.
LONG = ChatRequest(messages=(Message("user", "hello world"),), max_tokens=8000, temperature=0.7)
CONTEXT = 8192


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_tiny_llama(tmp_path_factory.mktemp("gguf") / "tiny-llama.gguf")


@pytest.fixture
async def local(tiny_model: Path) -> AsyncIterator[LocalProvider]:
    provider = LocalProvider(model_path=tiny_model, n_ctx=CONTEXT, n_threads=1)
    yield provider
    await provider.aclose()


def link_for(provider: LocalProvider, **policy: float) -> ProviderLink:
    values = {"total_timeout_s": 30.0, "first_token_timeout_s": 30.0, "stream_idle_timeout_s": 5.0, **policy}
    return ProviderLink(
        provider=provider,
        policy=ProviderPolicy(max_retries=0, max_concurrency=1, cooldown_enabled=False, **values),
        observer=NoopObserver(),
    )


async def test_tiny_model_streams_tokens_without_blocking_the_loop(local: LocalProvider) -> None:
    assert (await local.load()).configured, local.availability().reason
    ticks = 0

    async def ticker() -> None:
        nonlocal ticks
        while True:
            await asyncio.sleep(0.001)
            ticks += 1

    task = asyncio.create_task(ticker())
    try:
        chunks = [chunk async for chunk in local.stream(REQUEST, local.default_model)]
        texts = [c for c in chunks if isinstance(c, str)]
        assert texts, chunks
        assert isinstance(chunks[-1], Usage) and 1 <= chunks[-1].completion_tokens <= 8
        ticks_before = ticks
        long = [chunk async for chunk in local.stream(LONG, local.default_model)]
    finally:
        task.cancel()
    assert len(long) > 1000
    assert ticks > ticks_before  # the loop kept running while the model generated in its thread
    generation = await local.complete(REQUEST, local.default_model)
    assert generation.model == "tiny-llama.gguf" and generation.usage is not None


async def test_total_timeout_cuts_a_long_generation_and_frees_the_model(local: LocalProvider) -> None:
    await local.load()
    link = link_for(local, total_timeout_s=0.4)
    opened = await link.open_stream(LONG, local.default_model)
    with pytest.raises(ProviderTimeout):  # the long answer is cut, not waited for
        _ = [text async for text in opened.rest()]
    await opened.aclose()
    # The generating thread saw the stop flag: the next request gets the model (a guard: a
    # thread still generating the long answer would hold it far longer).
    await asyncio.wait_for(local.complete(REQUEST, local.default_model), timeout=30)


async def test_first_token_timeout_applies_to_the_local_model(local: LocalProvider) -> None:
    """While the model is busy with a long answer, the next request's first token cannot come;
    it is abandoned at the configured first-token timeout instead of queueing behind it."""
    await local.load()
    busy = local.stream(LONG, local.default_model)
    assert isinstance(await anext(busy), str)  # the long generation holds the model thread
    link = ProviderLink(
        provider=local,
        policy=ProviderPolicy(
            total_timeout_s=10.0,
            first_token_timeout_s=0.3,
            stream_idle_timeout_s=5.0,
            max_retries=0,
            max_concurrency=2,
            cooldown_enabled=False,
        ),
        observer=NoopObserver(),
    )
    with pytest.raises(ProviderTimeout, match="first-token"):  # not queued behind the long answer
        await link.open_stream(REQUEST, local.default_model)
    await busy.aclose()


async def test_a_model_file_that_aborts_llama_cpp_is_unconfigured(tmp_path: Path) -> None:
    broken = write_tiny_llama(tmp_path / "broken.gguf", duplicate_token=True)
    garbage = tmp_path / "garbage.gguf"
    garbage.write_bytes(b"this is not a gguf file")
    for path in (broken, garbage):
        provider = LocalProvider(model_path=path)
        try:
            availability = await provider.load()
        finally:
            await provider.aclose()
        assert not availability.configured
        assert availability.reason and path.name in availability.reason


async def test_local_model_answers_when_remote_providers_fail_and_is_never_benched(
    start_router_app: StartRouterApp, fake: FakeLLMServer, tiny_model: Path
) -> None:
    for name in ("gemini", "groq", "openai"):
        fake.configure(name, mode="error", status=503)
    overrides = {
        "llm_providers": ["gemini", "groq", "openai", "local"],
        "local_model_path": tiny_model,
        "local_timeout_s": 0.5,
        "local_first_token_timeout_s": 0.5,
        "local_threads": 1,
        "local_context_tokens": CONTEXT,  # llama.cpp's spinning threads crawl on an oversubscribed CI box
    }
    async with start_router_app(**overrides) as router:
        events = [e async for e in router.chain.stream(REQUEST)]
        assert events[0].provider == "local"  # type: ignore[union-attr]
        assert any(isinstance(e, TextDelta) for e in events)
        assert isinstance(events[-1], StreamEnd)
        # A local timeout ends the stream in band but does not bench the local model.
        events = [e async for e in router.chain.stream(LONG)]
        assert isinstance(events[-1], StreamFailed) and events[-1].code == "timeout"
        shown = (await router.providers())["local"]
        assert shown["state"] == "ok" and shown["cooling_down_until"] is None
        assert shown["last_error_code"] == "timeout"
        completion = await router.chain.complete(REQUEST)
        assert completion.provider == "local"
