"""Groq adapter (``groq`` SDK, OpenAI-compatible wire); the policy owns retries, not the SDK."""

from __future__ import annotations

from collections.abc import AsyncIterator

import groq

from app.llm.openai_compat import chat_messages, generation_of, stream_chunks, translate
from app.llm.provider import Availability
from app.llm.types import ChatRequest, Generation, ProviderChunk


class GroqProvider:
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
        self._client: groq.AsyncGroq | None = None
        if api_key:
            self._client = groq.AsyncGroq(
                api_key=api_key,
                base_url=base_url,
                max_retries=0,
                timeout=groq.Timeout(total_timeout_s, connect=connect_timeout_s),
            )

    @property
    def name(self) -> str:
        return "groq"

    @property
    def default_model(self) -> str:
        return self._model

    async def warm_up(self) -> None:
        return None

    def availability(self) -> Availability:
        return Availability.ready() if self._client else Availability.missing("GROQ_API_KEY is not set")

    def _require_client(self) -> groq.AsyncGroq:
        assert self._client is not None, "the chain never calls an unconfigured provider"
        return self._client

    async def complete(self, request: ChatRequest, model: str) -> Generation:
        client = self._require_client()
        try:
            response = await client.chat.completions.create(
                model=model,
                messages=chat_messages(request),
                temperature=groq.omit if request.temperature is None else request.temperature,
                max_tokens=groq.omit if request.max_tokens is None else request.max_tokens,
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
                temperature=groq.omit if request.temperature is None else request.temperature,
                max_tokens=groq.omit if request.max_tokens is None else request.max_tokens,
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
