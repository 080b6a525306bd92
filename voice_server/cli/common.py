"""What every ``soma`` sub-command shares: exit codes, the one-line failure, and the database for a tool.

Errors a user can fix (bad settings, port in use, missing model, database down) end a command with one line on
stderr — ``soma: error: …`` — and a non-zero exit code, never a traceback: handlers raise `StartupError` (or
return `fail`'s code) for them.
"""

from __future__ import annotations

import contextlib
import sys
from typing import Any

from voice_server.config import Settings

EXIT_CONFIG = 2
EXIT_STARTUP = 1


class StartupError(RuntimeError):
    """A condition that prevents start-up; its message is the whole user-facing explanation."""


def fail(message: str, code: int) -> int:
    """Print ``soma: error: message`` on stderr; returns ``code`` (the command's exit code)."""
    print(f"soma: error: {message}", file=sys.stderr)
    return code


@contextlib.asynccontextmanager
async def cli_database(settings: Settings, *, exclusive: bool = False) -> Any:
    """The database for a command-line tool: the embedded server started (and stopped) here, or the running
    server's, used and left running.

    Args:
        exclusive: Refuse to run next to a live server (key rotation).

    Raises:
        StartupError: The database failed, or ``exclusive`` and a server is running.
    """
    from voice_server.resources import DataDirBusyError, data_dir_lock
    from voice_server.stores.postgres import Database, DatabaseError

    settings.data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    with contextlib.ExitStack() as stack:
        try:
            stack.enter_context(data_dir_lock(settings.data_dir))
            owner = True
        except DataDirBusyError:
            if exclusive:
                raise StartupError("a Soma server is running on this data dir: stop it first") from None
            owner = False  # a server is running: use its database, leave it running
        try:
            async with Database.open(settings.database_url, settings.data_dir, pool_max=2, owner=owner) as db:
                yield db
        except DatabaseError as exc:
            raise StartupError(str(exc)) from None



def cli_keyring(settings: Settings) -> Any:
    """The users' data keys for a command-line tool (`voice_server.security.keys.Keyring`), from the existing
    master key file.

    Raises:
        StartupError: The master key file is missing or unreadable.
    """
    from voice_server.security.keys import KeyFileError, Keyring, load_master_keys

    try:
        return Keyring(load_master_keys(settings.key_file, create=False))
    except KeyFileError as exc:
        raise StartupError(str(exc)) from None


async def account_id(conn: Any, username: str | None) -> Any:
    """The id of the account named ``username``, or of the only account when ``None``.

    Raises:
        StartupError: No such account, or ``None`` and there is not exactly one.
    """
    from voice_server import accounts

    if username is not None:
        row = await accounts.get_user_by_username(conn, username)
        if row is None:
            raise StartupError(f"no account named {username!r}")
        return row["id"]
    user_id = await accounts.sole_user_id(conn)
    if user_id is None:
        raise StartupError("there is not exactly one account: name it with --user USERNAME")
    return user_id
