"""OpenAI adapter (``openai`` SDK); the policy owns retries, not the SDK."""

from __future__ import annotations

from typing import Any

import openai

from app.llm.openai_compat import OpenAICompatibleProvider


class OpenAIProvider(OpenAICompatibleProvider):
    provider_name = "openai"
    key_variable = "OPENAI_API_KEY"
    stream_options = {"include_usage": True}

    def make_client(self, api_key: str, base_url: str | None, connect_s: float, total_s: float) -> Any:
        return openai.AsyncOpenAI(
            api_key=api_key,
            base_url=base_url,
            max_retries=0,
            timeout=openai.Timeout(total_s, connect=connect_s),
        )

    def omitted(self) -> Any:
        return openai.omit
