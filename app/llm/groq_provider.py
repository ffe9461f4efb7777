"""Groq adapter (``groq`` SDK, OpenAI-compatible wire); the policy owns retries, not the SDK."""

from __future__ import annotations

from typing import Any

import groq

from app.llm.openai_compat import OpenAICompatibleProvider


class GroqProvider(OpenAICompatibleProvider):
    provider_name = "groq"
    key_variable = "GROQ_API_KEY"

    def make_client(self, api_key: str, base_url: str | None, connect_s: float, total_s: float) -> Any:
        return groq.AsyncGroq(
            api_key=api_key,
            base_url=base_url,
            max_retries=0,
            timeout=groq.Timeout(total_s, connect=connect_s),
        )

    def omitted(self) -> Any:
        return groq.omit
