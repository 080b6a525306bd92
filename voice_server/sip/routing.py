"""Who may call, and which avatar a call reaches.

Trunks (settings ``sip_trunks``, JSON) admit callers by source address and/or digest credentials. The
Request-URI user selects the avatar: an account's username (its handle) or the numeric extension of its SIP
line (table ``sip_lines``, migration ``0005_sip``). A line's caller-ID allow-list keeps strangers who know the
extension away from a private avatar.
"""

from __future__ import annotations

import ipaddress
import json
import uuid
from dataclasses import dataclass, field
from typing import Any

from voice_server.accounts import Principal
from voice_server.ascii_numbers import ascii_int
from voice_server.security.keys import Keyring
from voice_server.sip.auth import ALGORITHMS, DigestServer, Verdict
from voice_server.sip.dialog import Refusal
from voice_server.stores.postgres import Database

SIP_TOKEN_ID = uuid.UUID(int=0)  # a SIP call has no bearer token; its principal says so with this id
Network = ipaddress.IPv4Network | ipaddress.IPv6Network


class TrunkError(ValueError):
    """The ``sip_trunks`` setting is malformed; the message says where (never echoes a password)."""


@dataclass(frozen=True, slots=True)
class Trunk:
    """One configured trunk or phone allowed to call in (and to carry outbound calls).

    Attributes:
        name: For logs.
        allow: Source networks admitted; empty = any source.
        username: Digest user a caller must authenticate as (with ``password``); ``None`` = no digest.
        password: Its password (never logged or shown).
        algorithms: Digest algorithms offered, in order (``SHA-256``, ``MD5``).
        proxy: ``host:port`` outbound calls are sent to (the PBX or provider); ``None``: no outbound calls
            through this trunk.
        proxy_username: Digest user we answer the proxy's 401/407 challenges with (with ``proxy_password``):
            a PBX often admits us by our address but makes us authenticate our calls.
    """

    name: str
    allow: tuple[Network, ...] = ()
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    algorithms: tuple[str, ...] = ("SHA-256", "MD5")
    proxy: str | None = None
    proxy_username: str | None = None
    proxy_password: str | None = field(default=None, repr=False)

    def admits(self, ip: str) -> bool:
        """Whether a request from ``ip`` belongs to this trunk."""
        if not self.allow:
            return True
        try:
            addr = ipaddress.ip_address(ip)
        except ValueError:
            return False
        return any(addr in net for net in self.allow)


def parse_trunks(text: str) -> list[Trunk]:
    """Parse the ``sip_trunks`` JSON list (empty text: no trunks).

    Example: ``[{"name": "pbx", "allow": ["192.168.1.0/24"], "username": "soma", "password": "…"}]``.

    Raises:
        TrunkError: On malformed JSON, unknown keys, bad networks or algorithms.
    """
    if not text.strip():
        return []
    try:
        raw = json.loads(text)
    except json.JSONDecodeError as exc:
        raise TrunkError(f"invalid JSON at character {exc.pos}") from None
    if not isinstance(raw, list):
        raise TrunkError("expected a JSON list of trunk objects")
    trunks: list[Trunk] = []
    for i, item in enumerate(raw):
        trunks.append(_trunk(i, item))
    return trunks


def _trunk(i: int, item: Any) -> Trunk:
    where = f"trunk {i}"
    if not isinstance(item, dict):
        raise TrunkError(f"{where}: expected an object")
    unknown = set(item) - {"name", "allow", "username", "password", "algorithms", "proxy",
                         "proxy_username", "proxy_password"}
    if unknown:
        raise TrunkError(f"{where}: unknown keys {sorted(unknown)}")
    name = str(item.get("name") or f"trunk{i}")
    try:
        allow = tuple(ipaddress.ip_network(str(n), strict=False) for n in item.get("allow") or [])
    except ValueError:
        raise TrunkError(f"{where} ({name}): 'allow' must list IP addresses or networks") from None
    username, password = item.get("username"), item.get("password")
    if (username is None) != (password is None):
        raise TrunkError(f"{where} ({name}): set both username and password, or neither")
    algorithms = tuple(str(a).upper() for a in item.get("algorithms") or ("SHA-256", "MD5"))
    if not algorithms or not set(algorithms) <= set(ALGORITHMS):
        raise TrunkError(f"{where} ({name}): algorithms must be SHA-256 and/or MD5")
    if not allow and username is None:
        raise TrunkError(f"{where} ({name}): give 'allow' networks, credentials, or both")
    proxy = item.get("proxy")
    if proxy is not None:
        host, colon, port = str(proxy).rpartition(":")
        number = ascii_int(port, max_digits=5)
        if not colon or not host or number is None or not 0 < number < 65536:
            raise TrunkError(f"{where} ({name}): 'proxy' must be host:port")
    proxy_user, proxy_password = item.get("proxy_username"), item.get("proxy_password")
    if (proxy_user is None) != (proxy_password is None) or (proxy_user is not None and proxy is None):
        raise TrunkError(f"{where} ({name}): proxy_username and proxy_password go together, with a proxy")
    return Trunk(name, allow, None if username is None else str(username),
                 None if password is None else str(password), algorithms,
                 None if proxy is None else str(proxy), None if proxy_user is None else str(proxy_user),
                 None if proxy_password is None else str(proxy_password))


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

    async def _line(self, row: dict[str, Any] | None) -> Line | None:
        if row is None:
            return None
        callers: tuple[str, ...] = ()
        if row["allowed_callers"] is not None:
            key = await self._keys.user_key(self._db.pool, row["id"])
            callers = tuple(json.loads(key.open(row["allowed_callers"], _callers_context(row["id"]))))
        return Line(row["id"], row["username"], row["extension"], callers)

    async def lookup(self, target: str) -> Line | None:
        """The line a Request-URI user names: a username or an extension; ``None`` if nobody."""
        target = target.strip().lower()[:64]
        if not target:
            return None
        async with self._db.pool.connection() as conn:
            cur = await conn.execute(
                "SELECT u.id, u.username, l.extension, l.allowed_callers FROM users u "
                "LEFT JOIN sip_lines l ON l.user_id = u.id WHERE u.username = %s OR l.extension = %s LIMIT 1",
                (target, target),
            )
            row = await cur.fetchone()
        return await self._line(row)

    async def get(self, user_id: uuid.UUID) -> Line | None:
        """``user_id``'s line settings (``None`` when never set)."""
        async with self._db.pool.connection() as conn:
            cur = await conn.execute(
                "SELECT u.id, u.username, l.extension, l.allowed_callers FROM users u "
                "JOIN sip_lines l ON l.user_id = u.id WHERE u.id = %s",
                (user_id,),
            )
            row = await cur.fetchone()
        return await self._line(row)

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


def _callers_context(user_id: uuid.UUID) -> str:
    return f"sip_lines.allowed_callers|{user_id}"
