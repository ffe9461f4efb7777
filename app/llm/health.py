"""Per-process provider health for ``/providers``: recent latency and the last error seen here.
Cooldowns are not kept here; they live in Redis (``app.llm.cooldown``)."""

from __future__ import annotations

import statistics
import time
from collections import deque
from dataclasses import dataclass, field

LATENCY_WINDOW = 50


@dataclass
class ProviderHealth:
    latencies_s: deque[float] = field(default_factory=lambda: deque(maxlen=LATENCY_WINDOW))
    last_error: str | None = None
    last_error_at: float | None = None
    last_success_at: float | None = None

    def record_success(self, latency_s: float) -> None:
        self.latencies_s.append(latency_s)
        self.last_success_at = time.time()

    def record_failure(self, description: str) -> None:
        self.last_error = description
        self.last_error_at = time.time()

    @property
    def recent_latency_ms(self) -> float | None:
        if not self.latencies_s:
            return None
        return round(statistics.median(self.latencies_s) * 1000, 1)
