"""OpenAI adapter (``openai`` SDK); the policy owns retries, not the SDK."""

from __future__ import annotations

import openai

from app.llm.openai_compat import OpenAICompatibleProvider


class OpenAIProvider(OpenAICompatibleProvider):
    provider_name = "openai"
    key_variable = "OPENAI_API_KEY"
    client_class = openai.AsyncOpenAI
    timeout_class = openai.Timeout
