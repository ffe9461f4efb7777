"""Token budget parts without Redis: the price table is checked at start, unpriced models are
named in one sentence, periods reset at UTC midnight and on the first of the month."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from pydantic import ValidationError

from app.limits.budgets import Period, Price, unpriced_models_sentence
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
