"""Per-provider policy: timeout budgets, retry decisions with backoff and jitter, when a failure
opens the provider's circuit (``app.llm.cooldown``) and for how long."""

from __future__ import annotations

import random
from dataclasses import dataclass

from app.llm.errors import ContentFiltered, ProviderError
from app.llm.types import ChatRequest


@dataclass(frozen=True)
class Bench:
    """How a failure opens a provider's circuit: ``base_s`` doubled per consecutive opening up to
    ``max_s``, never shorter than ``floor_s`` (the provider's ``Retry-After``)."""

    base_s: float
    max_s: float
    floor_s: float = 0.0


@dataclass(frozen=True)
class ProviderPolicy:
    total_timeout_s: float  # everything spent on this provider for one request: attempts and waits
    first_token_timeout_s: float  # attempt start to first streamed token
    stream_idle_timeout_s: float  # longest silence between tokens once streaming
    connect_timeout_s: float = 5.0  # handed to the SDK's HTTP client
    max_retries: int = 2
    backoff_base_s: float = 0.25
    backoff_max_s: float = 4.0
    max_concurrency: int = 32
    cooldown_s: float = 20.0  # the longest the circuit stays open (ROUTER_COOLDOWN_S)
    cooldown_base_s: float = 5.0  # its first opening, doubled per consecutive one (ROUTER_COOLDOWN_BASE_S)
    cooldown_enabled: bool = True
    # A content-policy refusal falls back to the next provider instead of reaching the client.
    failover_on_content_filter: bool = False
    # Longest answer an ordinary request asks for (ANSWER_MAX_TOKENS); None: any length is ordinary.
    ordinary_max_tokens: int | None = None

    def retry_delay(
        self,
        attempt: int,
        error: ProviderError,
        remaining_s: float,
        rng: random.Random | None = None,
    ) -> float | None:
        """Seconds to wait before retry number ``attempt + 1``, or None to give up now.

        Only failures that may pass on their own are retried on the same provider (5xx, a reset
        connection, 429: ``retryable``). A connect or first-token timeout is not: the provider
        already had its chance, and the next provider is the faster answer.

        Exponential backoff with equal jitter; a ``Retry-After`` is honoured as a floor. A wait
        that would not leave time for another attempt inside the budget is not taken at all.
        """
        if not error.retryable or attempt >= self.max_retries:
            return None
        ceiling = min(self.backoff_max_s, self.backoff_base_s * (2**attempt))
        delay: float = ceiling / 2 + (rng or random.Random()).uniform(0, ceiling / 2)
        if error.retry_after is not None:
            delay = max(delay, error.retry_after)
        if delay >= remaining_s:
            return None
        return delay

    def ordinary(self, request: ChatRequest, model: str, default_model: str) -> bool:
        """Whether ``request`` asks what every other caller asks: the provider's configured model,
        for an answer no longer than the operator's usual one. Only such a request's failure says
        something about the provider for everyone (see ``cooldown_for``)."""
        if model != default_model:
            return False
        limit = self.ordinary_max_tokens
        return request.max_tokens is None or limit is None or request.max_tokens <= limit

    def fails_over(self, error: ProviderError) -> bool:
        """Whether the chain tries the next provider after ``error``. Everything but a content
        policy refusal (unless ``failover_on_content_filter``): another model would only be asked
        to say what this one refused to, and the caller must learn why."""
        return self.failover_on_content_filter or not isinstance(error, ContentFiltered)

    def cooldown_for(self, error: ProviderError, *, ordinary: bool = True) -> Bench | None:
        """How a failure opens the provider's circuit for every caller, or None when it must not.

        The one rule for "may this failure cost the other callers this provider?":

        - the operator's key or account was refused (``cause == "account"``, 401/403): bench,
          whoever sent the request;
        - the provider's health (``"provider"``: 5xx, 429, timeouts, broken streams): bench only
          after an ``ordinary`` request. A model only this request pinned (its own rate limits
          and outages), or an answer far longer than usual running out of budget, is this
          request's doing;
        - the request's own (``"request"``: 400/404/413/422, prompt too long, an empty or
          filtered answer) and this worker's capacity (``"capacity"``: busy): never;
        - a cancelled request (the client went away) never gets here: cancellation is not a
          ``ProviderError``, so it is neither reported nor benched.
        """
        if not self.cooldown_enabled:
            return None
        if error.cause == "account" or (error.cause == "provider" and ordinary):
            return Bench(
                base_s=min(self.cooldown_base_s, self.cooldown_s),
                max_s=self.cooldown_s,
                floor_s=error.retry_after or 0.0,
            )
        return None
