"""Who may call, and which avatar a call reaches.

Trunks (settings ``sip_trunks``, parsed by `voice_server.sip.trunks`) admit callers by source address and/or
digest credentials. The Request-URI user selects the avatar: an account's username (its handle) or the numeric
extension of its SIP line (table ``sip_lines``, migration ``0005_sip``). A line's caller-ID allow-list keeps
strangers who know the extension away from a private avatar.
"""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass
from typing import Any

from voice_server import accounts
from voice_server.accounts import Conn, Principal
from voice_server.security.keys import Keyring
from voice_server.sip.auth import DigestServer, Verdict
from voice_server.sip.dialog import Refusal
from voice_server.sip.trunks import Trunk
from voice_server.stores.postgres import Database

SIP_TOKEN_ID = uuid.UUID(int=0)  # a SIP call has no bearer token; its principal says so with this id


def match_trunk(trunks: list[Trunk], ip: str) -> Trunk | None:
    """The first trunk admitting ``ip`` (``None``: no trunk does)."""
    return next((t for t in trunks if t.admits(ip)), None)


def admit_caller(trunks: list[Trunk], digest: dict[str, DigestServer], ip: str,
                 authorization: str | None) -> tuple[Trunk | None, Refusal | None]:
    """Who may call: a configured trunk (by source, then digest), or anyone when no trunk is configured.

    Args:
        digest: The digest server of each trunk with credentials, by trunk name.
        authorization: The INVITE's Authorization header.

    Returns:
        The caller's trunk (``None`` without trunks) and, when the INVITE is refused, the answer (401 with
        challenges, 403).
    """
    trunk = match_trunk(trunks, ip) if trunks else None
    if trunks and trunk is None:
        return None, Refusal(403, "Forbidden", "source not in any trunk's allow-list")
    if trunk is None or trunk.username is None:
        return trunk, None
    server = digest[trunk.name]
    verdict, user = server.verify(authorization, "INVITE", lambda u: trunk.password if u == trunk.username else None)
    if verdict in (Verdict.MISSING, Verdict.STALE):
        challenge = [("www-authenticate", c) for c in server.challenge(stale=verdict is Verdict.STALE)]
        return trunk, Refusal(401, "Unauthorized", f"challenged (trunk {trunk.name})", challenge)
    if verdict is Verdict.BAD:
        return trunk, Refusal(403, "Forbidden", f"wrong digest credentials for user {user!r}")
    return trunk, None


@dataclass(frozen=True, slots=True)
class Line:
    """The account an incoming call reaches."""

    user_id: uuid.UUID
    username: str
    extension: str | None
    allowed_callers: tuple[str, ...]

    def principal(self) -> Principal:
        """The identity the call's conversation runs as (the called user, with the ``calls`` scope only)."""
        return Principal(self.user_id, self.username, False, frozenset({"calls"}), SIP_TOKEN_ID)

    def admits_caller(self, caller: str) -> bool:
        """Whether caller-ID ``caller`` may reach this line (an empty list admits everyone)."""
        if not self.allowed_callers:
            return True
        return normalise_number(caller) in {normalise_number(c) for c in self.allowed_callers}


def normalise_number(text: str) -> str:
    """Compare caller IDs loosely: visual separators dropped (``+49 30-123`` = ``+4930123``)."""
    return "".join(ch for ch in text if ch.isalnum() or ch == "+").lower()


class LineDirectory:
    """Reads and writes ``sip_lines`` (every query keyed by user); the caller allow-list is sealed with the
    user's data key."""

    def __init__(self, db: Database, keys: Keyring) -> None:
        self._db = db
        self._keys = keys

    async def _line(self, user: dict[str, Any] | None, line: dict[str, Any] | None) -> Line | None:
        """The `Line` of account row ``user`` (`voice_server.accounts`) with its ``sip_lines`` row ``line``
        (``None``: no extension, no allow-list)."""
        if user is None:
            return None
        callers: tuple[str, ...] = ()
        if line is not None and line["allowed_callers"] is not None:
            key = await self._keys.user_key(self._db.pool, user["id"])
            callers = tuple(json.loads(key.open(line["allowed_callers"], _callers_context(user["id"]))))
        return Line(user["id"], user["username"], line["extension"] if line is not None else None, callers)

    async def lookup(self, target: str) -> Line | None:
        """The line a Request-URI user names: a username, else an extension; ``None`` if nobody.

        Two indexed lookups, one per table's owner (the account by `accounts`, the line here), rather than one
        join: ``users`` is read only through `voice_server.accounts`. A username is tried first, so an
        all-digit username wins over someone else's equal extension.
        """
        target = target.strip().lower()[:64]
        if not target:
            return None
        async with self._db.pool.connection() as conn:
            user = await accounts.get_user_by_username(conn, target)
            if user is not None:
                line = await _line_of(conn, user["id"])
            else:
                line = await _line_at(conn, target)
                user = await accounts.get_user(conn, line["user_id"]) if line is not None else None
        return await self._line(user, line)

    async def get(self, user_id: uuid.UUID) -> Line | None:
        """``user_id``'s line settings (``None`` when never set)."""
        async with self._db.pool.connection() as conn:
            line = await _line_of(conn, user_id)
            user = await accounts.get_user(conn, user_id) if line is not None else None
        return await self._line(user, line)

    async def put(self, user_id: uuid.UUID, extension: str | None, allowed_callers: list[str]) -> bool:
        """Set ``user_id``'s extension and caller allow-list; False when the extension is someone else's."""
        import psycopg

        key = await self._keys.user_key(self._db.pool, user_id)
        sealed = key.seal(json.dumps(allowed_callers), _callers_context(user_id)) if allowed_callers else None
        try:
            async with self._db.pool.connection() as conn:
                await conn.execute(
                    "INSERT INTO sip_lines (user_id, extension, allowed_callers) VALUES (%s, %s, %s) "
                    "ON CONFLICT (user_id) DO UPDATE SET extension = EXCLUDED.extension, "
                    "allowed_callers = EXCLUDED.allowed_callers, updated_at = now()",
                    (user_id, extension, sealed),
                )
        except psycopg.errors.UniqueViolation:
            return False
        return True


async def _line_of(conn: Conn, user_id: uuid.UUID) -> dict[str, Any] | None:
    """``user_id``'s ``sip_lines`` row (by its primary key)."""
    cur = await conn.execute(
        "SELECT user_id, extension, allowed_callers FROM sip_lines WHERE user_id = %s", (user_id,)
    )
    return await cur.fetchone()


async def _line_at(conn: Conn, extension: str) -> dict[str, Any] | None:
    """The ``sip_lines`` row with ``extension`` (unique, so indexed)."""
    cur = await conn.execute(
        "SELECT user_id, extension, allowed_callers FROM sip_lines WHERE extension = %s", (extension,)
    )
    return await cur.fetchone()


def _callers_context(user_id: uuid.UUID) -> str:
    return f"sip_lines.allowed_callers|{user_id}"
