"""``soma users create`` and ``soma users list``: accounts, from the command line (audited as ``source=cli``)."""

from __future__ import annotations

import argparse
import asyncio
import getpass
import sys
from pathlib import Path
from typing import Any

from voice_server.cli.common import EXIT_STARTUP, StartupError, cli_database, fail
from voice_server.config import Settings, load_settings
from voice_server.logs import configure_logging


def register(subparsers: argparse._SubParsersAction[Any]) -> None:
    """Add the ``users`` command and its actions."""
    users = subparsers.add_parser("users", help="manage accounts").add_subparsers(
        title="users commands", metavar="ACTION"
    )
    create = users.add_parser("create", help="create an account")
    create.add_argument("username")
    create.add_argument("--display-name", default="")
    create.add_argument("--admin", action="store_true", help="make the account an administrator")
    create.add_argument("--password-stdin", action="store_true", help="read the password from standard input")
    create.add_argument("--token", action="store_true", help="also print a new API token (all scopes) on stdout")
    create.add_argument("--config", type=Path)
    create.set_defaults(func=_cmd_users_create)
    listing = users.add_parser("list", help="list accounts")
    listing.add_argument("--config", type=Path)
    listing.set_defaults(func=_cmd_users_list)


def _read_password(from_stdin: bool) -> str:
    if from_stdin or not sys.stdin.isatty():
        return sys.stdin.readline().rstrip("\r\n")
    first = getpass.getpass("Password: ")
    if getpass.getpass("Repeat password: ") != first:
        raise StartupError("passwords do not match")
    return first


def _cmd_users_create(args: argparse.Namespace) -> int:
    settings = load_settings(config_file=args.config)
    configure_logging("warning", settings.log_format)
    try:
        password = _read_password(args.password_stdin)
        asyncio.run(_users_create(settings, args, password))
    except StartupError as exc:
        return fail(str(exc), EXIT_STARTUP)
    return 0


async def _users_create(settings: Settings, args: argparse.Namespace, password: str) -> None:
    from voice_server import accounts

    async with cli_database(settings) as db, db.pool.connection() as conn:
        try:
            user = await accounts.create_user(
                conn, args.username, password, display_name=args.display_name, is_admin=args.admin
            )
        except accounts.AccountError as exc:
            raise StartupError(str(exc)) from None
        print(f"created user {user['username']} ({user['id']})", file=sys.stderr)
        if args.token:
            token = await accounts.issue_token(conn, user["id"], name="cli")
            print(token.secret)
        await _audit_cli(settings, db, "cli.users.create", user["id"], "role=admin" if args.admin else "role=user")


async def _audit_cli(settings: Settings, db: Any, action: str, user_id: Any, resource: str) -> None:
    """Record an administrative act done from the command line (no HTTP request to audit it)."""
    from voice_server.security.audit import AuditEvent, AuditLog
    from voice_server.security.keys import KeyFileError, Keyring, load_master_keys

    try:
        keys = Keyring(load_master_keys(settings.key_file, create=settings.master_key_file is None))
    except KeyFileError as exc:
        raise StartupError(str(exc)) from None
    async with db.pool.connection() as conn:
        await keys.open_server_keys(conn)
    await AuditLog(db, keys).record(AuditEvent(action, "ok", user_id=user_id, resource=resource, source="cli"))



def _cmd_users_list(args: argparse.Namespace) -> int:
    settings = load_settings(config_file=args.config)
    configure_logging("warning", settings.log_format)
    try:
        asyncio.run(_users_list(settings))
    except StartupError as exc:
        return fail(str(exc), EXIT_STARTUP)
    return 0


async def _users_list(settings: Settings) -> None:
    from voice_server import accounts

    async with cli_database(settings) as db, db.pool.connection() as conn:
        for row in await accounts.list_users(conn):
            admin = " (admin)" if row["is_admin"] else ""
            print(f"{row['username']}{admin}\t{row['created_at']:%Y-%m-%d %H:%M}")
