"""Per-provider policy: timeout budgets, retry decisions with backoff and jitter, cooldown."""

from __future__ import annotations

import random
from dataclasses import dataclass

from app.llm.errors import ProviderError


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
    cooldown_s: float = 300.0
    cooldown_enabled: bool = True

    def retry_delay(
        self,
        attempt: int,
        error: ProviderError,
        remaining_s: float,
        rng: random.Random | None = None,
    ) -> float | None:
        """Seconds to wait before retry number ``attempt + 1``, or None to give up now.

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

    def cooldown_for(self, error: ProviderError) -> float | None:
        """How long a failure benches the provider, or None when it must not."""
        if not self.cooldown_enabled or not error.cools_down:
            return None
        return max(self.cooldown_s, error.retry_after or 0.0)
