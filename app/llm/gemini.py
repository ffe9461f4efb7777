"""Gemini adapter (``google-genai``). SDK retries off; the policy owns retries and timeouts.

The streaming request is sent before the first chunk is awaited, so a 429 or 5xx surfaces while
the chain can still fall back (nothing has reached the client yet).
"""

from __future__ import annotations

from collections.abc import AsyncGenerator
from dataclasses import dataclass
from typing import Any

import httpx
from google import genai
from google.genai import errors as genai_errors
from google.genai import types as genai_types

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

API_VERSION = "v1beta"


@dataclass(frozen=True)
class GeminiClient:
    """A ``google-genai`` client on an httpx client of our own: the SDK would otherwise pick
    aiohttp when it is installed, and this is where the connect timeout can be set. Built here
    for every Gemini caller (chat and embeddings), closed with ``aclose``."""

    sdk: genai.Client
    http: httpx.AsyncClient

    @classmethod
    def build(
        cls,
        api_key: str,
        base_url: str | None,
        *,
        connect_timeout_s: float,
        total_timeout_s: float,
        attempts: int = 1,  # 1: the SDK never retries on its own
    ) -> GeminiClient:
        http = httpx.AsyncClient(timeout=httpx.Timeout(total_timeout_s, connect=connect_timeout_s))
        options = genai_types.HttpOptions(
            base_url=base_url,
            api_version=API_VERSION,
            timeout=int(total_timeout_s * 1000),
            retry_options=genai_types.HttpRetryOptions(attempts=attempts),
            httpx_async_client=http,
        )
        return cls(sdk=genai.Client(api_key=api_key, http_options=options), http=http)

    async def aclose(self) -> None:
        await self.sdk.aio.aclose()
        await self.http.aclose()


def contents_and_config(
    request: ChatRequest,
) -> tuple[list[genai_types.Content], genai_types.GenerateContentConfig]:
    """The request in Gemini's terms: system messages become the system instruction, the
    assistant's turns the "model" role."""
    system = "\n\n".join(m.content for m in request.messages if m.role == "system") or None
    contents = [
        genai_types.Content(
            role="model" if message.role == "assistant" else "user",
            parts=[genai_types.Part(text=message.content)],
        )
        for message in request.messages
        if message.role != "system"
    ]
    config = genai_types.GenerateContentConfig(
        system_instruction=system,
        temperature=request.temperature,
        max_output_tokens=request.max_tokens,
        automatic_continuation=False,
    )
    return contents, config


def usage_of(response: Any) -> Usage | None:
    metadata = getattr(response, "usage_metadata", None)
    if metadata is None:
        return None
    return Usage(
        prompt_tokens=int(metadata.prompt_token_count or 0),
        completion_tokens=int(metadata.candidates_token_count or 0),
    )


def blocked_reason(response: Any) -> str | None:
    """Why Gemini refused the prompt itself (``promptFeedback.blockReason``), if it did."""
    feedback = getattr(response, "prompt_feedback", None)
    reason = getattr(feedback, "block_reason", None) if feedback is not None else None
    if reason is None:
        return None
    return str(getattr(reason, "value", reason))


def text_of(response: Any) -> str:
    candidates = getattr(response, "candidates", None) or []
    if not candidates or candidates[0].content is None:
        return ""
    return "".join(part.text or "" for part in candidates[0].content.parts or [])


class GeminiProvider(SDKProvider[GeminiClient]):
    provider_name = "gemini"
    key_variable = "GEMINI_API_KEY"

    def make_client(
        self, api_key: str, base_url: str | None, connect_s: float, total_s: float
    ) -> GeminiClient:
        return GeminiClient.build(api_key, base_url, connect_timeout_s=connect_s, total_timeout_s=total_s)

    async def close_client(self, client: GeminiClient) -> None:
        await client.aclose()

    def translate(self, exc: Exception) -> ProviderError:
        if isinstance(exc, genai_errors.APIError) and isinstance(exc.code, int) and exc.code >= 400:
            message = body_message(exc.details, exc.message or str(exc))
            return from_status(exc.code, message, headers_of(exc.response))
        return from_unexpected(exc)

    async def generate(self, client: GeminiClient, request: ChatRequest, model: str) -> Generation:
        contents, config = contents_and_config(request)
        response = await client.sdk.aio.models.generate_content(model=model, contents=contents, config=config)
        text = text_of(response)
        candidates = response.candidates or []
        blocked = blocked_reason(response)
        if blocked is not None:
            raise ContentFiltered(f"Gemini blocked the prompt ({blocked})")
        if not candidates or candidates[0].finish_reason is None:
            raise MalformedResponse("the response has no finished candidate")
        if not text.strip() and refused_by_content_filter(candidates[0].finish_reason):
            raise ContentFiltered(f"Gemini withheld the answer (finish reason {candidates[0].finish_reason})")
        if not text.strip():
            raise EmptyResponse(f"the answer has no text (finish reason {candidates[0].finish_reason})")
        return Generation(text=text, model=response.model_version or model, usage=usage_of(response))

    async def generate_stream(
        self, client: GeminiClient, request: ChatRequest, model: str
    ) -> AsyncGenerator[ProviderChunk, None]:
        contents, config = contents_and_config(request)
        stream = await client.sdk.aio.models.generate_content_stream(
            model=model, contents=contents, config=config
        )
        finished = False
        named = False
        texted = False
        usage: Usage | None = None  # usage_metadata: running totals, the last one counts
        try:
            async for chunk in stream:
                blocked = blocked_reason(chunk)
                if blocked is not None:  # the prompt's doing, not a broken stream
                    raise ContentFiltered(f"Gemini blocked the prompt ({blocked})")
                if not named and chunk.model_version:
                    named = True
                    yield ResponseModel(chunk.model_version)
                usage = usage_of(chunk) or usage
                text = text_of(chunk)
                if text:
                    texted = True
                    yield text
                candidates = chunk.candidates or []
                if candidates and candidates[0].finish_reason is not None:
                    finished = True
                    reason = candidates[0].finish_reason
                    if not texted and refused_by_content_filter(reason):
                        raise ContentFiltered(f"Gemini withheld the answer (finish reason {reason})")
        finally:
            aclose = getattr(stream, "aclose", None)
            if aclose is not None:
                await aclose()
        if not finished:
            raise TruncatedStream("the stream ended without a finishReason")
        if usage is not None:
            yield usage
