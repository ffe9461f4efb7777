"""What the OpenAI and Groq adapters share: both speak OpenAI's chat-completions wire, sent and
read by ``app.llm.openai_wire`` (plain aiohttp, not the vendors' SDKs)."""

from __future__ import annotations

from collections.abc import AsyncGenerator
from typing import Any, ClassVar

import aiohttp

from app.llm.classify import from_unexpected, refused_by_content_filter
from app.llm.errors import ContentFiltered, EmptyResponse, MalformedResponse, ProviderError, TruncatedStream
from app.llm.openai_wire import ChatWire, open_pool
from app.llm.provider import SDKProvider
from app.llm.types import ChatRequest, Generation, ProviderChunk, ResponseModel, Usage


def chat_body(request: ChatRequest, model: str) -> dict[str, Any]:
    """The request's JSON body; unset sampling options are left out (as the SDKs leave them)."""
    body: dict[str, Any] = {
        "model": model,
        "messages": [{"role": m.role, "content": m.content} for m in request.messages],
    }
    if request.temperature is not None:
        body["temperature"] = request.temperature
    if request.max_tokens is not None:
        body["max_tokens"] = request.max_tokens
    return body


def usage_of(raw: Any) -> Usage | None:
    if not isinstance(raw, dict):
        return None
    return Usage(
        prompt_tokens=int(raw.get("prompt_tokens") or 0),
        completion_tokens=int(raw.get("completion_tokens") or 0),
    )


def _object(value: Any, what: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise MalformedResponse(f"{what} is not a JSON object")
    return value


def _choices(response: dict[str, Any]) -> list[Any]:
    choices = response.get("choices") or []
    if not isinstance(choices, list):
        raise MalformedResponse("choices is not a list")
    return choices


def _text(holder: Any, what: str) -> str | None:
    """``content`` of a message or delta: a string, or absent."""
    text = _object(holder, what).get("content")
    if text is not None and not isinstance(text, str):
        raise MalformedResponse(f"the {what}'s content is not text")
    return text


def generation_of(response: Any, model: str) -> Generation:
    response = _object(response, "the completion")
    choices = _choices(response)
    if not choices:
        raise MalformedResponse("the completion has no choices")
    choice = _object(choices[0], "a choice")
    content = _text(choice.get("message"), "message")
    if not content or not content.strip():
        reason = choice.get("finish_reason")
        if refused_by_content_filter(reason):
            raise ContentFiltered(f"the answer was withheld by the content filter (finish_reason {reason})")
        raise EmptyResponse(f"the completion has no text (finish_reason {reason})")
    named = response.get("model")
    return Generation(
        text=content,
        model=named if isinstance(named, str) and named else model,
        usage=usage_of(response.get("usage")),
    )


async def stream_chunks(events: AsyncGenerator[Any, None]) -> AsyncGenerator[ProviderChunk, None]:
    """The model the chunks name (once, before any text), text chunks, then the usage (OpenAI's
    last chunk without choices, or Groq's ``x_groq``); ``TruncatedStream`` unless a
    ``finish_reason`` arrived. A stream that ends after its ``finish_reason`` without
    ``data: [DONE]`` is complete. Closes ``events`` however it ends."""
    finished = texted = named = False
    usage: Usage | None = None
    try:
        async for chunk in events:
            chunk = _object(chunk, "a stream chunk")
            model = chunk.get("model")
            if not named and isinstance(model, str) and model:
                named = True
                yield ResponseModel(model)
            usage = usage_of(chunk.get("usage")) or usage
            x_groq = chunk.get("x_groq")
            if isinstance(x_groq, dict):
                usage = usage_of(x_groq.get("usage")) or usage
            for choice in _choices(chunk):
                choice = _object(choice, "a choice")
                delta = choice.get("delta")
                text = _text(delta, "delta") if delta is not None else None
                if text:
                    texted = True
                    yield text
                reason = choice.get("finish_reason")
                if reason:
                    finished = True
                    if not texted and refused_by_content_filter(reason):
                        raise ContentFiltered(
                            f"the content filter withheld the answer (finish_reason {reason})"
                        )
    finally:
        await events.aclose()
    if not finished:
        raise TruncatedStream("the stream ended without a finish_reason")
    if usage is not None:
        yield usage


class OpenAICompatibleProvider(SDKProvider[ChatWire]):
    """The adapter both providers share; subclasses name the provider and its endpoint.

    Streams ask for their usage (``stream_options.include_usage``: OpenAI reports it only when
    asked, in a last chunk without choices; Groq also sends it in ``x_groq``).

    ``pool``: the connection pool to use instead of one of its own (``with_key``); a borrowed pool
    stays open when the adapter closes."""

    default_base_url: ClassVar[str]
    chat_path: ClassVar[str] = "/chat/completions"  # after the base URL
    stream_options: ClassVar[dict[str, Any]] = {"include_usage": True}

    def __init__(
        self,
        *,
        api_key: str | None,
        model: str,
        base_url: str | None,
        connect_timeout_s: float,
        total_timeout_s: float,
        pool: aiohttp.ClientSession | None = None,
    ) -> None:
        self._base_url = base_url
        self._timeouts = (connect_timeout_s, total_timeout_s)
        self._url = (base_url or self.default_base_url).rstrip("/") + self.chat_path
        self._pool = pool
        self._owns_pool = pool is None
        super().__init__(
            api_key=api_key,
            model=model,
            base_url=base_url,
            connect_timeout_s=connect_timeout_s,
            total_timeout_s=total_timeout_s,
        )

    def _shared_pool(self) -> aiohttp.ClientSession:
        if self._pool is None:
            self._pool = open_pool(*self._timeouts)
        return self._pool

    def with_key(self, api_key: str) -> OpenAICompatibleProvider:
        """This adapter with another key (a caller's own) on this one's connection pool: no
        client, pool or TLS context is built per request."""
        return type(self)(
            api_key=api_key,
            model=self._model,
            base_url=self._base_url,
            connect_timeout_s=self._timeouts[0],
            total_timeout_s=self._timeouts[1],
            pool=self._shared_pool(),
        )

    def make_client(self, api_key: str, base_url: str | None, connect_s: float, total_s: float) -> ChatWire:
        return ChatWire.of(self._shared_pool(), self._url, api_key)

    async def close_client(self, client: ChatWire) -> None:
        return None  # the pool is closed by ``aclose``: callers' adapters share it

    async def aclose(self) -> None:
        if self._owns_pool and self._pool is not None:
            await self._pool.close()

    def translate(self, exc: Exception) -> ProviderError:
        """Status errors arrive typed (``openai_wire.status_error``); aiohttp's transport errors
        and broken bodies are classified like any other."""
        return from_unexpected(exc)

    async def generate(self, client: ChatWire, request: ChatRequest, model: str) -> Generation:
        return generation_of(await client.complete(chat_body(request, model)), model)

    def generate_stream(
        self, client: ChatWire, request: ChatRequest, model: str
    ) -> AsyncGenerator[ProviderChunk, None]:
        body = chat_body(request, model)
        body["stream"] = True
        body["stream_options"] = self.stream_options
        return stream_chunks(client.events(body))
