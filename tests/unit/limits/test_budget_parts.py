"""Token budget parts without Redis: the price table is checked at start, unpriced models are
named in one sentence, periods reset at UTC midnight and on the first of the month."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from pydantic import ValidationError

from app.limits.budgets import InvalidBudgetError, Period, validate_budget_usd
from app.limits.prices import Price, unpriced_models_sentence, worst_price
from app.settings import Settings


def settings(**values: object) -> Settings:
    return Settings(_env_file=None, **values)  # type: ignore[call-arg, arg-type]


@pytest.mark.parametrize(
    "table",
    [
        {"gpt-4o-mini": {"input": 1, "output": 1}},  # no provider
        {"openai/gpt-4o-mini": {"input": 1}},  # no output price
        {"openai/gpt-4o-mini": {"input": -1, "output": 1}},
        {"openai/gpt-4o-mini": {"input": float("nan"), "output": 1}},
        {"openai/gpt-4o-mini": {"input": 1, "output": 1e9}},
    ],
)
def test_a_bad_price_table_stops_the_app_at_start(table: object) -> None:
    with pytest.raises(ValidationError, match="BUDGET_PRICE_TABLE"):
        settings(budget_price_table=table)


def test_unpriced_models_are_named_in_one_sentence() -> None:
    configured = settings(
        llm_providers=["openai", "groq"],
        openai_model="gpt-4o-mini",
        groq_model="llama-3.3-70b-versatile",
        budget_price_table={"openai/gpt-4o-mini": {"input": 0.15, "output": 0.6}},
    )
    assert unpriced_models_sentence(configured) == (
        "BUDGET_PRICE_TABLE prices none of groq/llama-3.3-70b-versatile: they cost tokens only"
    )
    assert unpriced_models_sentence(settings()) is None  # no table: nothing is priced, nothing to say


def test_input_and_output_are_priced_separately_in_micro_dollars() -> None:
    assert Price(input=0.15, output=0.6).micro_usd(prompt_tokens=1000, completion_tokens=500) == 450


def test_periods_reset_at_utc_midnight_and_on_the_first_of_the_month() -> None:
    now = datetime(2026, 12, 31, 23, 59, tzinfo=UTC)
    assert Period.day.reset_at(now) == datetime(2027, 1, 1, tzinfo=UTC)
    assert Period.month.reset_at(now) == datetime(2027, 1, 1, tzinfo=UTC)
    assert Period.month.reset_at(datetime(2026, 2, 10, tzinfo=UTC)) == datetime(2026, 3, 1, tzinfo=UTC)
    assert Period.month.start(now).isoformat() == "2026-12-01"


@pytest.mark.parametrize("usd", [-1, 0, 0.0000004, float("nan"), float("inf"), 10**6 + 1, True, "5"])
def test_negative_zero_width_or_absurd_money_budgets_are_invalid_budget(usd: object) -> None:
    with pytest.raises(InvalidBudgetError) as caught:
        validate_budget_usd(usd)
    assert caught.value.code == "invalid_budget" and caught.value.status == 422


def test_money_budgets_are_kept_in_micro_dollars() -> None:
    assert validate_budget_usd(12.5) == 12_500_000
    assert validate_budget_usd(0.000001) == 1


def test_the_money_worst_case_prices_the_prompt_as_input_and_max_tokens_as_output() -> None:
    # 1000 tokens in all, at most 200 of them answer: 800 at $2/M in and 200 at $10/M out.
    assert Price(input=2, output=10).worst_micro_usd(total_tokens=1000, answer_tokens=200) == 3600
    prices = {
        "openai/gpt-4o-mini": Price(0.15, 0.6),
        "groq/llama": Price(0.6, 0.2),
        "openai/o3": Price(99, 99),  # priced but not configured: no request can end on it
    }
    assert worst_price(prices, {"openai/gpt-4o-mini", "groq/llama", "gemini/flash"}) == Price(0.6, 0.6)
    assert worst_price(prices, {"gemini/flash"}) is None  # nothing priced: money worst case is zero
