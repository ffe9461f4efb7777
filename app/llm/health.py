"""Per-process provider health for ``/providers``: recent latency and the last error seen here.
Circuits are not kept here; they live in Redis (``app.llm.cooldown``).

``last_error`` is the provider's text about any tenant's request (it can quote another tenant's
prompt or model choice): it goes to logs, never to a tenant. ``last_error_code`` is the stable
code alone ("server_error"), which says nothing about whose request failed."""

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
    last_error_code: str | None = None
    last_error_at: float | None = None
    last_success_at: float | None = None

    def record_success(self, latency_s: float) -> None:
        self.latencies_s.append(latency_s)
        self.last_success_at = time.time()

    def record_failure(self, code: str, description: str) -> None:
        self.last_error_code = code
        self.last_error = description
        self.last_error_at = time.time()

    @property
    def recent_latency_ms(self) -> float | None:
        if not self.latencies_s:
            return None
        return round(statistics.median(self.latencies_s) * 1000, 1)
