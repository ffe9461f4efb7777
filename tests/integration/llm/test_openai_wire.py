"""The OpenAI and Groq adapters speak the chat-completions wire over plain aiohttp
(``app.llm.openai_wire``), not through the vendors' SDKs. Against the wire fake: they send what
the SDKs send, every fault of the router's fault matrix ends in the same typed error, and the
connection pool is reused (by the operator's key and callers' keys alike)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import suppress
from typing import Any

import groq
import openai
import pytest

from app.llm.errors import (
    AuthFailed,
    MalformedResponse,
    ProviderError,
    ProviderTimeout,
    RateLimited,
    ServerError,
    TruncatedStream,
)
from app.llm.groq_provider import GroqProvider
from app.llm.openai_compat import OpenAICompatibleProvider
from app.llm.openai_provider import OpenAIProvider
from app.llm.types import ChatRequest, Message, ResponseModel, Usage
from tests.fakes.fake_llm_server import DEFAULT_TEXT, FakeLLMServer, tokens_of

pytestmark = pytest.mark.integration

WIRES = ("openai", "groq")
REQUEST = ChatRequest(
    messages=(
        Message("system", "Answer in one line. Ünïcödé stays as it is."),
        Message("user", "What is the capital of France?"),
    ),
    temperature=0.2,
    max_tokens=64,
)


def adapter(fake: FakeLLMServer, name: str, *, total_s: float = 10.0, base: str | None = None) -> Any:
    cls = OpenAIProvider if name == "openai" else GroqProvider
    return cls(
        api_key=f"key-{name}",
        model="model-x",
        base_url=base or getattr(fake, f"{name}_base_url"),
        connect_timeout_s=5.0,
        total_timeout_s=total_s,
    )


@pytest.fixture(params=WIRES)
async def wire(request: pytest.FixtureRequest, fake: FakeLLMServer) -> AsyncIterator[Any]:
    provider = adapter(fake, request.param)
    yield provider
    await provider.aclose()


async def drain(provider: OpenAICompatibleProvider) -> list[Any]:
    return [chunk async for chunk in provider.stream(REQUEST, "model-x")]


async def collect_into(seen: list[Any], provider: OpenAICompatibleProvider) -> None:
    """Like ``drain``, keeping what arrived before a failure in ``seen``."""
    async for chunk in provider.stream(REQUEST, "model-x"):
        seen.append(chunk)


# --- the same request as the SDKs send -------------------------------------------------------------


async def sdk_bodies(fake: FakeLLMServer, name: str) -> tuple[dict[str, Any], dict[str, Any], str]:
    """The JSON and the streamed request the vendor's SDK sends for ``REQUEST``, and its key header."""
    messages: Any = [{"role": m.role, "content": m.content} for m in REQUEST.messages]
    options: dict[str, Any] = {"model": "model-x", "messages": messages, "temperature": 0.2, "max_tokens": 64}
    usage = {"include_usage": True}
    if name == "openai":
        client: Any = openai.AsyncOpenAI(api_key="key-openai", base_url=fake.openai_base_url, max_retries=0)
        streamed: dict[str, Any] = {"stream_options": usage}
    else:
        client = groq.AsyncGroq(api_key="key-groq", base_url=fake.groq_base_url, max_retries=0)
        streamed = {"extra_body": {"stream_options": usage}}  # groq's create has no such argument
    try:
        await client.chat.completions.create(**options)
        plain = fake.stats()[name]["last_request"]
        stream = await client.chat.completions.create(stream=True, **streamed, **options)
        async for _ in stream:
            pass
    finally:
        await client.close()
    sent = fake.stats()[name]
    return plain, sent["last_request"], sent["authorization"]


@pytest.mark.parametrize("name", WIRES)
async def test_the_wire_sends_what_the_vendors_sdk_sends(name: str, fake: FakeLLMServer) -> None:
    plain, streamed, authorization = await sdk_bodies(fake, name)
    provider = adapter(fake, name)
    try:
        generation = await provider.complete(REQUEST, "model-x")
        assert fake.stats()[name]["last_request"] == plain
        chunks = await drain(provider)
        sent = fake.stats()[name]
    finally:
        await provider.aclose()
    assert sent["last_request"] == streamed
    assert sent["authorization"] == authorization == f"Bearer key-{name}"
    assert generation.text == DEFAULT_TEXT and generation.model == "model-x"
    assert chunks[0] == ResponseModel("model-x")
    assert "".join(c for c in chunks if isinstance(c, str)) == DEFAULT_TEXT
    words = len(tokens_of(DEFAULT_TEXT))
    assert chunks[-1] == Usage(prompt_tokens=generation.usage.prompt_tokens, completion_tokens=words)  # type: ignore[union-attr]


# --- every fault of the matrix, typed as before ------------------------------------------------------

FAULTS: list[tuple[str, dict[str, Any], type[ProviderError]]] = [
    ("rate_limited", {"mode": "error", "status": 429, "retry_after": 7}, RateLimited),
    ("server_error_500", {"mode": "error", "status": 500}, ServerError),
    ("unavailable_503", {"mode": "error", "status": 503}, ServerError),
    ("unauthorized_401", {"mode": "error", "status": 401}, AuthFailed),
    ("malformed_json", {"mode": "malformed"}, MalformedResponse),
    ("html_instead_of_the_protocol", {"wrong_body": "html"}, MalformedResponse),
    ("broken_json_body", {"wrong_body": "broken_json"}, MalformedResponse),
]


@pytest.mark.parametrize(("behaviour", "error"), [f[1:] for f in FAULTS], ids=[f[0] for f in FAULTS])
async def test_each_fault_is_the_same_typed_error_in_both_modes(
    behaviour: dict[str, Any], error: type[ProviderError], wire: Any, fake: FakeLLMServer
) -> None:
    fake.configure(wire.name, **behaviour)
    with pytest.raises(error) as plain:
        await wire.complete(REQUEST, "model-x")
    with pytest.raises(error) as streamed:
        await drain(wire)
    if error is RateLimited:
        assert plain.value.retry_after == streamed.value.retry_after == 7
    if error in (RateLimited, ServerError, AuthFailed):
        assert plain.value.upstream_status == streamed.value.upstream_status == behaviour["status"]
    assert fake.requests(wire.name) == 2  # no retry of its own: the policy owns retries


async def test_a_silent_provider_times_out(fake: FakeLLMServer) -> None:
    for name in WIRES:
        fake.configure(name, mode="hang")
        provider = adapter(fake, name, total_s=0.3)
        try:
            with pytest.raises(ProviderTimeout):
                await provider.complete(REQUEST, "model-x")
            with pytest.raises(ProviderTimeout):
                await drain(provider)
        finally:
            await provider.aclose()


async def test_a_stream_cut_mid_way_fails_after_its_text(wire: Any, fake: FakeLLMServer) -> None:
    fake.configure(wire.name, mode="cut", cut_after_tokens=3)
    seen: list[Any] = []
    with pytest.raises(ServerError):
        await collect_into(seen, wire)
    assert "".join(c for c in seen if isinstance(c, str)) == "".join(tokens_of(DEFAULT_TEXT)[:3])


async def test_a_stream_ending_cleanly_without_finish_reason_is_truncated(
    wire: Any, fake: FakeLLMServer
) -> None:
    fake.configure(wire.name, mode="cut", cut_after_tokens=3, cut_clean=True)
    with pytest.raises(TruncatedStream):
        await drain(wire)


async def test_a_chunk_that_is_not_json_breaks_the_stream(wire: Any, fake: FakeLLMServer) -> None:
    fake.configure(wire.name, invalid_chunk_after=2)
    seen: list[Any] = []
    with pytest.raises(MalformedResponse):
        await collect_into(seen, wire)
    assert len([c for c in seen if isinstance(c, str)]) == 2


async def test_an_empty_stream_has_no_text_and_is_complete(wire: Any, fake: FakeLLMServer) -> None:
    """The router turns it into ``EmptyResponse`` (tests/integration/llm/test_fault_matrix.py)."""
    fake.configure(wire.name, mode="empty")
    chunks = await drain(wire)
    assert not [c for c in chunks if isinstance(c, str)]
    assert isinstance(chunks[-1], Usage)


async def test_a_stream_without_done_is_complete(wire: Any, fake: FakeLLMServer) -> None:
    fake.configure(wire.name, omit_done=True)
    chunks = await drain(wire)
    assert "".join(c for c in chunks if isinstance(c, str)) == DEFAULT_TEXT


async def test_a_refused_key_is_cut_out_of_the_message(wire: Any, fake: FakeLLMServer) -> None:
    fake.configure(wire.name, reject_keys=[f"key-{wire.name}"])
    with pytest.raises(AuthFailed) as raised:
        await drain(wire)
    assert f"key-{wire.name}" not in raised.value.message and "[REDACTED]" in raised.value.message


# --- the connection pool -----------------------------------------------------------------------------


class CountingProxy:
    """A loopback TCP relay to the fake that counts the connections clients open."""

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.connections = 0
        self._server: asyncio.Server | None = None
        self._writers: list[asyncio.StreamWriter] = []
        self._relays: set[asyncio.Task[None]] = set()

    async def __aenter__(self) -> str:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        port = self._server.sockets[0].getsockname()[1]
        return f"http://127.0.0.1:{port}"

    async def __aexit__(self, *_: object) -> None:
        assert self._server is not None
        self._server.close()
        for writer in self._writers:
            writer.close()
        for writer in self._writers:
            with suppress(ConnectionError):
                await writer.wait_closed()
        await asyncio.gather(*self._relays, return_exceptions=True)
        await self._server.wait_closed()

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.target_port)
        self._writers += [writer, up_writer]
        relays = [
            asyncio.create_task(self._pipe(reader, up_writer)),
            asyncio.create_task(self._pipe(up_reader, writer)),
        ]
        self._relays.update(relays)
        await asyncio.gather(*relays, return_exceptions=True)

    @staticmethod
    async def _pipe(source: asyncio.StreamReader, sink: asyncio.StreamWriter) -> None:
        with suppress(ConnectionError):
            while data := await source.read(65536):
                sink.write(data)
                await sink.drain()
        sink.close()


def fake_port(fake: FakeLLMServer) -> int:
    return int(fake.url.rsplit(":", 1)[1])


@pytest.mark.parametrize("omit_done", [False, True])
@pytest.mark.parametrize("name", WIRES)
async def test_calls_reuse_one_connection(name: str, omit_done: bool, fake: FakeLLMServer) -> None:
    """Ten answers, streamed and not, with the operator's key and a caller's own: one TCP
    connection (the body after ``[DONE]`` is read, so the connection goes back to the pool)."""
    fake.configure(name, omit_done=omit_done)
    proxy = CountingProxy(fake_port(fake))
    async with proxy as url:
        operator = adapter(fake, name, base=url + ("/v1" if name == "openai" else ""))
        caller = operator.with_key("caller-own-key")
        try:
            for _ in range(4):
                await drain(operator)
                await operator.complete(REQUEST, "model-x")
            await drain(caller)
            assert fake.stats()[name]["authorization"] == "Bearer caller-own-key"
            await caller.aclose()  # a caller's adapter leaves the shared pool open
            await drain(operator)
            assert fake.stats()[name]["authorization"] == f"Bearer key-{name}"
        finally:
            await operator.aclose()
    assert proxy.connections == 1


async def test_a_caller_key_works_where_the_operator_has_none(fake: FakeLLMServer) -> None:
    operator = OpenAIProvider(
        api_key=None,
        model="model-x",
        base_url=fake.openai_base_url,
        connect_timeout_s=5.0,
        total_timeout_s=10.0,
    )
    assert not operator.availability().configured
    caller = operator.with_key("caller-own-key")
    try:
        assert caller.availability().configured
        assert "".join(c for c in await drain(caller) if isinstance(c, str)) == DEFAULT_TEXT
    finally:
        await caller.aclose()
        await operator.aclose()


@pytest.mark.parametrize("variable", ["HTTP_PROXY", "http_proxy"])
async def test_an_egress_proxy_from_the_environment_carries_the_calls(
    variable: str, fake: FakeLLMServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Operators behind an egress proxy set HTTPS_PROXY / HTTP_PROXY, as they would for the
    vendors' SDKs: every call goes through it (here a relay that counts connections; the fake
    reads the absolute-form request line a proxy receives)."""
    for name in ("NO_PROXY", "no_proxy", "HTTP_PROXY", "http_proxy", "ALL_PROXY", "all_proxy"):
        monkeypatch.delenv(name, raising=False)
    proxy = CountingProxy(fake_port(fake))
    async with proxy as proxy_url:
        monkeypatch.setenv(variable, proxy_url)
        provider = adapter(fake, "openai")
        try:
            assert "".join(c for c in await drain(provider) if isinstance(c, str)) == DEFAULT_TEXT
        finally:
            await provider.aclose()
    assert proxy.connections == 1


async def test_a_redirect_is_not_followed_so_the_key_goes_nowhere_else(fake: FakeLLMServer) -> None:
    """An endpoint that answers 307 to the fake: the adapter fails (no JSON), and the fake never
    sees the request or its key."""
    target = f"{fake.openai_base_url}/chat/completions"

    async def redirect(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(
            f"HTTP/1.1 307 Temporary Redirect\r\nLocation: {target}\r\nContent-Length: 0\r\n\r\n".encode()
        )
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(redirect, "127.0.0.1", 0)
    before = fake.stats()["openai"]["requests"]
    provider = adapter(fake, "openai", base=f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}/v1")
    try:
        with pytest.raises(ProviderError):
            await provider.complete(REQUEST, "model-x")
    finally:
        await provider.aclose()
        server.close()
        await server.wait_closed()
    assert fake.stats()["openai"]["requests"] == before
