"""What a rate-limit charge tells: the named budgets and the state of one limit after a hit."""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum


class Budget(StrEnum):
    """``chat`` and ``uploads`` are per principal, ``tenant`` is chat for a whole tenant; ``ip``
    covers every ``/api/`` request, anonymous ones included."""

    chat = "chat"
    uploads = "uploads"
    tenant = "tenant"
    ip = "ip"


@dataclass(frozen=True)
class LimitState:
    budget: Budget
    limit: int
    remaining: int
    reset_at: float  # epoch seconds when the window frees capacity
    window: str  # the limit as `limits` prints it, e.g. "60 per 1 minute"
    allowed: bool = True

    @property
    def reset_after_s(self) -> int:
        return max(0, math.ceil(self.reset_at - time.time()))

    def headers(self) -> dict[str, str]:
        headers = {
            "X-RateLimit-Limit": str(self.limit),
            "X-RateLimit-Remaining": str(max(0, self.remaining)),
            "X-RateLimit-Reset": str(self.reset_after_s),
        }
        if not self.allowed:
            headers["Retry-After"] = str(max(1, self.reset_after_s))
        return headers


def most_restrictive(states: Sequence[LimitState]) -> LimitState:
    """A refused state wins; otherwise the one with the least capacity left."""
    return min(states, key=lambda s: (s.allowed, s.remaining, -s.reset_at))
