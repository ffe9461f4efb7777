"""``budgets set|clear|list``: token budget overrides for operators (README "Token budgets")."""

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
from app.limits.budgets import InvalidBudgetError, Period, validate_budget_tokens
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
    set_.add_argument("--tokens", required=True, type=int)
    set_.set_defaults(budgets_action=budgets_set)
    clear = actions.add_parser("clear", help="back to the default budget (BUDGET_TOKENS_PER_*)")
    clear.add_argument("--tenant", required=True)
    clear.add_argument("--key", default="")
    clear.add_argument("--period", required=True, choices=[p.value for p in Period])
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
        validate_budget_tokens(args.tokens)
    except InvalidBudgetError as exc:
        print(f"error: invalid_budget: {exc.detail}", file=sys.stderr)
        return 1

    async def work(session: AsyncSession) -> None:
        tenant = await get_or_create_tenant(session, args.tenant)
        await repository.set_override(session, tenant.id, _principal(args.key), args.period, args.tokens)

    asyncio.run(in_transaction(settings, work))
    print(
        f"set {args.tenant} {args.key or 'tenant'} {args.period} budget to {args.tokens} tokens",
        file=sys.stderr,
    )
    return 0


def budgets_clear(settings: Settings, args: argparse.Namespace) -> int:
    async def work(session: AsyncSession) -> bool:
        tenant = await get_or_create_tenant(session, args.tenant)
        return await repository.delete_override(session, tenant.id, _principal(args.key), args.period)

    removed = asyncio.run(in_transaction(settings, work))
    print("cleared" if removed else "nothing to clear", file=sys.stderr)
    return 0


def budgets_list(settings: Settings, args: argparse.Namespace) -> int:
    async def work(session: AsyncSession) -> list[dict[str, str | int]]:
        tenant = await get_or_create_tenant(session, args.tenant)
        rows = await repository.overrides(session, tenant.id)
        return [{"principal_id": r.principal_id, "period": r.period, "tokens": r.tokens} for r in rows]

    print(json.dumps(asyncio.run(in_transaction(settings, work))))
    return 0
