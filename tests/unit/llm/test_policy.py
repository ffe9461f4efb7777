from __future__ import annotations

import random

import pytest

from app.llm.errors import AuthFailed, ContextTooLong, ProviderTimeout, RateLimited, ServerError
from app.llm.policy import ProviderPolicy

pytestmark = pytest.mark.unit


def policy(**overrides: object) -> ProviderPolicy:
    values: dict[str, object] = {
        "total_timeout_s": 10.0,
        "first_token_timeout_s": 2.0,
        "stream_idle_timeout_s": 2.0,
        "max_retries": 3,
        "backoff_base_s": 0.5,
        "backoff_max_s": 1.5,
        "cooldown_s": 300.0,
    }
    values.update(overrides)
    return ProviderPolicy(**values)  # type: ignore[arg-type]


def test_backoff_grows_exponentially_with_jitter_and_is_capped() -> None:
    rng = random.Random(7)
    p = policy()
    for attempt, ceiling in enumerate([0.5, 1.0, 1.5]):
        delays = [p.retry_delay(attempt, ServerError("boom"), 100.0, rng) for _ in range(50)]
        assert all(d is not None and ceiling / 2 <= d <= ceiling for d in delays)
        assert len({round(d or 0, 6) for d in delays}) > 1  # jittered, not a fixed step


def test_no_retry_after_max_retries() -> None:
    assert policy(max_retries=2).retry_delay(2, ServerError("boom"), 100.0) is None


@pytest.mark.parametrize("error", [AuthFailed("no"), ContextTooLong("long")])
def test_non_retryable_errors_are_not_retried(error: Exception) -> None:
    assert policy().retry_delay(0, error, 100.0) is None  # type: ignore[arg-type]


def test_retry_after_is_a_floor_for_the_wait() -> None:
    assert policy().retry_delay(0, RateLimited("slow down", retry_after=2.0), 100.0) == 2.0


def test_a_wait_that_does_not_fit_the_remaining_budget_is_not_taken() -> None:
    p = policy()
    assert p.retry_delay(0, RateLimited("slow down", retry_after=5.0), 4.0) is None
    assert p.retry_delay(0, ProviderTimeout("slow"), 0.1) is None


def test_cooldown_covers_provider_faults_but_not_request_faults() -> None:
    p = policy()
    assert p.cooldown_for(ServerError("boom")) == 300.0
    assert p.cooldown_for(RateLimited("wait", retry_after=900.0)) == 900.0
    assert p.cooldown_for(ContextTooLong("too long")) is None
    assert policy(cooldown_enabled=False).cooldown_for(ServerError("boom")) is None
