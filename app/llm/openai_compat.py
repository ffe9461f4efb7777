"""What the OpenAI and Groq adapters share: both SDKs speak OpenAI's chat completions shape."""

from __future__ import annotations

from collections.abc import AsyncGenerator, AsyncIterator, Callable
from typing import Any, ClassVar

from app.llm.classify import (
    body_message,
    from_status,
    from_unexpected,
    headers_of,
    refused_by_content_filter,
)
from app.llm.errors import ContentFiltered, EmptyResponse, MalformedResponse, ProviderError, TruncatedStream
from app.llm.provider import SDKProvider
from app.llm.types import ChatRequest, Generation, ProviderChunk, ResponseModel, Usage


def chat_options(request: ChatRequest) -> dict[str, Any]:
    """The request's part of ``chat.completions.create``; unset sampling options are left out
    (the SDK then omits them from the body)."""
    options: dict[str, Any] = {"messages": [{"role": m.role, "content": m.content} for m in request.messages]}
    if request.temperature is not None:
        options["temperature"] = request.temperature
    if request.max_tokens is not None:
        options["max_tokens"] = request.max_tokens
    return options


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
        if refused_by_content_filter(reason):
            raise ContentFiltered(f"the answer was withheld by the content filter (finish_reason {reason})")
        raise EmptyResponse(f"the completion has no text (finish_reason {reason})")
    if not isinstance(content, str):
        raise MalformedResponse("the completion has no text content")
    return Generation(
        text=content, model=str(getattr(response, "model", None) or model), usage=usage_of(response.usage)
    )


async def stream_chunks(stream: Any) -> AsyncIterator[ProviderChunk]:
    """The model the chunks name (once, before any text), text chunks, then the usage;
    ``TruncatedStream`` unless a ``finish_reason`` arrived. Text after the ``finish_reason`` chunk
    is not expected; a stream that ends after its ``finish_reason`` without ``data: [DONE]`` is
    complete (the SDKs end iteration at the end of the body either way)."""
    finished = False
    texted = False
    usage: Usage | None = None
    named = False
    async for chunk in stream:
        model = getattr(chunk, "model", None)
        if not named and isinstance(model, str) and model:
            named = True
            yield ResponseModel(model)
        usage = usage_of(getattr(chunk, "usage", None)) or usage
        x_groq = getattr(chunk, "x_groq", None)
        if x_groq is not None:
            usage = usage_of(getattr(x_groq, "usage", None)) or usage
        for choice in chunk.choices or ():
            text = choice.delta.content if choice.delta is not None else None
            if text:
                texted = True
                yield text
            if choice.finish_reason:
                finished = True
                reason = choice.finish_reason
                if not texted and refused_by_content_filter(reason):
                    raise ContentFiltered(f"the content filter withheld the answer (finish_reason {reason})")
    if not finished:
        raise TruncatedStream("the stream ended without a finish_reason")
    if usage is not None:
        yield usage


class OpenAICompatibleProvider(SDKProvider[Any]):
    """The adapter both SDKs share; subclasses name the provider and its SDK's client and timeout
    classes (the two SDKs mirror each other but do not share types).

    Both are asked for the usage of a stream (``stream_options.include_usage``: OpenAI reports
    it only when asked, in a last chunk without choices; Groq also sends it in ``x_groq``).
    ``stream_options_in_body``: the SDK has no ``stream_options`` argument (Groq's), so it goes in
    ``extra_body``."""

    client_class: ClassVar[Callable[..., Any]]
    timeout_class: ClassVar[Callable[..., Any]]
    stream_options: ClassVar[dict[str, Any]] = {"include_usage": True}
    stream_options_in_body: ClassVar[bool] = False

    def make_client(self, api_key: str, base_url: str | None, connect_s: float, total_s: float) -> Any:
        timeout = self.timeout_class(total_s, connect=connect_s)
        return self.client_class(api_key=api_key, base_url=base_url, max_retries=0, timeout=timeout)

    async def close_client(self, client: Any) -> None:
        await client.close()

    def translate(self, exc: Exception) -> ProviderError:
        """Duck-typed: both SDKs' status errors carry ``status_code``, ``body`` and ``response``."""
        status = getattr(exc, "status_code", None)
        if isinstance(status, int) and status >= 400:
            message = body_message(getattr(exc, "body", None), str(exc))
            return from_status(status, message, headers_of(getattr(exc, "response", None)))
        return from_unexpected(exc)

    async def generate(self, client: Any, request: ChatRequest, model: str) -> Generation:
        response = await client.chat.completions.create(model=model, **chat_options(request))
        return generation_of(response, model)

    async def generate_stream(
        self, client: Any, request: ChatRequest, model: str
    ) -> AsyncGenerator[ProviderChunk, None]:
        options = {"stream_options": self.stream_options}
        extra = {"extra_body": options} if self.stream_options_in_body else options
        stream = await client.chat.completions.create(
            model=model, stream=True, **extra, **chat_options(request)
        )
        try:
            async for chunk in stream_chunks(stream):
                yield chunk
        finally:
            await stream.close()
