"""`python -m app budgets set|list|clear`: an operator's token budget overrides, on the real database."""

from __future__ import annotations

import argparse
import json
import uuid

import pytest

from app.cli.budgets import budgets_clear, budgets_list, budgets_set
from app.settings import Settings

pytestmark = pytest.mark.integration


def test_an_operator_sets_lists_and_clears_budgets_and_bad_ones_are_refused(
    settings: Settings, capsys: pytest.CaptureFixture[str]
) -> None:
    key = str(uuid.uuid4())
    assert (
        budgets_set(settings, argparse.Namespace(tenant="ops", key="", period="day", tokens=5000, usd=None))
        == 0
    )
    assert (
        budgets_set(settings, argparse.Namespace(tenant="ops", key=key, period="month", tokens=900, usd=None))
        == 0
    )
    assert (
        budgets_set(settings, argparse.Namespace(tenant="ops", key="", period="day", tokens=0, usd=None)) == 1
    )
    assert "invalid_budget" in capsys.readouterr().err
    assert budgets_list(settings, argparse.Namespace(tenant="ops")) == 0
    listed = json.loads(capsys.readouterr().out)
    assert sorted(listed, key=lambda r: r["period"]) == [
        {"principal_id": "", "period": "day", "unit": "tokens", "tokens": 5000},
        {"principal_id": f"key:{key}", "period": "month", "unit": "tokens", "tokens": 900},
    ]
    assert (
        budgets_clear(settings, argparse.Namespace(tenant="ops", key=key, period="month", unit="tokens")) == 0
    )
    budgets_list(settings, argparse.Namespace(tenant="ops"))
    assert json.loads(capsys.readouterr().out) == [
        {"principal_id": "", "period": "day", "unit": "tokens", "tokens": 5000}
    ]


def test_an_operator_sets_money_budgets_in_dollars_and_bad_amounts_are_refused(
    settings: Settings, capsys: pytest.CaptureFixture[str]
) -> None:
    def set_usd(usd: float) -> int:
        return budgets_set(
            settings, argparse.Namespace(tenant="ops-usd", key="", period="month", tokens=None, usd=usd)
        )

    for bad in (-1.0, 0.0, float("nan"), float("inf"), 2e6):
        assert set_usd(bad) == 1
        assert "invalid_budget" in capsys.readouterr().err
    assert set_usd(12.5) == 0
    budgets_list(settings, argparse.Namespace(tenant="ops-usd"))
    assert json.loads(capsys.readouterr().out) == [
        {"principal_id": "", "period": "month", "unit": "usd", "usd": 12.5}
    ]
    # The token budget of the same period is another budget: clearing it leaves the money one.
    budgets_clear(settings, argparse.Namespace(tenant="ops-usd", key="", period="month", unit="tokens"))
    assert "nothing to clear" in capsys.readouterr().err
    budgets_clear(settings, argparse.Namespace(tenant="ops-usd", key="", period="month", unit="usd"))
    assert "cleared" in capsys.readouterr().err
