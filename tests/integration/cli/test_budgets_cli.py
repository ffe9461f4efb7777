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
    assert budgets_set(settings, argparse.Namespace(tenant="ops", key="", period="day", tokens=5000)) == 0
    assert budgets_set(settings, argparse.Namespace(tenant="ops", key=key, period="month", tokens=900)) == 0
    assert budgets_set(settings, argparse.Namespace(tenant="ops", key="", period="day", tokens=0)) == 1
    assert "invalid_budget" in capsys.readouterr().err
    assert budgets_list(settings, argparse.Namespace(tenant="ops")) == 0
    listed = json.loads(capsys.readouterr().out)
    assert sorted(listed, key=lambda r: r["period"]) == [
        {"principal_id": "", "period": "day", "tokens": 5000},
        {"principal_id": f"key:{key}", "period": "month", "tokens": 900},
    ]
    assert budgets_clear(settings, argparse.Namespace(tenant="ops", key=key, period="month")) == 0
    budgets_list(settings, argparse.Namespace(tenant="ops"))
    assert json.loads(capsys.readouterr().out) == [{"principal_id": "", "period": "day", "tokens": 5000}]
