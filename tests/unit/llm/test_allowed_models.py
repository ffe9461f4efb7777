"""Only the models the operator configured can be pinned."""

from __future__ import annotations

import pytest
from redis.asyncio import Redis

from app.llm.chain import ProviderChain
from app.llm.errors import UnknownModelError
from app.llm.factory import build_provider_chain, cooldown_store
from app.llm.link import ProviderLink
from app.llm.observer import NoopObserver
from app.llm.policy import ProviderPolicy
from app.settings import Settings
from tests.support.scripted import ScriptedProvider, Step

pytestmark = pytest.mark.unit

POLICY = ProviderPolicy(total_timeout_s=1.0, first_token_timeout_s=1.0, stream_idle_timeout_s=1.0)


def chain_of(*links: ProviderLink) -> ProviderChain:
    return ProviderChain(list(links), cooldown_store(Settings(_env_file=None), Redis()), NoopObserver())


def link(name: str, allowed: tuple[str, ...] = ()) -> ProviderLink:
    provider = ScriptedProvider([Step()], provider_name=name)  # default model "script-1"
    return ProviderLink(
        provider=provider,  # type: ignore[arg-type]
        policy=POLICY,
        observer=NoopObserver(),
        allowed_models=frozenset(allowed),
    )


def test_without_an_allow_list_only_the_default_model_can_be_pinned() -> None:
    chain = chain_of(link("a"), link("b"))
    assert [(r.link.name, r.model) for r in chain.routes("b")] == [("b", "script-1")]
    assert [(r.link.name, r.model) for r in chain.routes("b/script-1")] == [("b", "script-1")]
    assert [(r.link.name, r.model) for r in chain.routes("script-1")] == [("a", "script-1")]
    with pytest.raises(UnknownModelError) as raised:
        chain.routes("b/pricier-model")
    assert "'pricier-model'" in raised.value.detail
    assert raised.value.extra == {"provider": "b", "allowed_models": ["script-1"]}


def test_allowed_models_can_be_pinned_by_provider_and_model_or_by_model_alone() -> None:
    chain = chain_of(link("a"), link("b", ("big-1", "vendor/model-2")))
    assert [(r.link.name, r.model) for r in chain.routes("b/big-1")] == [("b", "big-1")]
    assert [(r.link.name, r.model) for r in chain.routes("big-1")] == [("b", "big-1")]
    assert [(r.link.name, r.model) for r in chain.routes("b/vendor/model-2")] == [("b", "vendor/model-2")]
    assert [(r.link.name, r.model) for r in chain.routes("vendor/model-2")] == [("b", "vendor/model-2")]
    for pin in ("a/big-1", "huge-3", "c/script-1"):
        with pytest.raises(UnknownModelError):
            chain.routes(pin)


def test_allowed_models_are_read_comma_separated(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GROQ_ALLOWED_MODELS", " llama-3.1-8b-instant , qwen/qwen3-32b,")
    settings = Settings(_env_file=None)
    assert settings.groq_allowed_models == ["llama-3.1-8b-instant", "qwen/qwen3-32b"]
    assert settings.gemini_allowed_models == [] and settings.openai_allowed_models == []


async def test_the_factory_gives_each_provider_its_own_allow_list() -> None:
    settings = Settings(
        _env_file=None,
        llm_providers=["gemini", "groq", "openai"],
        gemini_api_key="k-gemini",
        groq_api_key="k-groq",
        openai_api_key="k-openai",
        groq_allowed_models=["llama-3.1-8b-instant"],
    )
    chain = build_provider_chain(settings, Redis())
    try:
        assert chain.routes("groq/llama-3.1-8b-instant")[0].model == "llama-3.1-8b-instant"
        assert chain.routes("openai/gpt-4o-mini")[0].model == "gpt-4o-mini"
        for pin in ("openai/llama-3.1-8b-instant", "openai/gpt-4o", "gemini/gemini-2.5-pro"):
            with pytest.raises(UnknownModelError):
                chain.routes(pin)
    finally:
        await chain.aclose()
