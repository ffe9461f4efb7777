"""``keys create|list|revoke``: key administration for operators."""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import uuid
from collections.abc import Callable
from typing import TYPE_CHECKING

from sqlalchemy.ext.asyncio import AsyncSession

from app.auth.access import InvalidAccessError
from app.auth.api_keys import get_or_create_tenant
from app.auth.key_service import create_key, list_keys, revoke_key
from app.auth.principal import Role
from app.cli.bootstrap import Migrations, attach, in_transaction, load_settings
from app.errors import NotFoundError
from app.settings import Settings

if TYPE_CHECKING:
    from app.cli.bootstrap import Subcommands

KeysAction = Callable[[Settings, argparse.Namespace], int]


def add_keys_command(commands: Subcommands) -> None:
    keys = commands.add_parser("keys", help="create, list and revoke API keys")
    keys.set_defaults(handler=cmd_keys)
    actions = keys.add_subparsers(dest="keys_command", required=True)
    create = actions.add_parser("create", help="issue a key (printed once)")
    create.add_argument("--tenant", required=True, help="tenant slug (created if new)")
    create.add_argument("--role", required=True, choices=[role.value for role in Role])
    create.add_argument("--name", default="", help="a label for the key")
    create.add_argument(
        "--group", action="append", default=[], help="a group of the key's principal (repeatable)"
    )
    create.add_argument("--json", action="store_true", help='print {"id", "key", "tenant", "role"}')
    create.set_defaults(keys_action=keys_create)
    list_ = actions.add_parser("list", help="keys of every tenant (never the secrets)")
    list_.add_argument("--tenant", help="only this tenant")
    list_.add_argument("--json", action="store_true")
    list_.set_defaults(keys_action=keys_list)
    revoke = actions.add_parser("revoke", help="revoke a key by id")
    revoke.add_argument("id")
    revoke.set_defaults(keys_action=keys_revoke)


def cmd_keys(args: argparse.Namespace) -> int:
    action: KeysAction = args.keys_action
    with attach(load_settings(), migrations=Migrations.AUTO) as attached:
        return action(attached.settings, args)


def keys_create(settings: Settings, args: argparse.Namespace) -> int:
    async def work(session: AsyncSession) -> dict[str, str]:  # groups comma-separated
        tenant = await get_or_create_tenant(session, args.tenant)
        issued = await create_key(session, tenant.id, Role(args.role), args.name, args.group)
        return {
            "id": str(issued.id),
            "key": issued.key,
            "tenant": issued.tenant,
            "role": issued.role.value,
            "groups": ",".join(issued.groups),
        }

    try:
        created = asyncio.run(in_transaction(settings, work))
    except InvalidAccessError as exc:
        print(f"error: {exc.detail}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps(created))
    else:
        print(created["key"])
        print(
            f"created {created['role']} key {created['id']} for tenant {created['tenant']!r}; "
            "it is shown only this once",
            file=sys.stderr,
        )
    return 0


def keys_list(settings: Settings, args: argparse.Namespace) -> int:
    async def work(session: AsyncSession) -> list[dict[str, str | None]]:
        rows = await list_keys(session, None)
        return [
            {
                "id": str(key.id),
                "tenant": slug,
                "role": key.role,
                "name": key.name,
                "prefix": key.prefix,
                "groups": ",".join(key.groups or ()),
                "created_at": key.created_at.isoformat(),
                "last_used_at": key.last_used_at.isoformat() if key.last_used_at else None,
                "revoked_at": key.revoked_at.isoformat() if key.revoked_at else None,
            }
            for key, slug in rows
            if args.tenant is None or slug == args.tenant
        ]

    keys = asyncio.run(in_transaction(settings, work))
    if args.json:
        print(json.dumps(keys))
        return 0
    for key in keys:
        state = "revoked" if key["revoked_at"] else "active"
        handle = f"rk_{key['prefix']}_…"
        print(f"{key['id']}  {key['tenant']:<20} {key['role']:<7} {state:<8} {handle}  {key['name']}")
    return 0


def keys_revoke(settings: Settings, args: argparse.Namespace) -> int:
    try:
        key_id = uuid.UUID(args.id)
    except ValueError:
        print(f"error: {args.id!r} is not a key id (a UUID from `keys list`)", file=sys.stderr)
        return 1

    async def work(session: AsyncSession) -> None:
        await revoke_key(session, None, key_id)

    try:
        asyncio.run(in_transaction(settings, work))
    except NotFoundError:
        print(f"error: no key with id {key_id}", file=sys.stderr)
        return 1
    print(f"revoked key {key_id}", file=sys.stderr)
    return 0
