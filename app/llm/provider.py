"""The provider interface every adapter implements (transport only: no retries, no cooldown)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Protocol

from app.llm.types import ChatRequest, Generation, ProviderChunk


@dataclass(frozen=True)
class Availability:
    configured: bool
    reason: str | None = None  # why it is unconfigured

    @classmethod
    def ready(cls) -> Availability:
        return cls(configured=True)

    @classmethod
    def missing(cls, reason: str) -> Availability:
        return cls(configured=False, reason=reason)


class Provider(Protocol):
    """``complete`` and ``stream`` raise only ``app.llm.errors.ProviderError`` subclasses.

    The router calls ``stream`` in both of its modes (``ProviderLink.complete`` collects one, so
    the first-token timeout holds for JSON answers too); ``complete`` is the adapter's plain call.

    ``stream`` yields text chunks (``str``) and at most one ``Usage``; it must raise
    ``TruncatedStream`` when the provider stops without its end-of-answer marker.
    """

    @property
    def name(self) -> str: ...

    @property
    def default_model(self) -> str: ...

    def availability(self) -> Availability: ...

    async def warm_up(self) -> None:
        """Load whatever is slow to load (a local model) before the first request needs it."""

    async def complete(self, request: ChatRequest, model: str) -> Generation: ...

    def stream(self, request: ChatRequest, model: str) -> AsyncIterator[ProviderChunk]: ...

    async def aclose(self) -> None: ...
