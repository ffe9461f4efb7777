"""One provider under its policy: bounded concurrency, retries with backoff, and asyncio
deadlines for the first token, the silence between tokens and the whole budget. The SDKs'
own timeouts are only a backstop; these deadlines are the ones that hold.

Both modes stream from the provider: a JSON answer is collected from a stream, so a provider slow
to start is abandoned at the first-token timeout there too, not at the end of the budget. An
answer counts only from its first real (non-whitespace) token; one that ends before any is an
``EmptyResponse``, never an empty success."""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import suppress
from dataclasses import dataclass, field

from app.llm.errors import EmptyResponse, ProviderBusy, ProviderError, ProviderTimeout
from app.llm.health import ProviderHealth
from app.llm.observer import SUCCESS, RouterObserver
from app.llm.policy import ProviderPolicy
from app.llm.provider import Provider
from app.llm.types import ChatRequest, Generation, ProviderChunk, ResponseModel, Usage

Sleep = Callable[[float], Awaitable[None]]


class OpenStream:
    """A stream that has produced its first token; iterate ``rest()`` for the remainder.

    ``model`` is the model asked for (metrics label it so); ``answered_model`` the one the
    provider's response named, when it named one."""

    def __init__(
        self,
        link: ProviderLink,
        model: str,
        iterator: AsyncIterator[ProviderChunk],
        first: str,
        deadline: float,
        started: float,
        reported_model: str | None = None,
    ) -> None:
        self.link = link
        self.model = model
        self.first = first
        self.usage: Usage | None = None
        self.reported_model = reported_model
        self._iterator = iterator
        self._deadline = deadline
        self._started = started
        self._closed = False

    async def rest(self) -> AsyncIterator[str]:
        """The remaining text; raises a ``ProviderError`` when the provider fails or goes silent."""
        policy = self.link.policy
        loop = asyncio.get_running_loop()
        while True:
            idle_deadline = min(self._deadline, loop.time() + policy.stream_idle_timeout_s)
            try:
                async with asyncio.timeout_at(idle_deadline):
                    chunk = await anext(self._iterator)
            except StopAsyncIteration:
                return
            except TimeoutError as exc:
                limit = "budget" if idle_deadline >= self._deadline else "idle timeout"
                raise ProviderTimeout(f"stream stalled past its {limit}") from exc
            if isinstance(chunk, Usage):
                self.usage = chunk
            elif isinstance(chunk, ResponseModel):
                self.reported_model = self.reported_model or chunk.name
            elif chunk:
                yield chunk

    @property
    def answered_model(self) -> str:
        """The model as the provider's response named it, else the one asked for."""
        return self.reported_model or self.model

    @property
    def elapsed_s(self) -> float:
        return time.monotonic() - self._started

    async def aclose(self) -> None:
        if self._closed:
            return
        self._closed = True
        await self.link.abandon(self._iterator)


@dataclass
class ProviderLink:
    provider: Provider
    policy: ProviderPolicy
    observer: RouterObserver
    health: ProviderHealth = field(default_factory=ProviderHealth)
    sleep: Sleep = asyncio.sleep
    rng: random.Random = field(default_factory=random.Random)
    # Models a request may pin besides the provider's default (*_ALLOWED_MODELS).
    allowed_models: frozenset[str] = frozenset()
    # Built for one request around the caller's own key (``app.llm.caller_keys``): its policy has
    # cooldowns off, and the chain ends the request when the provider refuses the key.
    caller_keyed: bool = False
    # Whether the provider continues an answer given as a trailing assistant message (a prefill)
    # instead of starting a new one: the chain then lets it finish a stream another provider broke
    # part-way (*_CONTINUES_PREFILL; ``app.llm.chain``).
    continues_prefill: bool = False

    def __post_init__(self) -> None:
        self._slots = asyncio.Semaphore(self.policy.max_concurrency)

    @property
    def name(self) -> str:
        return self.provider.name

    @property
    def models(self) -> list[str]:
        """The models requests may ask this provider for, its default first."""
        default = self.provider.default_model
        return [default, *sorted(self.allowed_models - {default})]

    def allows(self, model: str) -> bool:
        return model == self.provider.default_model or model in self.allowed_models

    async def _acquire(self, deadline: float) -> None:
        loop = asyncio.get_running_loop()
        wait = min(deadline, loop.time() + self.policy.first_token_timeout_s)
        try:
            async with asyncio.timeout_at(wait):
                await self._slots.acquire()
        except TimeoutError as exc:
            raise ProviderBusy(f"all {self.policy.max_concurrency} slots stayed busy") from exc

    def release(self) -> None:
        self._slots.release()

    async def abandon(self, iterator: AsyncIterator[ProviderChunk]) -> None:
        """Close a provider stream and give its slot back; the slot even when closing is itself
        cancelled (a caller that went away must not keep a slot from everyone else)."""
        try:
            aclose = getattr(iterator, "aclose", None)
            if aclose is not None:
                with suppress(Exception):
                    await aclose()
        finally:
            self.release()

    def _report(self, model: str, outcome: str, latency_s: float, usage: Usage | None = None) -> None:
        self.observer.on_attempt(
            provider=self.name, model=model, outcome=outcome, latency_s=latency_s, usage=usage
        )

    async def _retry_or_raise(self, attempt: int, error: ProviderError, deadline: float) -> None:
        remaining = deadline - asyncio.get_running_loop().time()
        delay = self.policy.retry_delay(attempt, error, remaining, self.rng)
        if delay is None:
            raise error
        await self.sleep(delay)

    async def complete(self, request: ChatRequest, model: str) -> Generation:
        """The provider's whole answer within ``total_timeout_s``, retrying what is worth retrying.

        Collected from a stream: the first-token and idle timeouts hold as for ``open_stream``,
        and a stream that breaks part-way is a failure like any other (nothing has reached the
        caller yet), never a shorter answer."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.policy.total_timeout_s
        attempt = 0
        while True:
            started = time.monotonic()
            try:
                generation = await self._collect(request, model, deadline)
            except ProviderError as error:
                self._report(model, error.code, time.monotonic() - started)
                await self._retry_or_raise(attempt, error, deadline)
                attempt += 1
                continue
            self._report(model, SUCCESS, time.monotonic() - started, generation.usage)
            return generation

    async def _collect(self, request: ChatRequest, model: str, deadline: float) -> Generation:
        opened = await self._open(request, model, deadline)
        try:
            parts = [opened.first]
            async for text in opened.rest():
                parts.append(text)
        finally:
            await opened.aclose()
        return Generation(text="".join(parts), model=opened.answered_model, usage=opened.usage)

    async def open_stream(self, request: ChatRequest, model: str) -> OpenStream:
        """A stream whose first real token has arrived. Failures before that point (including a
        first token later than ``first_token_timeout_s``) are retried or raised, never emitted."""
        deadline = asyncio.get_running_loop().time() + self.policy.total_timeout_s
        attempt = 0
        while True:
            started = time.monotonic()
            try:
                return await self._open(request, model, deadline)
            except ProviderError as error:
                self._report(model, error.code, time.monotonic() - started)
                await self._retry_or_raise(attempt, error, deadline)
            attempt += 1

    async def _open(self, request: ChatRequest, model: str, deadline: float) -> OpenStream:
        """One attempt: a slot, the provider's stream and its first real token in time, or a
        ``ProviderError``. Whatever ends the attempt early (cancellation included) gives the slot
        and the connection back."""
        loop = asyncio.get_running_loop()
        started = time.monotonic()
        await self._acquire(deadline)
        iterator = self.provider.stream(request, model)
        first_deadline = min(deadline, loop.time() + self.policy.first_token_timeout_s)
        try:
            async with asyncio.timeout_at(first_deadline):
                first, reported_model = await self._first_text(iterator)
        except TimeoutError as exc:
            await self.abandon(iterator)
            limit = "first-token timeout" if first_deadline < deadline else "budget"
            raise ProviderTimeout(f"no first token within the {limit}") from exc
        except BaseException:
            await self.abandon(iterator)
            raise
        return OpenStream(self, model, iterator, first, deadline, started, reported_model)

    @staticmethod
    async def _first_text(iterator: AsyncIterator[ProviderChunk]) -> tuple[str, str | None]:
        """Everything up to and including the first chunk with non-whitespace text, and the model
        the provider named before it (if it did)."""
        blank = ""
        reported: str | None = None
        async for chunk in iterator:
            if isinstance(chunk, ResponseModel):
                reported = reported or chunk.name
            elif isinstance(chunk, str):
                if chunk.strip():
                    return blank + chunk, reported
                blank += chunk
        raise EmptyResponse("the answer was only whitespace" if blank else "the answer ended before any text")
