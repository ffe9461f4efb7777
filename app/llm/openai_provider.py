"""OpenAI adapter (``openai`` SDK); the policy owns retries, not the SDK."""

from __future__ import annotations

from collections.abc import AsyncIterator

import openai

from app.llm.openai_compat import chat_messages, generation_of, stream_chunks, translate
from app.llm.provider import Availability
from app.llm.types import ChatRequest, Generation, ProviderChunk


class OpenAIProvider:
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
        self._client: openai.AsyncOpenAI | None = None
        if api_key:
            self._client = openai.AsyncOpenAI(
                api_key=api_key,
                base_url=base_url,
                max_retries=0,
                timeout=openai.Timeout(total_timeout_s, connect=connect_timeout_s),
            )

    @property
    def name(self) -> str:
        return "openai"

    @property
    def default_model(self) -> str:
        return self._model

    async def warm_up(self) -> None:
        return None

    def availability(self) -> Availability:
        return Availability.ready() if self._client else Availability.missing("OPENAI_API_KEY is not set")

    def _require_client(self) -> openai.AsyncOpenAI:
        assert self._client is not None, "the chain never calls an unconfigured provider"
        return self._client

    async def complete(self, request: ChatRequest, model: str) -> Generation:
        client = self._require_client()
        try:
            response = await client.chat.completions.create(
                model=model,
                messages=chat_messages(request),
                temperature=openai.omit if request.temperature is None else request.temperature,
                max_tokens=openai.omit if request.max_tokens is None else request.max_tokens,
            )
            return generation_of(response, model)
        except Exception as exc:
            raise translate(exc) from exc

    async def stream(self, request: ChatRequest, model: str) -> AsyncIterator[ProviderChunk]:
        client = self._require_client()
        try:
            stream = await client.chat.completions.create(
                model=model,
                messages=chat_messages(request),
                stream=True,
                stream_options={"include_usage": True},
                temperature=openai.omit if request.temperature is None else request.temperature,
                max_tokens=openai.omit if request.max_tokens is None else request.max_tokens,
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
