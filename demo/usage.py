"""The caller's token and money budgets (``GET /api/v1/usage``) as the sidebar shows them: one
line per budget, what is left of it and when it resets. No Streamlit here, so tests use it alone."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol

LOW_SHARE = 0.2  # warn when less than this share of a budget remains

WHO = {"tenant": "Your tenant", "key": "This key"}
WHEN = {"day": "today", "month": "this month"}


class Getter(Protocol):
    def get(self, path: str, **params: Any) -> Any: ...


@dataclass(frozen=True)
class BudgetLine:
    text: str
    share_left: float  # 0..1, for a progress bar
    low: bool  # under LOW_SHARE left


def amount(unit: str, value: float) -> str:
    return f"${value:,.2f}" if unit == "usd" else f"{int(value):,} tokens"


def budget_line(budget: Mapping[str, Any]) -> BudgetLine:
    """``tenant_usd_per_day`` with its numbers -> "Your tenant, spend today: $4.10 of $5.00 left …"."""
    scope, unit, _, period = str(budget["budget"]).split("_", 3)
    unit = str(budget.get("unit", unit))
    limit, remaining, reserved = budget["limit"], budget["remaining"], budget["reserved"]
    what = "spend" if unit == "usd" else "tokens"
    reset = datetime.fromisoformat(str(budget["reset_at"]).replace("Z", "+00:00"))
    text = f"{WHO.get(scope, scope)}, {what} {WHEN.get(period, period)}: "
    text += f"{amount(unit, remaining)} of {amount(unit, limit)} left"
    if reserved:
        text += f" ({amount(unit, reserved)} held by answers in progress)"
    text += f" · resets {reset:%Y-%m-%d %H:%M} UTC"
    share = max(0.0, min(1.0, remaining / limit)) if limit else 0.0
    return BudgetLine(text, share, share < LOW_SHARE)


def budget_lines(usage: Mapping[str, Any]) -> list[BudgetLine]:
    return [budget_line(budget) for budget in usage.get("budgets") or []]


def fetch_budget_lines(api: Getter) -> list[BudgetLine]:
    """The caller's budgets, fetched now (raises the client's ``ApiError`` when refused)."""
    return budget_lines(api.get("/api/v1/usage"))
