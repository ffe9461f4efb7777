"""Gemini adapter (``google-genai``). SDK retries off; the policy owns retries and timeouts.

The streaming request is sent before the first chunk is awaited, so a 429 or 5xx surfaces while
the chain can still fall back (nothing has reached the client yet).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import httpx
from google import genai
from google.genai import errors as genai_errors
from google.genai import types as genai_types

from app.llm.classify import body_message, from_status, from_unexpected, headers_of
from app.llm.errors import EmptyResponse, MalformedResponse, ProviderError, TruncatedStream
from app.llm.provider import Availability
from app.llm.types import ChatRequest, Generation, ProviderChunk, Usage

API_VERSION = "v1beta"


def translate(exc: BaseException) -> ProviderError:
    if isinstance(exc, genai_errors.APIError) and isinstance(exc.code, int) and exc.code >= 400:
        message = body_message(exc.details, exc.message or str(exc))
        return from_status(exc.code, message, headers_of(exc.response))
    return from_unexpected(exc)


def contents_of(request: ChatRequest) -> tuple[list[genai_types.Content], str | None]:
    system = "\n\n".join(m.content for m in request.messages if m.role == "system") or None
    contents = [
        genai_types.Content(
            role="model" if message.role == "assistant" else "user",
            parts=[genai_types.Part(text=message.content)],
        )
        for message in request.messages
        if message.role != "system"
    ]
    return contents, system


def config_of(request: ChatRequest, system: str | None) -> genai_types.GenerateContentConfig:
    return genai_types.GenerateContentConfig(
        system_instruction=system,
        temperature=request.temperature,
        max_output_tokens=request.max_tokens,
        automatic_continuation=False,
    )


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


class GeminiProvider:
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
        self._client: genai.Client | None = None
        self._http: httpx.AsyncClient | None = None
        if api_key:
            # Our own httpx client: the SDK would otherwise pick aiohttp when it is installed,
            # and this is where the connect timeout can be set.
            self._http = httpx.AsyncClient(timeout=httpx.Timeout(total_timeout_s, connect=connect_timeout_s))
            self._client = genai.Client(
                api_key=api_key,
                http_options=genai_types.HttpOptions(
                    base_url=base_url,
                    api_version=API_VERSION,
                    timeout=int(total_timeout_s * 1000),
                    retry_options=genai_types.HttpRetryOptions(attempts=1),
                    httpx_async_client=self._http,
                ),
            )

    @property
    def name(self) -> str:
        return "gemini"

    @property
    def default_model(self) -> str:
        return self._model

    async def warm_up(self) -> None:
        return None

    def availability(self) -> Availability:
        return Availability.ready() if self._client else Availability.missing("GEMINI_API_KEY is not set")

    def _require_client(self) -> genai.Client:
        assert self._client is not None, "the chain never calls an unconfigured provider"
        return self._client

    async def complete(self, request: ChatRequest, model: str) -> Generation:
        client = self._require_client()
        contents, system = contents_of(request)
        try:
            response = await client.aio.models.generate_content(
                model=model,
                contents=contents,
                config=config_of(request, system),
            )
        except Exception as exc:
            raise translate(exc) from exc
        text = text_of(response)
        candidates = response.candidates or []
        blocked = blocked_reason(response)
        if blocked is not None:
            raise EmptyResponse(f"Gemini blocked the prompt ({blocked})")
        if not candidates or candidates[0].finish_reason is None:
            raise MalformedResponse("the response has no finished candidate")
        if not text.strip():
            raise EmptyResponse(f"the answer has no text (finish reason {candidates[0].finish_reason})")
        return Generation(text=text, model=response.model_version or model, usage=usage_of(response))

    async def stream(self, request: ChatRequest, model: str) -> AsyncIterator[ProviderChunk]:
        client = self._require_client()
        contents, system = contents_of(request)
        try:
            stream = await client.aio.models.generate_content_stream(
                model=model,
                contents=contents,
                config=config_of(request, system),
            )
            finished = False
            usage: Usage | None = None
            try:
                async for chunk in stream:
                    blocked = blocked_reason(chunk)
                    if blocked is not None:  # the prompt's doing, not a broken stream
                        raise EmptyResponse(f"Gemini blocked the prompt ({blocked})")
                    usage = usage_of(chunk) or usage
                    text = text_of(chunk)
                    if text:
                        yield text
                    candidates = chunk.candidates or []
                    if candidates and candidates[0].finish_reason is not None:
                        finished = True
            finally:
                aclose = getattr(stream, "aclose", None)
                if aclose is not None:
                    await aclose()
            if not finished:
                raise TruncatedStream("the stream ended without a finishReason")
            if usage is not None:
                yield usage
        except Exception as exc:
            raise translate(exc) from exc

    async def aclose(self) -> None:
        if self._client is not None:
            await self._client.aio.aclose()
        if self._http is not None:
            await self._http.aclose()
