"""``budgets set|clear|list``: token and money budget overrides for operators (README "Token
budgets"). The operator sets any tenant's own budget here; a tenant admin only its keys' (API)."""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from collections.abc import Callable
from typing import TYPE_CHECKING

from sqlalchemy.ext.asyncio import AsyncSession

from app.auth.api_keys import get_or_create_tenant
from app.cli.bootstrap import Migrations, attach, in_transaction, load_settings
from app.limits import repository
from app.limits.budgets import InvalidBudgetError, Period, Unit, validate_budget_tokens, validate_budget_usd
from app.settings import Settings

if TYPE_CHECKING:
    from app.cli.bootstrap import Subcommands

BudgetsAction = Callable[[Settings, argparse.Namespace], int]


def add_budgets_command(commands: Subcommands) -> None:
    budgets = commands.add_parser("budgets", help="set, clear and list token budgets per tenant or key")
    budgets.set_defaults(handler=cmd_budgets)
    actions = budgets.add_subparsers(dest="budgets_command", required=True)
    set_ = actions.add_parser("set", help="a tenant's (or one key's) token budget for a day or a month")
    set_.add_argument("--tenant", required=True, help="tenant slug")
    set_.add_argument(
        "--key", default="", help="one API key's id (a UUID from `keys list`); omitted: the tenant"
    )
    set_.add_argument("--period", required=True, choices=[p.value for p in Period])
    amount = set_.add_mutually_exclusive_group(required=True)
    amount.add_argument("--tokens", type=int, help="a token budget")
    amount.add_argument("--usd", type=float, help="a money budget in US dollars (BUDGET_PRICE_TABLE)")
    set_.set_defaults(budgets_action=budgets_set)
    clear = actions.add_parser("clear", help="back to the default budget (BUDGET_TOKENS_PER_*)")
    clear.add_argument("--tenant", required=True)
    clear.add_argument("--key", default="")
    clear.add_argument("--period", required=True, choices=[p.value for p in Period])
    clear.add_argument("--unit", default=Unit.tokens.value, choices=[u.value for u in Unit])
    clear.set_defaults(budgets_action=budgets_clear)
    list_ = actions.add_parser("list", help="a tenant's overrides")
    list_.add_argument("--tenant", required=True)
    list_.set_defaults(budgets_action=budgets_list)


def cmd_budgets(args: argparse.Namespace) -> int:
    action: BudgetsAction = args.budgets_action
    with attach(load_settings(), migrations=Migrations.AUTO) as attached:
        return action(attached.settings, args)


def _principal(key: str) -> str:
    return f"key:{key}" if key else ""


def budgets_set(settings: Settings, args: argparse.Namespace) -> int:
    try:
        if args.usd is not None:
            unit, amount = Unit.usd, validate_budget_usd(args.usd)
        else:
            unit, amount = Unit.tokens, validate_budget_tokens(args.tokens)
    except InvalidBudgetError as exc:
        print(f"error: invalid_budget: {exc.detail}", file=sys.stderr)
        return 1

    async def work(session: AsyncSession) -> None:
        tenant = await get_or_create_tenant(session, args.tenant)
        await repository.set_override(
            session, tenant.id, _principal(args.key), args.period, amount, unit.value
        )

    asyncio.run(in_transaction(settings, work))
    print(
        f"set {args.tenant} {args.key or 'tenant'} {args.period} budget to {unit.show(amount)}",
        file=sys.stderr,
    )
    return 0


def budgets_clear(settings: Settings, args: argparse.Namespace) -> int:
    async def work(session: AsyncSession) -> bool:
        tenant = await get_or_create_tenant(session, args.tenant)
        return await repository.delete_override(
            session, tenant.id, _principal(args.key), args.period, args.unit
        )

    removed = asyncio.run(in_transaction(settings, work))
    print("cleared" if removed else "nothing to clear", file=sys.stderr)
    return 0


def _listed(principal_id: str, period: str, unit: Unit, amount: int) -> dict[str, str | int | float]:
    listed: dict[str, str | int | float] = {"principal_id": principal_id, "period": period, "unit": unit}
    listed["tokens" if unit is Unit.tokens else "usd"] = unit.public(amount)
    return listed


def budgets_list(settings: Settings, args: argparse.Namespace) -> int:
    async def work(session: AsyncSession) -> list[dict[str, str | int | float]]:
        tenant = await get_or_create_tenant(session, args.tenant)
        rows = await repository.overrides(session, tenant.id)
        return [_listed(r.principal_id, r.period, Unit(r.unit), r.tokens) for r in rows]

    print(json.dumps(asyncio.run(in_transaction(settings, work))))
    return 0
