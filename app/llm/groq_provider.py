"""Groq adapter: Groq's OpenAI-compatible wire (``app.llm.openai_wire``); the policy owns
retries."""

from __future__ import annotations

from app.llm.openai_compat import OpenAICompatibleProvider


class GroqProvider(OpenAICompatibleProvider):
    provider_name = "groq"
    key_variable = "GROQ_API_KEY"
    default_base_url = "https://api.groq.com"  # the groq SDK's; it adds the path below
    chat_path = "/openai/v1/chat/completions"
