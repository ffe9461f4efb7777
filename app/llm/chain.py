"""The provider chain: walks the links in priority order, skipping unconfigured and cooling
providers, falls back on any error, benches failing providers in Redis, and ends in the fixed
apology when nothing could answer.

One caller cannot hurt the others: a request may pin only the models the operator allowed
(``routes``), and only failures that say something about the provider for everyone bench it
(``ProviderPolicy.cooldown_for``, told whether the request was an ordinary one).

The chain also says whether an answer may be cached (``cacheable`` on ``Completion`` and
``StreamEnd``): it alone knows which providers stood in for which.

A request may bring its own provider keys (``with_caller_links``, ``app.llm.caller_keys``): their
links come first, are never benched, and a key the provider refuses ends the request with
``ProviderKeyRejected`` instead of a fallback to the operator's keys."""

from __future__ import annotations

import time
from collections.abc import AsyncGenerator, AsyncIterator, Sequence
from contextlib import suppress
from dataclasses import dataclass, replace

import structlog

from app.llm.cooldown import CooldownState, CooldownStore
from app.llm.errors import AnswerRefused, ProviderError, ProviderKeyRejected, UnknownModelError
from app.llm.extractive import EXTRACTIVE
from app.llm.link import OpenStream, ProviderLink
from app.llm.observer import SUCCESS, RouterObserver
from app.llm.status import ProviderStatus, provider_statuses
from app.llm.types import (
    Answerer,
    ChatRequest,
    Completion,
    Message,
    StreamContinued,
    StreamEnd,
    StreamEvent,
    StreamFailed,
    StreamStart,
    TextDelta,
    Usage,
)
from app.observability.context import current_trace_id, new_trace_id

logger = structlog.get_logger(__name__)

APOLOGY = (
    "Sorry, I cannot answer right now: no language model is available. "
    "Please try again in a few minutes and quote trace id {trace_id} if you report this."
)
NO_PROVIDER = "none"


def apology(trace_id: str) -> str:
    return APOLOGY.format(trace_id=trace_id)


@dataclass(frozen=True)
class Route:
    """A link to try for one request, with the model to ask it for."""

    link: ProviderLink
    model: str


@dataclass(frozen=True)
class Attempt:
    """A route as this request meets it: the provider's cooldown phase, and whether the request
    is an ordinary one (whose failures may bench the provider for everyone)."""

    link: ProviderLink
    model: str
    state: CooldownState
    ordinary: bool


class ProviderChain:
    def __init__(
        self, links: Sequence[ProviderLink], cooldowns: CooldownStore, observer: RouterObserver
    ) -> None:
        self._links = list(links)
        self._by_name = {link.name: link for link in self._links}
        self.cooldowns = cooldowns
        self._observer = observer

    @property
    def links(self) -> list[ProviderLink]:
        return list(self._links)

    def with_caller_links(self, links: Sequence[ProviderLink]) -> ProviderChain:
        """This chain for one request: ``links`` (around the caller's own keys) first, in place of
        this chain's links to the same providers, then the rest of this chain. The links are
        shared, not copied; closing the request's providers is the caller's business
        (``app.llm.caller_keys.CallerChain``), never this chain's ``aclose``."""
        names = {link.name for link in links}
        rest = [link for link in self._links if link.name not in names]
        return ProviderChain([*links, *rest], self.cooldowns, self._observer)

    def routes(self, pin: str | None) -> list[Route]:
        """Every link in order, or only the one ``pin`` names: "groq", "groq/<model>" or a model
        alone. A model must be the provider's own or on its allow-list (*_ALLOWED_MODELS), so
        nobody picks a pricier model on the operator's bill; raises ``UnknownModelError``."""
        if not pin:
            return [Route(link, link.provider.default_model) for link in self._links]
        name, _, model = pin.partition("/")
        link = self._by_name.get(name)
        if link is None:
            matches = [lk for lk in self._links if lk.allows(pin)]
            if not matches:
                raise UnknownModelError(
                    f"model {pin!r} names no configured provider; use one of "
                    + ", ".join(repr(lk.name) for lk in self._links if lk.provider.availability().configured)
                    + " or '<provider>/<model>'"
                )
            link, model = matches[0], pin
        if not link.provider.availability().configured:
            raise UnknownModelError(f"provider {link.name!r} is not configured")
        model = model or link.provider.default_model
        if not link.allows(model):
            raise UnknownModelError(
                f"model {model!r} is not offered by {link.name!r}; use one of "
                + ", ".join(repr(m) for m in link.models),
                extra={"provider": link.name, "allowed_models": link.models},
            )
        return [Route(link, model)]

    def _cacheable(self, provider: str) -> bool:
        """Whether an answer ``provider`` gave may be cached. Never the apology (provider "none",
        degraded); the extractive answerer's quotes only when no generating provider is configured
        at all: while one is, quoting passages is a stop-gap for generators that are down, and a
        cached stop-gap would outlive their recovery."""
        if provider == NO_PROVIDER:
            return False
        if provider != EXTRACTIVE:
            return True
        return not any(
            link.provider.availability().configured for link in self._links if link.name != EXTRACTIVE
        )

    async def _admit(self, link: ProviderLink, state: CooldownState) -> bool:
        """Whether this request may call ``link`` now (half-open: only the probe winner may)."""
        if not link.provider.availability().configured:
            self._observer.on_skip(provider=link.name, reason="unconfigured")
            return False
        if not link.policy.cooldown_enabled or state.phase == "closed":
            return True
        if state.phase == "cooling":
            self._observer.on_skip(provider=link.name, reason="cooling_down")
            return False
        if await self.cooldowns.claim_probe(link.name, link.policy.total_timeout_s):
            logger.info("provider_probe", provider=link.name)
            return True
        self._observer.on_skip(provider=link.name, reason="probe_in_flight")
        return False

    async def _succeeded(self, link: ProviderLink, state: CooldownState, latency_s: float) -> None:
        link.health.record_success(latency_s)
        if link.policy.cooldown_enabled and state.phase != "closed":
            await self.cooldowns.clear(link.name)
            logger.info("provider_recovered", provider=link.name)

    async def _failed(self, attempt: Attempt, error: ProviderError) -> None:
        link = attempt.link
        link.health.record_failure(error.code, error.describe())
        bench = link.policy.cooldown_for(error, ordinary=attempt.ordinary)
        logger.warning(
            "provider_failed",
            provider=link.name,
            model=attempt.model,
            code=error.code,
            error=error.message,
            benched=bench is not None,
            caller_key=link.caller_keyed,
        )
        if link.caller_keyed and error.cause == "account":
            # The caller's own key was refused: say so instead of quietly answering with ours.
            raise ProviderKeyRejected.by(link.name, error.upstream_status) from None
        if bench is None:
            if attempt.state.phase == "half_open" and link.policy.cooldown_enabled:
                await self.cooldowns.release_probe(link.name)  # no verdict: the next request probes
        else:
            until = await self.cooldowns.bench(
                link.name,
                error.describe(),
                base_s=bench.base_s,
                max_s=bench.max_s,
                floor_s=bench.floor_s,
                code=error.code,
            )
            self._observer.on_cooldown(provider=link.name, until=until, error_code=error.code)
        if not link.policy.fails_over(error):
            # A content-policy refusal: the caller learns why, no other model is asked.
            raise AnswerRefused.by(link.name, error) from None

    async def _candidates(self, request: ChatRequest) -> list[Attempt]:
        routes = self.routes(request.model)
        states = await self.cooldowns.states([r.link.name for r in routes if r.link.policy.cooldown_enabled])
        return [
            Attempt(
                route.link,
                route.model,
                states.get(route.link.name, CooldownState(phase="closed")),
                route.link.policy.ordinary(request, route.model, route.link.provider.default_model),
            )
            for route in routes
        ]

    async def complete(self, request: ChatRequest) -> Completion:
        trace_id = current_trace_id() or new_trace_id()
        for attempt in await self._candidates(request):
            link = attempt.link
            if not await self._admit(link, attempt.state):
                continue
            started = time.monotonic()
            try:
                generation = await link.complete(request, attempt.model)
            except ProviderError as error:
                await self._failed(attempt, error)
                continue
            await self._succeeded(link, attempt.state, time.monotonic() - started)
            return Completion(
                text=generation.text,
                provider=link.name,
                model=generation.model,
                usage=generation.usage,
                trace_id=trace_id,
                cacheable=self._cacheable(link.name),
            )
        logger.error("all_providers_failed", trace_id=trace_id)
        return Completion(
            text=apology(trace_id),
            provider=NO_PROVIDER,
            model=NO_PROVIDER,
            usage=None,
            trace_id=trace_id,
            degraded=True,
        )

    async def stream(self, request: ChatRequest) -> AsyncIterator[StreamEvent]:
        """``StreamStart`` only after a provider's first real token; then deltas and ``StreamEnd``.
        A provider that breaks after that is continued by the next one that continues prefills
        (``StreamContinued``, see ``_relay``), or the stream ends with ``StreamFailed`` (the text
        so far is incomplete)."""
        trace_id = current_trace_id() or new_trace_id()
        attempts = await self._candidates(request)
        for index, attempt in enumerate(attempts):
            link = attempt.link
            if not await self._admit(link, attempt.state):
                continue
            try:
                opened = await link.open_stream(request, attempt.model)
            except ProviderError as error:
                await self._failed(attempt, error)
                continue
            relay = self._relay(request, attempt, opened, attempts[index + 1 :], trace_id)
            try:
                async for event in relay:
                    yield event
            finally:
                await relay.aclose()
            return
        logger.error("all_providers_failed", trace_id=trace_id, stream=True)
        yield StreamStart(provider=NO_PROVIDER, model=NO_PROVIDER, degraded=True)
        yield TextDelta(apology(trace_id))
        yield StreamEnd(provider=NO_PROVIDER, model=NO_PROVIDER, usage=None, trace_id=trace_id, degraded=True)

    async def _relay(
        self,
        request: ChatRequest,
        attempt: Attempt,
        opened: OpenStream,
        later: Sequence[Attempt],
        trace_id: str,
    ) -> AsyncGenerator[StreamEvent, None]:
        """One provider's stream to its end. When it breaks after its first token, the answer is
        continued: the same prompt with the text streamed so far as an assistant prefill goes to
        the next of ``later`` that continues prefills (``ProviderLink.continues_prefill``), and only
        what it adds is streamed. Where none does, or each refuses, the stream ends with the
        break's own ``StreamFailed`` (a refused prefill is never the reason given)."""
        started_by = Answerer(opened.link.name, opened.answered_model)
        continued_by: Answerer | None = None
        current, current_attempt = opened, attempt
        remaining = list(later)
        streamed: list[str] = []
        try:
            yield StreamStart(provider=started_by.provider, model=started_by.model)
            while True:
                try:
                    streamed.append(current.first)
                    yield TextDelta(current.first)
                    async for text in current.rest():
                        streamed.append(text)
                        yield TextDelta(text)
                    break
                except ProviderError as error:
                    broken = current
                    self._report(broken, error.code)
                    await self._failed(current_attempt, error)
                    await broken.aclose()
                    taken = await self._continuation(request, "".join(streamed), remaining, error)
                    if taken is None:
                        yield StreamFailed(
                            provider=broken.link.name,
                            model=broken.answered_model,
                            code=error.code,
                            message=error.message,
                            trace_id=trace_id,
                        )
                        return
                    current_attempt, current = taken
                    continued_by = Answerer(current.link.name, current.answered_model)
                    yield StreamContinued(
                        provider=continued_by.provider, model=continued_by.model, code=error.code
                    )
            self._report(current, SUCCESS, current.usage)
            await self._succeeded(current.link, current_attempt.state, current.elapsed_s)
            yield self._end(started_by, continued_by, current.usage, trace_id)
        finally:
            await current.aclose()
            await opened.aclose()

    def _end(
        self, started_by: Answerer, continued_by: Answerer | None, usage: Usage | None, trace_id: str
    ) -> StreamEnd:
        return StreamEnd(
            provider=started_by.provider,
            model=started_by.model,
            # A continued answer's first call broke before its usage: the whole is unknown.
            usage=usage if continued_by is None else None,
            trace_id=trace_id,
            cacheable=self._cacheable(started_by.provider)
            and (continued_by is None or self._cacheable(continued_by.provider)),
            continued_by=continued_by,
        )

    @staticmethod
    def _report(opened: OpenStream, outcome: str, usage: Usage | None = None) -> None:
        opened.link.observer.on_attempt(
            provider=opened.link.name,
            model=opened.model,
            outcome=outcome,
            latency_s=opened.elapsed_s,
            usage=usage,
        )

    async def _continuation(
        self, request: ChatRequest, streamed: str, remaining: list[Attempt], broke: ProviderError
    ) -> tuple[Attempt, OpenStream] | None:
        """The next provider of ``remaining`` (consumed as they are tried) that continues
        ``streamed`` and has produced the first token of what follows, or None."""
        prefilled = replace(request, messages=(*request.messages, Message("assistant", streamed)))
        while remaining:
            attempt = remaining.pop(0)
            link = attempt.link
            if not link.continues_prefill or not await self._admit(link, attempt.state):
                continue
            try:
                opened = await link.open_stream(prefilled, attempt.model)
            except ProviderError as error:
                logger.info("continuation_failed", provider=link.name, code=error.code, after=broke.code)
                with suppress(ProviderKeyRejected, AnswerRefused):  # the break stays the reason given
                    await self._failed(attempt, error)
                continue
            logger.info("stream_continued", provider=link.name, after=broke.code, prefill_chars=len(streamed))
            return attempt, opened
        return None

    async def status(self) -> list[ProviderStatus]:
        return await provider_statuses(self._links, self.cooldowns)

    async def warm_up(self) -> None:
        """Load slow providers (the local model) now, so no request pays for it."""
        for link in self._links:
            await link.provider.warm_up()

    async def aclose(self) -> None:
        for link in self._links:
            try:
                await link.provider.aclose()
            except Exception:
                logger.warning("provider_close_failed", provider=link.name, exc_info=True)
