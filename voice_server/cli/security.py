"""``soma keys rotate`` and ``soma audit verify``, attached to the ``soma`` parser by `voice_server.cli`.

Both act on the database as its owner (the admin URL), not as the application role: rotation updates key rows
the server itself may not change, and verification must read the log exactly as stored. Handlers return an exit
status and report failures as one line on stderr.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import psycopg
from psycopg.rows import dict_row

from voice_server.cli.common import cli_database
from voice_server.config import Settings, load_settings
from voice_server.logs import configure_logging
from voice_server.security.audit import verify
from voice_server.security.keys import Conn, DecryptionError, KeyFileError, Keyring, load_master_keys
from voice_server.security.keys import rotate_master_key as rotate

EXIT_OK, EXIT_FAILED, EXIT_ERROR = 0, 1, 2


def register(subparsers: argparse._SubParsersAction[Any]) -> None:
    """Add the ``keys`` and ``audit`` commands."""
    keys = subparsers.add_parser("keys", help="encryption keys").add_subparsers(metavar="ACTION", required=True)
    rotate_cmd = keys.add_parser(
        "rotate",
        help="replace the master key and re-wrap every user's data key (stop the server first)",
        description="Generates a new master key, re-wraps every data key with it in one transaction, then "
        "removes the old key from the key file. The data itself is not re-encrypted.",
    )
    rotate_cmd.add_argument("--config", type=Path)
    rotate_cmd.set_defaults(func=_cmd_rotate)
    audit = subparsers.add_parser("audit", help="the audit log").add_subparsers(metavar="ACTION", required=True)
    verify_cmd = audit.add_parser(
        "verify", help="check the audit log's hash chain and MACs; names the first bad row (exit 1)"
    )
    verify_cmd.add_argument("--config", type=Path)
    verify_cmd.set_defaults(func=_cmd_verify)


@contextlib.asynccontextmanager
async def _owner_connection(settings: Settings, *, exclusive: bool) -> AsyncIterator[Conn]:
    """A connection as the database owner; ``exclusive`` refuses to run next to a live server."""
    async with cli_database(settings, exclusive=exclusive) as db:
        conn = await psycopg.AsyncConnection.connect(db.url, autocommit=True, row_factory=dict_row)
        async with conn:
            yield conn


def _run(args: argparse.Namespace, work: Any) -> int:
    settings = load_settings(config_file=args.config)
    configure_logging("warning", settings.log_format)
    try:
        return int(asyncio.run(work(settings)))
    except (KeyFileError, DecryptionError, psycopg.Error, RuntimeError) as exc:  # StartupError is a RuntimeError
        print(f"soma: error: {exc}", file=sys.stderr)
        return EXIT_ERROR


def _cmd_rotate(args: argparse.Namespace) -> int:
    async def work(settings: Settings) -> int:
        load_master_keys(settings.key_file, create=False)  # a clear error before anything else happens
        async with _owner_connection(settings, exclusive=True) as conn:
            key_id, count = await rotate(conn, settings.key_file)
        print(f"master key rotated: new key {key_id}, {count} data keys re-wrapped")
        print("old backups still need the old master key: keep it with them, or destroy both together")
        return EXIT_OK

    return _run(args, work)


def _cmd_verify(args: argparse.Namespace) -> int:
    async def work(settings: Settings) -> int:
        keys = Keyring(load_master_keys(settings.key_file, create=False))
        async with _owner_connection(settings, exclusive=False) as conn:
            await keys.open_server_keys(conn)
            result = await verify(conn, keys.audit_mac_key)
        if result.ok:
            print(f"audit log intact: {result.rows} rows")
            return EXIT_OK
        print(f"audit log BROKEN at row {result.first_bad}: {result.reason} ({result.rows} rows verified before it)")
        return EXIT_FAILED

    return _run(args, work)
