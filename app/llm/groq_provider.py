"""Groq adapter (``groq`` SDK, OpenAI-compatible wire); the policy owns retries, not the SDK."""

from __future__ import annotations

import groq

from app.llm.openai_compat import OpenAICompatibleProvider


class GroqProvider(OpenAICompatibleProvider):
    provider_name = "groq"
    key_variable = "GROQ_API_KEY"
    client_class = groq.AsyncGroq
    timeout_class = groq.Timeout
    stream_options_in_body = True  # groq 1.x's ``create`` has no ``stream_options`` argument
