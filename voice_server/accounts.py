"""Users, passwords and API tokens: the data layer behind ``/v1/auth`` and ``soma users``.

Passwords are hashed with argon2id (run in a worker thread: a hash costs tens of milliseconds of CPU that
must not stall live calls). API tokens are 256-bit random strings prefixed ``soma_``; only their SHA-256 is
stored, so a database leak does not leak usable tokens.
"""

from __future__ import annotations

import asyncio
import hashlib
import re
import secrets
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

TOKEN_PREFIX = "soma_"
# A closed set, so a typo in a scope is an error rather than a token that can do nothing.
# ``memories``, ``media`` and ``proactive`` grant reading and changing; their ``:read``/``:write`` halves grant
# one of the two. ``events`` reads the avatar's messages (``/v1/events``, ``/v1/notifications``) and marks them
# read; ``proactive`` covers the bond, the proactive settings and milestones.
SCOPES = frozenset({
    "*", "calls", "chat", "memories", "memories:read", "memories:write", "persona", "media", "media:read",
    "media:write", "admin", "events", "proactive", "proactive:read", "proactive:write",
    "voice", "training",
})
# What a token's owner may see of it (never its hash).
TOKEN_COLUMNS = "id, name, scopes, created_at, expires_at, last_used_at, revoked_at"
USERNAME_RE = re.compile(r"^[a-z0-9][a-z0-9_.-]{1,31}$")
MIN_PASSWORD_LEN = 8
MAX_PASSWORD_LEN = 1024  # argon2 accepts more, but a megabyte "password" is an attack, not a password

_hasher = PasswordHasher()
# Verified against when the user does not exist, so a login takes as long for unknown users as for known ones.
_DUMMY_HASH = _hasher.hash("soma-timing-equaliser")

Conn = psycopg.AsyncConnection[dict[str, Any]]


class AccountError(ValueError):
    """Invalid account input; the message is safe to show to the user."""


@dataclass(frozen=True, slots=True)
class Principal:
    """Who is calling: the user behind a valid token and what that token may do."""

    user_id: uuid.UUID
    username: str
    is_admin: bool
    scopes: frozenset[str]
    token_id: uuid.UUID

    def allows(self, scope: str) -> bool:
        """True when the token carries ``scope``, the wildcard, or — for ``x:read``/``x:write`` — the whole ``x``."""
        if "*" in self.scopes or scope in self.scopes:
            return True
        base, sep, _ = scope.partition(":")
        return bool(sep) and base in self.scopes


@dataclass(frozen=True, slots=True)
class IssuedToken:
    """A freshly created token. ``secret`` is the only copy of the plaintext: show it once."""

    id: uuid.UUID
    secret: str
    name: str
    scopes: tuple[str, ...]
    expires_at: datetime | None


def validate_username(username: str) -> str:
    """Normalise to lower case and check the allowed shape; return the normalised name."""
    name = username.strip().lower()
    if not USERNAME_RE.fullmatch(name):
        raise AccountError("username: 2-32 characters, lower-case letters, digits, '_', '.', '-'")
    return name


def validate_password(password: str) -> None:
    """Reject passwords that are too short or absurdly long."""
    if len(password) < MIN_PASSWORD_LEN:
        raise AccountError(f"password: at least {MIN_PASSWORD_LEN} characters")
    if len(password) > MAX_PASSWORD_LEN:
        raise AccountError(f"password: at most {MAX_PASSWORD_LEN} characters")


def validate_scopes(scopes: list[str] | tuple[str, ...]) -> tuple[str, ...]:
    """Check every scope is known; return them de-duplicated and sorted."""
    unknown = sorted(set(scopes) - SCOPES)
    if unknown:
        raise AccountError(f"unknown scope(s) {', '.join(unknown)}; known: {', '.join(sorted(SCOPES))}")
    if not scopes:
        raise AccountError("scopes: at least one scope")
    return tuple(sorted(set(scopes)))


def hash_token(secret: str) -> bytes:
    """The stored form of a token."""
    return hashlib.sha256(secret.encode()).digest()


async def hash_password(password: str) -> str:
    """argon2id hash, computed off the event loop."""
    return await asyncio.to_thread(_hasher.hash, password)


async def _verify(stored: str, password: str) -> bool:
    def check() -> bool:
        try:
            return _hasher.verify(stored, password)
        except (VerificationError, InvalidHashError):
            return False

    return await asyncio.to_thread(check)


async def count_users(conn: Conn) -> int:
    """Number of accounts (used by the first-run signup policy)."""
    cur = await conn.execute("SELECT count(*) AS n FROM users")
    row = await cur.fetchone()
    return int(row["n"]) if row else 0


async def create_user(
    conn: Conn, username: str, password: str, *, display_name: str = "", is_admin: bool = False
) -> dict[str, Any]:
    """Insert a user and return its public row (no hash).

    Raises:
        AccountError: Invalid username/password, or the username is taken.
    """
    name = validate_username(username)
    validate_password(password)
    pw_hash = await hash_password(password)
    try:
        cur = await conn.execute(
            "INSERT INTO users (username, display_name, password_hash, is_admin) VALUES (%s, %s, %s, %s)"
            " RETURNING id, username, display_name, is_admin, created_at",
            (name, display_name.strip()[:100], pw_hash, is_admin),
        )
    except psycopg.errors.UniqueViolation:
        raise AccountError(f"username {name!r} is already taken") from None
    row = await cur.fetchone()
    assert row is not None
    return row


async def get_user(conn: Conn, user_id: uuid.UUID) -> dict[str, Any] | None:
    """The user's public row (``id, username, display_name, is_admin, created_at``); ``None`` when the account
    is gone (erased while a token or job was in flight)."""
    cur = await conn.execute(
        "SELECT id, username, display_name, is_admin, timezone, created_at FROM users WHERE id = %s", (user_id,)
    )
    return await cur.fetchone()


async def get_user_by_username(conn: Conn, username: str) -> dict[str, Any] | None:
    """The public row (as `get_user`) of the account named exactly ``username`` (stored names are lower case;
    the caller normalises if it wants to); ``None`` when there is none."""
    cur = await conn.execute(
        "SELECT id, username, display_name, is_admin, timezone, created_at FROM users WHERE username = %s",
        (username,),
    )
    return await cur.fetchone()


async def sole_user_id(conn: Conn) -> uuid.UUID | None:
    """The id of the only account; ``None`` when there is none or more than one (``soma import`` without
    ``--user``)."""
    cur = await conn.execute("SELECT id FROM users LIMIT 2")
    rows = await cur.fetchall()
    if len(rows) != 1:
        return None
    found: uuid.UUID = rows[0]["id"]
    return found


async def list_users(conn: Conn) -> list[dict[str, Any]]:
    """Every account, oldest first: ``id, username, display_name, is_admin, created_at, timezone`` (the
    proactive planner's pass over all users, ``soma users list``; callers filter by these ids in their own
    owners' bulk reads)."""
    cur = await conn.execute(
        "SELECT id, username, display_name, is_admin, created_at, timezone FROM users ORDER BY created_at"
    )
    return list(await cur.fetchall())


async def get_timezone(conn: Conn, user_id: uuid.UUID) -> str:
    """The user's IANA timezone name (``UTC`` until they choose one, and for an unknown user)."""
    cur = await conn.execute("SELECT timezone FROM users WHERE id = %s", (user_id,))
    row = await cur.fetchone()
    return str(row["timezone"]) if row is not None else "UTC"


async def set_timezone(conn: Conn, user_id: uuid.UUID, timezone: str) -> None:
    """Store the user's timezone, in the caller's transaction. The caller validates ``timezone`` (an IANA name:
    `voice_server.avatar.proactive.rules.zone_of`); an unknown user changes nothing."""
    await conn.execute("UPDATE users SET timezone = %s WHERE id = %s", (timezone, user_id))


async def check_login(conn: Conn, username: str, password: str) -> dict[str, Any] | None:
    """Return the user row when the password matches, else ``None`` (same cost either way)."""
    cur = await conn.execute(
        "SELECT id, username, display_name, is_admin, password_hash FROM users WHERE username = %s",
        (username.strip().lower(),),
    )
    row = await cur.fetchone()
    ok = await _verify(row["password_hash"] if row else _DUMMY_HASH, password[:MAX_PASSWORD_LEN])
    if row is None or not ok:
        return None
    row.pop("password_hash")
    return row


async def issue_token(
    conn: Conn,
    user_id: uuid.UUID,
    *,
    name: str = "",
    scopes: tuple[str, ...] = ("*",),
    ttl_s: int | None = None,
) -> IssuedToken:
    """Create a token for ``user_id``; ``ttl_s=None`` means it never expires (API tokens)."""
    scopes = validate_scopes(scopes)
    secret = TOKEN_PREFIX + secrets.token_urlsafe(32)
    expires_at = datetime.now(UTC) + timedelta(seconds=ttl_s) if ttl_s is not None else None
    cur = await conn.execute(
        "INSERT INTO api_tokens (user_id, name, token_hash, scopes, expires_at) VALUES (%s, %s, %s, %s, %s)"
        " RETURNING id",
        (user_id, name[:100], hash_token(secret), list(scopes), expires_at),
    )
    row = await cur.fetchone()
    assert row is not None
    return IssuedToken(row["id"], secret, name, scopes, expires_at)


async def authenticate(conn: Conn, secret: str) -> Principal | None:
    """Resolve a bearer token to its principal; ``None`` if unknown, revoked or expired."""
    if not secret.startswith(TOKEN_PREFIX) or len(secret) > 200:
        return None
    cur = await conn.execute(
        "UPDATE api_tokens t SET last_used_at = now() FROM users u"
        " WHERE t.token_hash = %s AND t.user_id = u.id AND t.revoked_at IS NULL"
        " AND (t.expires_at IS NULL OR t.expires_at > now())"
        " RETURNING t.id AS token_id, t.scopes, u.id AS user_id, u.username, u.is_admin",
        (hash_token(secret),),
    )
    row = await cur.fetchone()
    if row is None:
        return None
    return Principal(row["user_id"], row["username"], row["is_admin"], frozenset(row["scopes"]), row["token_id"])


async def delete_user(conn: Conn, user_id: uuid.UUID) -> None:
    """Delete the account, in the caller's transaction: every user table's rows go with it (their foreign keys
    cascade from ``users``). The caller does what else erasure needs (`voice_server.api.privacy_routes`)."""
    await conn.execute("DELETE FROM users WHERE id = %s", (user_id,))


async def get_token(conn: Conn, user_id: uuid.UUID, token_id: uuid.UUID) -> dict[str, Any] | None:
    """One of ``user_id``'s tokens (`TOKEN_COLUMNS`); ``None`` when there is no such token *or* it is someone
    else's (the routes answer 404 for both, so ids cannot be probed)."""
    cur = await conn.execute(
        f"SELECT {TOKEN_COLUMNS} FROM api_tokens WHERE id = %s AND user_id = %s", (token_id, user_id)
    )
    return await cur.fetchone()


async def list_tokens(conn: Conn, user_id: uuid.UUID) -> list[dict[str, Any]]:
    """The user's tokens (`TOKEN_COLUMNS`), newest first, at most 500 (revoked and expired ones included)."""
    cur = await conn.execute(
        f"SELECT {TOKEN_COLUMNS} FROM api_tokens WHERE user_id = %s ORDER BY created_at DESC LIMIT 500", (user_id,)
    )
    return list(await cur.fetchall())


async def revoke_token(conn: Conn, user_id: uuid.UUID, token_id: uuid.UUID) -> bool:
    """Revoke one of ``user_id``'s tokens; False when it is not theirs or already revoked."""
    cur = await conn.execute(
        "UPDATE api_tokens SET revoked_at = now() WHERE id = %s AND user_id = %s AND revoked_at IS NULL",
        (token_id, user_id),
    )
    return cur.rowcount == 1


async def export_account(conn: Conn, user_id: uuid.UUID) -> tuple[dict[str, Any] | None, list[dict[str, Any]]]:
    """``user_id``'s profile and their tokens' metadata, for their export: never a password or token hash."""
    cur = await conn.execute(
        "SELECT id, username, display_name, is_admin, timezone, created_at FROM users WHERE id = %s", (user_id,)
    )
    account = await cur.fetchone()
    cur = await conn.execute(
        "SELECT id, name, scopes, created_at, expires_at, last_used_at, revoked_at FROM api_tokens"
        " WHERE user_id = %s ORDER BY created_at",
        (user_id,),
    )
    return account, await cur.fetchall()
