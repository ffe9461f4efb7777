"""OpenAI adapter: OpenAI's chat-completions wire (``app.llm.openai_wire``); the policy owns
retries."""

from __future__ import annotations

from app.llm.openai_compat import OpenAICompatibleProvider


class OpenAIProvider(OpenAICompatibleProvider):
    provider_name = "openai"
    key_variable = "OPENAI_API_KEY"
    default_base_url = "https://api.openai.com/v1"  # the openai SDK's
