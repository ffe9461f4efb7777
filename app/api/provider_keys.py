"""Bring your own key on the chat endpoints: ``X-Provider-Key-Gemini``, ``X-Provider-Key-Groq``
and ``X-Provider-Key-Openai`` (see ``app.llm.caller_keys`` for what the service promises about
them). Declared as optional header parameters (``GeminiKey``, ``GroqKey``, ``OpenAIKey``), so every
endpoint that takes ``ChatEntryDep`` documents them in its OpenAPI.

The request's chain is opened when the endpoint is called and closed by the dependency's exit,
which FastAPI runs once the response has been sent: after the last byte of a streamed answer."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Annotated

from fastapi import Header

from app.llm.caller_keys import CallerChain, CallerChains, CallerKeys

_DESCRIPTION = (
    "Your own {name} API key for this request only: tried before the service's own providers, "
    "never stored, logged or cached, and answers made with it bypass the shared answer cache. "
    "A key the provider refuses is 422 `provider_key_rejected` (an `error` event when streaming)."
)


def _key_header(name: str, header: str) -> object:
    return Header(alias=header, description=_DESCRIPTION.format(name=name), max_length=512)


GeminiKey = Annotated[str | None, _key_header("Gemini", "X-Provider-Key-Gemini")]
GroqKey = Annotated[str | None, _key_header("Groq", "X-Provider-Key-Groq")]
OpenAIKey = Annotated[str | None, _key_header("OpenAI", "X-Provider-Key-Openai")]


@asynccontextmanager
async def opened_caller_chain(
    chains: CallerChains, gemini: str | None, groq: str | None, openai: str | None
) -> AsyncIterator[CallerChain | None]:
    """The chain with the caller's keys, closed on exit, or None when the request brought none."""
    keys = CallerKeys.of({"gemini": gemini, "groq": groq, "openai": openai})
    if not keys:
        yield None
        return
    opened = chains.open(keys)
    try:
        yield opened
    finally:
        await opened.aclose()
