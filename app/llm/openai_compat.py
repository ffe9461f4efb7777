"""What the OpenAI and Groq adapters share: both SDKs speak OpenAI's chat completions shape."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

from app.llm.classify import body_message, from_status, from_unexpected, headers_of
from app.llm.errors import EmptyResponse, MalformedResponse, ProviderError, TruncatedStream
from app.llm.provider import Availability
from app.llm.types import ChatRequest, Generation, ProviderChunk, Usage


def chat_messages(request: ChatRequest) -> list[Any]:
    return [{"role": message.role, "content": message.content} for message in request.messages]


def translate(exc: BaseException) -> ProviderError:
    """An SDK exception as a typed provider error (duck-typed: the two SDKs mirror each other)."""
    status = getattr(exc, "status_code", None)
    if isinstance(status, int) and status >= 400:
        message = body_message(getattr(exc, "body", None), str(exc))
        return from_status(status, message, headers_of(getattr(exc, "response", None)))
    return from_unexpected(exc)


def usage_of(raw: Any) -> Usage | None:
    if raw is None:
        return None
    return Usage(
        prompt_tokens=int(getattr(raw, "prompt_tokens", 0) or 0),
        completion_tokens=int(getattr(raw, "completion_tokens", 0) or 0),
    )


def generation_of(response: Any, model: str) -> Generation:
    choices = getattr(response, "choices", None)
    if not choices:
        raise MalformedResponse("the completion has no choices")
    content = choices[0].message.content
    if content is None or (isinstance(content, str) and not content.strip()):
        reason = getattr(choices[0], "finish_reason", None)
        raise EmptyResponse(f"the completion has no text (finish_reason {reason})")
    if not isinstance(content, str):
        raise MalformedResponse("the completion has no text content")
    return Generation(
        text=content, model=str(getattr(response, "model", None) or model), usage=usage_of(response.usage)
    )


async def stream_chunks(stream: Any) -> AsyncIterator[ProviderChunk]:
    """Text chunks, then the usage; ``TruncatedStream`` unless a ``finish_reason`` arrived."""
    finished = False
    usage: Usage | None = None
    async for chunk in stream:
        usage = usage_of(getattr(chunk, "usage", None)) or usage
        x_groq = getattr(chunk, "x_groq", None)
        if x_groq is not None:
            usage = usage_of(getattr(x_groq, "usage", None)) or usage
        for choice in chunk.choices or ():
            text = choice.delta.content if choice.delta is not None else None
            if text:
                yield text
            if choice.finish_reason:
                finished = True
    if not finished:
        raise TruncatedStream("the stream ended without a finish_reason")
    if usage is not None:
        yield usage


class OpenAICompatibleProvider:
    """The adapter both SDKs share; subclasses name the provider and build the SDK client.

    ``stream_options`` carries what one SDK needs that the other does not (OpenAI reports usage in
    a stream only when asked; Groq always sends it in ``x_groq``)."""

    provider_name: str = ""
    key_variable: str = ""
    stream_options: dict[str, Any] | None = None

    def __init__(
        self,
        *,
        api_key: str | None,
        model: str,
        base_url: str | None,
        connect_timeout_s: float,
        total_timeout_s: float,
    ) -> None:
        self._model = model
        self._client: Any = None
        if api_key:
            self._client = self.make_client(api_key, base_url, connect_timeout_s, total_timeout_s)

    def make_client(self, api_key: str, base_url: str | None, connect_s: float, total_s: float) -> Any:
        raise NotImplementedError

    def omitted(self) -> Any:
        """The SDK's "not given" sentinel."""
        raise NotImplementedError

    @property
    def name(self) -> str:
        return self.provider_name

    @property
    def default_model(self) -> str:
        return self._model

    async def warm_up(self) -> None:
        return None

    def availability(self) -> Availability:
        if self._client is not None:
            return Availability.ready()
        return Availability.missing(f"{self.key_variable} is not set")

    def _require_client(self) -> Any:
        assert self._client is not None, "the chain never calls an unconfigured provider"
        return self._client

    def _options(self, request: ChatRequest) -> dict[str, Any]:
        omit = self.omitted()
        return {
            "messages": chat_messages(request),
            "temperature": omit if request.temperature is None else request.temperature,
            "max_tokens": omit if request.max_tokens is None else request.max_tokens,
        }

    async def complete(self, request: ChatRequest, model: str) -> Generation:
        client = self._require_client()
        try:
            response = await client.chat.completions.create(model=model, **self._options(request))
            return generation_of(response, model)
        except Exception as exc:
            raise translate(exc) from exc

    async def stream(self, request: ChatRequest, model: str) -> AsyncIterator[ProviderChunk]:
        client = self._require_client()
        extra = {"stream_options": self.stream_options} if self.stream_options else {}
        try:
            stream = await client.chat.completions.create(
                model=model, stream=True, **extra, **self._options(request)
            )
            try:
                async for chunk in stream_chunks(stream):
                    yield chunk
            finally:
                await stream.close()
        except Exception as exc:
            raise translate(exc) from exc

    async def aclose(self) -> None:
        if self._client is not None:
            await self._client.close()
