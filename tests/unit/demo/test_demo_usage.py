"""The demo sidebar's budget lines, from ``GET /api/v1/usage`` bodies as the API sends them."""

from __future__ import annotations

from typing import Any

import pytest

from demo.usage import budget_lines, fetch_budget_lines

pytestmark = pytest.mark.unit

USAGE = {
    "worst_case_tokens": 3500,
    "worst_case_usd": 0.0042,
    "budgets": [
        {
            "budget": "tenant_tokens_per_day",
            "unit": "tokens",
            "limit": 1_000_000,
            "spent": 250_000,
            "reserved": 3500,
            "remaining": 746_500,
            "reset_at": "2026-12-08T00:00:00Z",
        },
        {
            "budget": "key_usd_per_month",
            "unit": "usd",
            "limit": 5.0,
            "spent": 4.5,
            "reserved": 0,
            "remaining": 0.5,
            "reset_at": "2027-01-01T00:00:00Z",
        },
    ],
}


class RecordingApi:
    def __init__(self, body: dict[str, Any]) -> None:
        self.body, self.asked = body, []

    def get(self, path: str, **params: Any) -> Any:
        self.asked.append(path)
        return self.body


def test_each_budget_is_one_line_with_what_is_left_and_when_it_resets() -> None:
    tokens, money = budget_lines(USAGE)
    assert tokens.text == (
        "Your tenant, tokens today: 746,500 tokens of 1,000,000 tokens left "
        "(3,500 tokens held by answers in progress) · resets 2026-12-08 00:00 UTC"
    )
    assert tokens.share_left == pytest.approx(0.7465) and not tokens.low
    assert money.text == "This key, spend this month: $0.50 of $5.00 left · resets 2027-01-01 00:00 UTC"
    assert money.share_left == pytest.approx(0.1) and money.low  # under a fifth left: a warning


def test_the_sidebar_fetches_the_callers_usage_and_no_budget_is_no_line() -> None:
    api = RecordingApi(USAGE)
    assert len(fetch_budget_lines(api)) == 2
    assert api.asked == ["/api/v1/usage"]
    assert fetch_budget_lines(RecordingApi({"worst_case_tokens": 3500, "budgets": []})) == []
