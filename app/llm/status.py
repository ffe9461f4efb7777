"""What ``/api/v1/providers`` and ``/v1/models`` read of each provider of the chain: configured
or not, and its cooldown (circuit) phase as the shared store has it."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

from app.llm.cooldown import CooldownState, CooldownStore
from app.llm.link import ProviderLink


@dataclass(frozen=True)
class ProviderStatus:
    """One provider as ``/api/v1/providers`` shows it to any tenant's caller: nothing in it comes
    from one tenant's request (the provider's error texts stay in logs, see ``app.llm.health``)."""

    name: str
    model: str
    configured: bool
    healthy: bool
    state: str  # "ok", "cooling_down", "half_open" or "unconfigured"
    circuit: str  # "closed", "open" (until cooling_down_until) or "half_open" (the next request probes)
    cooling_down_until: datetime | None
    circuit_open_s: float | None  # how long the current (or last) opening lasts; doubles per failed probe
    last_error_code: str | None  # the stable code of the last failure ("server_error", "timeout")
    recent_latency_ms: float | None
    detail: str | None = None


async def provider_statuses(links: Sequence[ProviderLink], cooldowns: CooldownStore) -> list[ProviderStatus]:
    states = await cooldowns.states([link.name for link in links if link.policy.cooldown_enabled])
    report = []
    for link in links:
        availability = link.provider.availability()
        state = states.get(link.name, CooldownState(phase="closed"))
        cooling = state.phase == "cooling"
        label = (
            "unconfigured"
            if not availability.configured
            else {"cooling": "cooling_down"}.get(
                state.phase, "ok" if state.phase == "closed" else state.phase
            )
        )
        report.append(
            ProviderStatus(
                name=link.name,
                model=link.provider.default_model,
                configured=availability.configured,
                healthy=availability.configured and state.phase == "closed",
                state=label,
                circuit={"cooling": "open"}.get(state.phase, state.phase),
                cooling_down_until=datetime.fromtimestamp(state.until, UTC)
                if cooling and state.until
                else None,
                circuit_open_s=state.seconds,
                last_error_code=state.code or link.health.last_error_code,
                recent_latency_ms=link.health.recent_latency_ms,
                detail=availability.reason,
            )
        )
    return report
