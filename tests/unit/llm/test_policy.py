from __future__ import annotations

import random
from dataclasses import replace
from typing import Any

import pytest

from app.llm.errors import (
    AuthFailed,
    BadRequest,
    ContentFiltered,
    ContextTooLong,
    EmptyResponse,
    MalformedResponse,
    ProviderBusy,
    ProviderTimeout,
    RateLimited,
    ServerError,
    TruncatedStream,
)
from app.llm.policy import Bench, ProviderPolicy
from app.llm.types import ChatRequest, Message

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


@pytest.mark.parametrize("error", [AuthFailed("no"), ContextTooLong("long"), ContentFiltered("unsafe")])
def test_non_retryable_errors_are_not_retried(error: Exception) -> None:
    assert policy().retry_delay(0, error, 100.0) is None  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("error", "retried"),
    [
        (ServerError("503"), True),
        (ServerError("ConnectError: connection reset by peer"), True),
        (RateLimited("429"), True),
        # A silent provider (connect or first-token timeout) had its chance: fail over at once.
        (ProviderTimeout("no first token within the first-token timeout"), False),
        (ProviderTimeout("APITimeoutError: Request timed out."), False),
    ],
)
def test_only_errors_that_may_pass_retry_on_the_same_provider(error: Any, retried: bool) -> None:
    assert (policy().retry_delay(0, error, 100.0, random.Random(1)) is not None) is retried


def test_a_content_policy_refusal_is_not_failed_over_unless_the_operator_says_so() -> None:
    assert policy().fails_over(ContentFiltered("unsafe")) is False
    assert policy(failover_on_content_filter=True).fails_over(ContentFiltered("unsafe")) is True
    assert policy().fails_over(BadRequest("400")) and policy().fails_over(ServerError("500"))


def test_retry_after_is_a_floor_for_the_wait() -> None:
    assert policy().retry_delay(0, RateLimited("slow down", retry_after=2.0), 100.0) == 2.0


def test_a_wait_that_does_not_fit_the_remaining_budget_is_not_taken() -> None:
    p = policy()
    assert p.retry_delay(0, RateLimited("slow down", retry_after=5.0), 4.0) is None
    assert p.retry_delay(0, ServerError("boom"), 0.1) is None


def test_cooldown_covers_provider_faults_but_not_request_faults() -> None:
    p = policy(cooldown_base_s=5.0)
    assert p.cooldown_for(ServerError("boom")) == Bench(base_s=5.0, max_s=300.0)
    assert p.cooldown_for(RateLimited("wait", retry_after=900.0)) == Bench(5.0, 300.0, floor_s=900.0)
    assert policy(cooldown_s=2.0).cooldown_for(ServerError("boom")) == Bench(base_s=2.0, max_s=2.0)
    assert p.cooldown_for(ContextTooLong("too long")) is None
    assert p.cooldown_for(ContentFiltered("unsafe")) is None
    assert policy(cooldown_enabled=False).cooldown_for(ServerError("boom")) is None


ORDINARY, UNUSUAL = True, False


@pytest.mark.parametrize(
    ("error", "ordinary", "benches"),
    [
        # the provider's health: benched after an ordinary request only
        (ServerError("500"), ORDINARY, True),
        (ServerError("500"), UNUSUAL, False),
        (ProviderTimeout("slow"), ORDINARY, True),
        (ProviderTimeout("slow"), UNUSUAL, False),
        (RateLimited("429"), ORDINARY, True),
        (RateLimited("429"), UNUSUAL, False),
        (MalformedResponse("not JSON"), ORDINARY, True),
        (TruncatedStream("no end marker"), ORDINARY, True),
        # the operator's key or account: benched whoever asked
        (AuthFailed("401"), ORDINARY, True),
        (AuthFailed("403"), UNUSUAL, True),
        # the request's own: never benched
        (BadRequest("400"), ORDINARY, False),
        (ContextTooLong("long"), ORDINARY, False),
        (EmptyResponse("no text"), ORDINARY, False),
        # this worker's own concurrency limit: never benched
        (ProviderBusy("full"), ORDINARY, False),
    ],
)
def test_who_caused_a_failure_decides_whether_it_benches(error: Any, ordinary: bool, benches: bool) -> None:
    assert (policy().cooldown_for(error, ordinary=ordinary) is not None) is benches


def test_an_ordinary_request_asks_the_default_model_for_no_more_than_the_usual_answer() -> None:
    p = policy(ordinary_max_tokens=512)
    request = ChatRequest(messages=(Message("user", "hi"),))
    assert p.ordinary(request, "default", "default")
    assert p.ordinary(replace(request, max_tokens=512), "default", "default")
    assert not p.ordinary(replace(request, max_tokens=513), "default", "default")
    assert not p.ordinary(request, "pricier", "default")
    assert policy(ordinary_max_tokens=None).ordinary(replace(request, max_tokens=10**6), "d", "d")
