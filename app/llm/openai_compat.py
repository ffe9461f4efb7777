"""What the OpenAI and Groq adapters share: both SDKs speak OpenAI's chat completions shape."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

from app.llm.classify import body_message, from_status, from_unexpected, headers_of
from app.llm.errors import MalformedResponse, ProviderError, TruncatedStream
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
