"""Builds the provider chain from settings: adapters, their policies, the Redis cooldown store.

The one place in ``app.llm`` that reads settings; everything it builds gets its values injected."""

from __future__ import annotations

from typing import Any

from redis.asyncio import Redis

from app.llm.caller_keys import CallerChains
from app.llm.chain import ProviderChain
from app.llm.cooldown import CooldownStore
from app.llm.extractive import ExtractiveAnswerer
from app.llm.gemini import GeminiProvider
from app.llm.groq_provider import GroqProvider
from app.llm.link import ProviderLink
from app.llm.local import LocalProvider
from app.llm.observer import NoopObserver, RouterObserver, SafeObserver
from app.llm.openai_compat import OpenAICompatibleProvider
from app.llm.openai_provider import OpenAIProvider
from app.llm.policy import ProviderPolicy
from app.llm.provider import Provider, SDKProvider
from app.settings import Settings

EXTRACTIVE_CONCURRENCY = 1024


def policy_for(settings: Settings, name: str) -> ProviderPolicy:
    shared = {
        "max_retries": settings.router_max_retries,
        "backoff_base_s": settings.router_backoff_base_s,
        "backoff_max_s": settings.router_backoff_max_s,
        "stream_idle_timeout_s": settings.router_stream_idle_timeout_s,
        "cooldown_s": settings.router_cooldown_s,
        "cooldown_base_s": settings.router_cooldown_base_s,
        "failover_on_content_filter": settings.router_failover_on_content_filter,
        "ordinary_max_tokens": settings.answer_max_tokens,
    }
    if name == "extractive":
        return ProviderPolicy(
            total_timeout_s=5.0,
            first_token_timeout_s=5.0,
            max_concurrency=EXTRACTIVE_CONCURRENCY,
            cooldown_enabled=False,
            **{**shared, "max_retries": 0},  # type: ignore[arg-type]
        )
    if name == "local":
        # Never benched: it is the last generator standing, and its failures are local.
        return ProviderPolicy(
            total_timeout_s=settings.local_timeout_s,
            first_token_timeout_s=settings.local_first_token_timeout_s,
            max_concurrency=settings.local_max_concurrency,
            cooldown_enabled=False,
            **{**shared, "max_retries": 0},  # type: ignore[arg-type]
        )
    return ProviderPolicy(
        total_timeout_s=getattr(settings, f"{name}_timeout_s"),
        first_token_timeout_s=getattr(settings, f"{name}_first_token_timeout_s"),
        connect_timeout_s=getattr(settings, f"{name}_connect_timeout_s"),
        max_concurrency=getattr(settings, f"{name}_max_concurrency"),
        **shared,  # type: ignore[arg-type]
    )


def _secret(settings: Settings, name: str) -> str | None:
    secret = getattr(settings, f"{name}_api_key")
    return secret.get_secret_value() if secret is not None else None


_SDK_PROVIDERS: dict[str, type[SDKProvider[Any]]] = {
    "gemini": GeminiProvider,
    "groq": GroqProvider,
    "openai": OpenAIProvider,
}


def provider_for(settings: Settings, name: str, *, api_key: str | None = None) -> Provider:
    """The adapter ``name`` with the operator's key, or with ``api_key`` (a caller's own)."""
    if name in _SDK_PROVIDERS:
        # GEMINI_* / GROQ_* / OPENAI_*: the same five settings configure each SDK adapter.
        return _SDK_PROVIDERS[name](
            api_key=api_key or _secret(settings, name),
            model=getattr(settings, f"{name}_model"),
            base_url=getattr(settings, f"{name}_base_url"),
            connect_timeout_s=getattr(settings, f"{name}_connect_timeout_s"),
            total_timeout_s=getattr(settings, f"{name}_timeout_s"),
        )
    if name == "local":
        return LocalProvider(
            model_path=settings.local_model_path,
            n_ctx=settings.local_context_tokens,
            n_threads=settings.local_threads,
            prompt_format=settings.local_prompt_format,
        )
    raise ValueError(f"unknown provider {name!r}")


def allowed_models(settings: Settings, name: str) -> frozenset[str]:
    """GEMINI_/GROQ_/OPENAI_ALLOWED_MODELS: what a request may pin besides *_MODEL."""
    if name not in _SDK_PROVIDERS:
        return frozenset()  # the local model and the extractive answerer have one model each
    return frozenset(getattr(settings, f"{name}_allowed_models"))


def continues_prefill(settings: Settings, name: str) -> bool:
    """GEMINI_/GROQ_/OPENAI_CONTINUES_PREFILL: whether the provider may finish an answer another
    provider broke part-way. The local model and the extractive answerer never do."""
    if name not in _SDK_PROVIDERS:
        return False
    return bool(getattr(settings, f"{name}_continues_prefill"))


def cooldown_store(settings: Settings, redis: Redis) -> CooldownStore:
    """The cooldown store on ``redis``; its keys are ``REDIS_KEY_PREFIX`` + ``"llm:…"``."""
    return CooldownStore(redis, prefix=settings.redis_key_prefix + "llm:")


def build_provider_chain(
    settings: Settings, redis: Redis, observer: RouterObserver | None = None
) -> ProviderChain:
    """``LLM_PROVIDERS`` in order, then the extractive answerer as the last link."""
    safe = SafeObserver(observer or NoopObserver())
    providers: list[Provider] = [
        provider_for(settings, name) for name in dict.fromkeys(settings.llm_providers)
    ]
    providers.append(ExtractiveAnswerer())
    links = [
        ProviderLink(
            provider=p,
            policy=policy_for(settings, p.name),
            observer=safe,
            allowed_models=allowed_models(settings, p.name),
            continues_prefill=continues_prefill(settings, p.name),
        )
        for p in providers
    ]
    return ProviderChain(links, cooldown_store(settings, redis), safe)


def build_caller_chains(settings: Settings, chain: ProviderChain) -> CallerChains:
    """Per-request chains with the callers' own keys (``X-Provider-Key-*``), for the SDK
    providers ``chain`` routes to; each caller key gets an adapter built like the operator's.
    OpenAI and Groq callers share the operator's adapter's connection pool (``with_key``)."""
    operators = {link.name: link.provider for link in chain.links}

    def make_provider(name: str, key: str) -> Provider:
        operator = operators.get(name)
        if isinstance(operator, OpenAICompatibleProvider):
            return operator.with_key(key)
        return provider_for(settings, name, api_key=key)

    return CallerChains(chain, make_provider, accepts=frozenset(_SDK_PROVIDERS))
