"""``X-RateLimit-*`` headers for every response whose request charged a budget, streaming
responses included (dependency-set headers would not reach a returned ``StreamingResponse``).
The edge layer (``app.api.middleware``) adds them to ``http.response.start``."""

from __future__ import annotations

from typing import Any

from app.limits.enforcement import remembered
from app.limits.limiter import most_restrictive


def rate_limit_headers(scope_state: dict[str, Any]) -> list[tuple[bytes, bytes]]:
    """The most restrictive charged budget's headers (lower-case names, as ASGI sends them);
    none when the request charged nothing."""
    states = remembered(scope_state)
    if not states:
        return []
    return [
        (name.lower().encode("latin-1"), value.encode("latin-1"))
        for name, value in most_restrictive(states).headers().items()
    ]
