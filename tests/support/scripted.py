"""An in-memory provider that plays a script of steps, for testing policy pieces alone."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

from app.llm.errors import ProviderError
from app.llm.provider import Availability
from app.llm.types import ChatRequest, Generation, ProviderChunk, Usage


@dataclass
class Step:
    error: ProviderError | None = None
    delay_s: float = 0.0  # before answering / before the first token
    tokens: tuple[str, ...] = ("hello", " world")
    token_delay_s: float = 0.0
    fail_after_tokens: ProviderError | None = None


@dataclass
class ScriptedProvider:
    steps: list[Step]
    provider_name: str = "scripted"
    configured: bool = True
    calls: int = 0
    active: int = 0
    peak_active: int = 0
    models: list[str] = field(default_factory=list)

    @property
    def name(self) -> str:
        return self.provider_name

    @property
    def default_model(self) -> str:
        return "script-1"

    def availability(self) -> Availability:
        return Availability.ready() if self.configured else Availability.missing("no key")

    def _next(self, model: str) -> Step:
        self.calls += 1
        self.models.append(model)
        return self.steps[min(self.calls, len(self.steps)) - 1]

    async def complete(self, request: ChatRequest, model: str) -> Generation:
        step = self._next(model)
        self.active += 1
        self.peak_active = max(self.peak_active, self.active)
        try:
            await asyncio.sleep(step.delay_s)
            if step.error:
                raise step.error
            return Generation(text="".join(step.tokens), model=model, usage=Usage(1, len(step.tokens)))
        finally:
            self.active -= 1

    async def stream(self, request: ChatRequest, model: str) -> AsyncIterator[ProviderChunk]:
        step = self._next(model)
        self.active += 1
        self.peak_active = max(self.peak_active, self.active)
        try:
            await asyncio.sleep(step.delay_s)
            if step.error:
                raise step.error
            for token in step.tokens:
                yield token
                await asyncio.sleep(step.token_delay_s)
            if step.fail_after_tokens:
                raise step.fail_after_tokens
            yield Usage(1, len(step.tokens))
        finally:
            self.active -= 1

    async def aclose(self) -> None:
        return None
