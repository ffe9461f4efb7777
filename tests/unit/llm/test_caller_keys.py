"""A caller's own provider keys (``app.llm.caller_keys``) composed into a request's chain: their
links first, never benched, a refused key a clear error; the operator's links untouched.

(Against real Redis, the SDKs and the wire: tests/integration/chat/test_caller_provider_keys.py.)"""

from __future__ import annotations

from dataclasses import dataclass, field

import pytest
from redis.asyncio import Redis

from app.llm.caller_keys import CallerChains, CallerKeys
from app.llm.chain import ProviderChain
from app.llm.cooldown import CooldownStore
from app.llm.errors import AuthFailed, InvalidProviderKey, ProviderKeyRejected, ServerError
from app.llm.link import ProviderLink
from app.llm.observer import NoopObserver
from app.llm.policy import ProviderPolicy
from app.llm.types import ChatRequest, Message
from tests.support.scripted import ScriptedProvider, Step

pytestmark = pytest.mark.unit

KEY = "caller-secret-0123456789"
REQUEST = ChatRequest(messages=(Message("user", "How long is the refund window?"),))
# Operator links without cooldowns too, so nothing here reaches for Redis.
POLICY = ProviderPolicy(
    total_timeout_s=1.0,
    first_token_timeout_s=1.0,
    stream_idle_timeout_s=1.0,
    max_retries=0,
    cooldown_enabled=False,
)


@dataclass
class Adapters:
    """``make_provider`` for ``CallerChains``: records the keys it was given, plays ``steps``."""

    steps: list[Step] = field(default_factory=lambda: [Step()])
    built: dict[str, tuple[str, ScriptedProvider]] = field(default_factory=dict)
    closed: list[str] = field(default_factory=list)

    def __call__(self, name: str, key: str) -> ScriptedProvider:
        adapters = self

        class Closing(ScriptedProvider):
            async def aclose(self) -> None:
                adapters.closed.append(self.name)

        provider = Closing(list(self.steps), provider_name=name)
        self.built[name] = (key, provider)
        return provider


def operator_chain(*names: str, configured: bool = True) -> ProviderChain:
    links = [
        ProviderLink(
            provider=ScriptedProvider(
                [Step(tokens=(f"{n} answers",))], provider_name=n, configured=configured
            ),  # type: ignore[arg-type]
            policy=POLICY,
            observer=NoopObserver(),
        )
        for n in names
    ]
    unused = Redis(host="127.0.0.1", port=1)  # never called: no link here has cooldowns on
    return ProviderChain(links, CooldownStore(unused, prefix="test:llm:"), NoopObserver())


def test_caller_keys_never_show_their_values_and_refuse_what_cannot_be_a_key() -> None:
    keys = CallerKeys.of({"openai": f"  {KEY} ", "groq": "", "gemini": None})
    assert keys.providers == ("openai",)
    assert keys.keys[0][1].get_secret_value() == KEY
    assert KEY not in repr(keys) and KEY not in str(keys)
    assert not CallerKeys.of({"openai": "  "})
    with pytest.raises(InvalidProviderKey) as refused:
        CallerKeys.of({"openai": "two words"})
    assert "X-Provider-Key-Openai" in refused.value.detail and "two words" not in refused.value.detail


def test_the_callers_links_come_first_with_cooldowns_off_and_replace_the_operators() -> None:
    operator = operator_chain("gemini", "groq", "openai")
    adapters = Adapters()
    opened = CallerChains(operator, adapters, accepts=frozenset({"gemini", "groq", "openai"})).open(
        CallerKeys.of({"openai": KEY, "groq": "other-key-0123456789"})
    )
    links = opened.chain.links
    assert [link.name for link in links] == ["groq", "openai", "gemini"]  # the operator's order within
    assert [link.caller_keyed for link in links] == [True, True, False]
    assert all(not link.policy.cooldown_enabled for link in links[:2])
    assert adapters.built["openai"][0] == KEY
    assert links[2] is operator.links[0]  # shared, not copied
    assert [link.name for link in operator.links] == ["gemini", "groq", "openai"]  # untouched


async def test_closing_a_callers_chain_closes_only_the_adapters_built_for_it() -> None:
    adapters = Adapters()
    opened = CallerChains(
        operator_chain("openai", "groq"), adapters, accepts=frozenset({"openai", "groq"})
    ).open(CallerKeys.of({"groq": KEY}))
    await opened.aclose()
    assert adapters.closed == ["groq"]


def test_a_key_for_a_provider_the_service_does_not_route_to_is_refused() -> None:
    chains = CallerChains(operator_chain("openai"), Adapters(), accepts=frozenset({"openai", "gemini"}))
    assert chains.providers == ["openai"]
    with pytest.raises(InvalidProviderKey, match="does not route requests to gemini"):
        chains.open(CallerKeys.of({"gemini": KEY}))


async def test_a_callers_key_opens_a_provider_the_operator_left_unconfigured() -> None:
    chains = CallerChains(
        operator_chain("openai", configured=False), Adapters(), accepts=frozenset({"openai"})
    )
    chain = chains.open(CallerKeys.of({"openai": KEY})).chain
    completion = await chain.complete(ChatRequest(messages=REQUEST.messages, model="openai"))
    assert completion.provider == "openai" and completion.text == "hello world"


@pytest.mark.parametrize("streamed", [False, True], ids=["json", "stream"])
async def test_a_refused_callers_key_ends_the_request_instead_of_falling_back(streamed: bool) -> None:
    adapters = Adapters(
        steps=[Step(error=AuthFailed(f"Incorrect API key provided: {KEY}", upstream_status=401))]
    )
    chain = (
        CallerChains(operator_chain("openai", "groq"), adapters, accepts=frozenset({"openai", "groq"}))
        .open(CallerKeys.of({"openai": KEY}))
        .chain
    )

    async def answer() -> object:
        return [event async for event in chain.stream(REQUEST)] if streamed else await chain.complete(REQUEST)

    with pytest.raises(ProviderKeyRejected) as rejected:
        await answer()
    assert rejected.value.code == "provider_key_rejected" and rejected.value.status == 422
    assert "openai" in rejected.value.detail and "X-Provider-Key-Openai" in rejected.value.detail
    assert "HTTP 401" in rejected.value.detail and KEY not in rejected.value.detail
    assert rejected.value.__cause__ is None  # the provider's text (quoting the key) is not chained


async def test_other_failures_with_a_callers_key_fall_back_like_any_request() -> None:
    adapters = Adapters(steps=[Step(error=ServerError("503 upstream"))])
    chain = (
        CallerChains(operator_chain("openai", "groq"), adapters, accepts=frozenset({"openai", "groq"}))
        .open(CallerKeys.of({"openai": KEY}))
        .chain
    )
    completion = await chain.complete(REQUEST)
    assert completion.provider == "groq" and completion.text == "groq answers"
