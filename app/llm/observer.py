"""Metrics hooks: the chain reports every attempt here; observability wires it to backends."""

from __future__ import annotations

from typing import Protocol

import structlog

from app.llm.types import Usage

logger = structlog.get_logger(__name__)

SUCCESS = "success"


class RouterObserver(Protocol):
    def on_attempt(
        self, *, provider: str, model: str, outcome: str, latency_s: float, usage: Usage | None
    ) -> None:
        """One call to a provider ended: ``outcome`` is "success" or the error code."""

    def on_skip(self, *, provider: str, reason: str) -> None:
        """A provider was passed over ("unconfigured", "cooling_down", "probe_in_flight")."""

    def on_cooldown(self, *, provider: str, until: float, error_code: str) -> None:
        """A provider was benched until the epoch time ``until``."""


class NoopObserver:
    def on_attempt(
        self, *, provider: str, model: str, outcome: str, latency_s: float, usage: Usage | None
    ) -> None:
        return None

    def on_skip(self, *, provider: str, reason: str) -> None:
        return None

    def on_cooldown(self, *, provider: str, until: float, error_code: str) -> None:
        return None


class SafeObserver:
    """Forwards to an observer; a failing metrics backend never fails a request."""

    def __init__(self, inner: RouterObserver) -> None:
        self._inner = inner

    def on_attempt(
        self, *, provider: str, model: str, outcome: str, latency_s: float, usage: Usage | None
    ) -> None:
        try:
            self._inner.on_attempt(
                provider=provider, model=model, outcome=outcome, latency_s=latency_s, usage=usage
            )
        except Exception:
            logger.warning("router_observer_failed", hook="on_attempt", exc_info=True)

    def on_skip(self, *, provider: str, reason: str) -> None:
        try:
            self._inner.on_skip(provider=provider, reason=reason)
        except Exception:
            logger.warning("router_observer_failed", hook="on_skip", exc_info=True)

    def on_cooldown(self, *, provider: str, until: float, error_code: str) -> None:
        try:
            self._inner.on_cooldown(provider=provider, until=until, error_code=error_code)
        except Exception:
            logger.warning("router_observer_failed", hook="on_cooldown", exc_info=True)
