"""The provider interface every adapter implements (transport only: no retries, no cooldown)."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import AsyncGenerator, AsyncIterator
from dataclasses import dataclass
from typing import ClassVar, Generic, Protocol, TypeVar

from app.llm.errors import ProviderError
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


ClientT = TypeVar("ClientT")
REDACTED_KEY = "[REDACTED]"


class SDKProvider(ABC, Generic[ClientT]):
    """A ``Provider`` behind a client and an API key (a vendor SDK's, or ``openai_wire``'s for the
    OpenAI wire): what the cloud adapters share, so each keeps only its wire (how to build and
    close the client, call it, read its answer and classify its exceptions).

    Without a key there is no client and the provider reports itself unconfigured; the chain then
    never calls it. Whatever the wire code raises leaves as a ``ProviderError`` (``translate``),
    and a stream's SDK resources are released however the stream ends."""

    provider_name: ClassVar[str]
    key_variable: ClassVar[str]  # the setting whose absence leaves the provider unconfigured

    def __init__(
        self,
        *,
        api_key: str | None,
        model: str,
        base_url: str | None,
        connect_timeout_s: float,
        total_timeout_s: float,
    ) -> None:
        self._model = model
        self._client: ClientT | None = None
        self._api_key = api_key or None
        if api_key:
            self._client = self.make_client(api_key, base_url, connect_timeout_s, total_timeout_s)

    # --- the wire: what each adapter implements -------------------------------------------------

    @abstractmethod
    def make_client(self, api_key: str, base_url: str | None, connect_s: float, total_s: float) -> ClientT:
        """The SDK client, with the SDK's own retries off (the policy owns retries)."""

    @abstractmethod
    async def close_client(self, client: ClientT) -> None: ...

    @abstractmethod
    def translate(self, exc: Exception) -> ProviderError:
        """What the SDK raised as a typed provider error (``ProviderError``s pass through)."""

    @abstractmethod
    async def generate(self, client: ClientT, request: ChatRequest, model: str) -> Generation: ...

    @abstractmethod
    def generate_stream(
        self, client: ClientT, request: ChatRequest, model: str
    ) -> AsyncGenerator[ProviderChunk, None]:
        """Text chunks, then at most one ``Usage``; ``TruncatedStream`` without an end marker."""

    # --- the Provider interface -----------------------------------------------------------------

    @property
    def name(self) -> str:
        return self.provider_name

    @property
    def default_model(self) -> str:
        return self._model

    async def warm_up(self) -> None:
        return None

    def availability(self) -> Availability:
        if self._client is not None:
            return Availability.ready()
        return Availability.missing(f"{self.key_variable} is not set")

    def _require_client(self) -> ClientT:
        assert self._client is not None, "the chain never calls an unconfigured provider"
        return self._client

    def _translated(self, exc: Exception) -> ProviderError:
        """``translate``, with the key cut out of the message: providers quote the key they
        refuse (OpenAI's 401 says "Incorrect API key provided: …"), and the message goes to logs,
        traces and ``/providers``."""
        error = self.translate(exc)
        if self._api_key is None or self._api_key not in error.message:
            return error
        return type(error)(
            error.message.replace(self._api_key, REDACTED_KEY),
            upstream_status=error.upstream_status,
            retry_after=error.retry_after,
        )

    async def complete(self, request: ChatRequest, model: str) -> Generation:
        client = self._require_client()
        try:
            return await self.generate(client, request, model)
        except Exception as exc:
            raise self._translated(exc) from exc

    async def stream(self, request: ChatRequest, model: str) -> AsyncIterator[ProviderChunk]:
        client = self._require_client()
        chunks = self.generate_stream(client, request, model)
        try:
            try:
                async for chunk in chunks:
                    yield chunk
            finally:
                await chunks.aclose()
        except Exception as exc:
            raise self._translated(exc) from exc

    async def aclose(self) -> None:
        if self._client is not None:
            await self.close_client(self._client)
