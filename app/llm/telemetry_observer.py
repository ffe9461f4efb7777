"""The LLM router's ``RouterObserver`` (``app/llm/observer.py``) implemented with telemetry:
every provider attempt becomes a metric sample and a Langfuse generation inside the current
request's trace; skips and cooldowns become metrics.

Wired in the lifespan: ``build_provider_chain(settings, redis, observer=TelemetryRouterObserver(telemetry))``.
"""

from __future__ import annotations

from app.llm.observer import SUCCESS
from app.llm.types import Usage
from app.observability.telemetry import Telemetry


class TelemetryRouterObserver:
    def __init__(self, telemetry: Telemetry) -> None:
        self._metrics = telemetry.metrics
        self._tracer = telemetry.tracer

    def on_attempt(
        self, *, provider: str, model: str, outcome: str, latency_s: float, usage: Usage | None
    ) -> None:
        self._metrics.llm_request(
            provider,
            model,
            outcome,
            latency_s,
            prompt_tokens=usage.prompt_tokens if usage else None,
            completion_tokens=usage.completion_tokens if usage else None,
        )
        failed = outcome != SUCCESS
        self._tracer.record_generation(
            f"llm_attempt:{provider}",
            model=model,
            metadata={"provider": provider, "outcome": outcome, "latency_s": round(latency_s, 4)},
            usage=(
                {"input": usage.prompt_tokens, "output": usage.completion_tokens, "total": usage.total_tokens}
                if usage
                else None
            ),
            level="ERROR" if failed else None,
            status_message=outcome if failed else None,
        )

    def on_skip(self, *, provider: str, reason: str) -> None:
        self._metrics.provider_skipped(provider, reason)

    def on_cooldown(self, *, provider: str, until: float, error_code: str) -> None:
        self._metrics.provider_cooldown(provider, until_epoch_s=until, error_code=error_code)
