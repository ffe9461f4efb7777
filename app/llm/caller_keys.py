"""Bring your own key: a caller's own provider keys, used for one request only.

A caller may send ``X-Provider-Key-Gemini``, ``X-Provider-Key-Groq`` or ``X-Provider-Key-Openai``
with a chat request. ``CallerChains.open`` then builds, for that request, adapters of the same
classes and settings as the operator's (model, base URL, timeouts, allow-list) around the
caller's key, and a chain that tries them first and the operator's other providers after them.
``CallerChain.aclose`` closes those adapters when the response has ended.

What keeps the key the caller's alone:

- It is never stored: it lives in this request's ``CallerKeys`` (``SecretStr``, so no ``repr``
  shows it) and in the adapters built for it (OpenAI and Groq: the headers of this request's
  calls, sent on the operator's connection pool; Gemini: an SDK client of its own). The chat
  endpoints also keep such answers out of the shared answer cache, both ways
  (``ChatInput.shared_cache``).
- It never benches anyone: its links have cooldowns off (``ProviderPolicy.cooldown_enabled``),
  so the chain neither reads nor writes the shared cooldown store for them. A failure with the
  caller's key never cools down the operator's provider, and the operator's cooldown never stops
  the caller's key.
- It is never in a message: adapters cut the key out of provider error texts
  (``SDKProvider._translated``), and a refused key (401/403) ends the request with
  ``provider_key_rejected`` naming only the provider and the header (``ProviderChain._failed``),
  instead of a silent fallback to the operator's keys.

Other failures with the caller's key (429, 5xx, timeouts) fall back along the chain like any
request's: a caller's request is never served worse than it would be without the header.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace

import structlog
from pydantic import SecretStr

from app.llm.chain import ProviderChain
from app.llm.errors import InvalidProviderKey, provider_key_header
from app.llm.link import ProviderLink
from app.llm.provider import Provider

logger = structlog.get_logger(__name__)

MAX_KEY_CHARS = 512
_KEY_SHAPE = re.compile(rf"[\x21-\x7e]{{1,{MAX_KEY_CHARS}}}")  # visible ASCII, no spaces

MakeProvider = Callable[[str, str], Provider]  # (provider name, the caller's key) → adapter


@dataclass(frozen=True)
class CallerKeys:
    """The provider keys one request brought, by provider name."""

    keys: tuple[tuple[str, SecretStr], ...] = ()

    @classmethod
    def of(cls, values: Mapping[str, str | None]) -> CallerKeys:
        """Keys from header values by provider name; blank values are absent. Raises
        ``InvalidProviderKey`` for a value that cannot be a key (the error never quotes it)."""
        keys: list[tuple[str, SecretStr]] = []
        for provider, value in values.items():
            text = (value or "").strip()
            if not text:
                continue
            if _KEY_SHAPE.fullmatch(text) is None:
                raise InvalidProviderKey(
                    f"{provider_key_header(provider)} must be 1-{MAX_KEY_CHARS} visible ASCII characters"
                )
            keys.append((provider, SecretStr(text)))
        return cls(tuple(keys))

    def __bool__(self) -> bool:
        return bool(self.keys)

    @property
    def providers(self) -> tuple[str, ...]:
        return tuple(name for name, _ in self.keys)


@dataclass(frozen=True)
class CallerChain:
    """The chain for one request with the caller's keys; ``aclose`` closes only the adapters
    built for it (the operator's links in the chain are shared and stay open)."""

    chain: ProviderChain
    providers: tuple[Provider, ...]

    async def aclose(self) -> None:
        for provider in self.providers:
            try:
                await provider.aclose()
            except Exception:
                logger.warning("caller_provider_close_failed", provider=provider.name, exc_info=True)


class CallerChains:
    """Opens a ``CallerChain`` per request from the operator's chain. ``make_provider`` builds an
    adapter for a provider name and a key (``app.llm.factory.build_caller_chains``); ``accepts``
    names the providers a caller may bring a key for (those that take one)."""

    def __init__(self, chain: ProviderChain, make_provider: MakeProvider, *, accepts: frozenset[str]) -> None:
        self._chain = chain
        self._make_provider = make_provider
        self._accepts = accepts

    @property
    def providers(self) -> list[str]:
        """The providers a caller may bring a key for, in the chain's order."""
        return [link.name for link in self._chain.links if link.name in self._accepts]

    def open(self, keys: CallerKeys) -> CallerChain:
        """Raises ``InvalidProviderKey`` for a key to a provider this service does not route to
        (``LLM_PROVIDERS``): the operator chose which providers requests reach."""
        for name in keys.providers:
            if name not in self.providers:
                raise InvalidProviderKey(
                    f"{provider_key_header(name)}: this service does not route requests to {name}"
                )
        secrets = dict(keys.keys)
        links = [
            ProviderLink(
                provider=self._make_provider(link.name, secrets[link.name].get_secret_value()),
                policy=replace(link.policy, cooldown_enabled=False),
                observer=link.observer,
                allowed_models=link.allowed_models,
                caller_keyed=True,
                continues_prefill=link.continues_prefill,
            )
            for link in self._chain.links  # in the operator's order
            if link.name in secrets
        ]
        return CallerChain(self._chain.with_caller_links(links), tuple(link.provider for link in links))
