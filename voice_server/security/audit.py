"""The audit log: one append-only, hash-chained row per access to user data, login, token change or admin act.

Each row carries ``hash = SHA-256(prev_hash ‖ canonical(row))`` and ``mac = HMAC(server key, hash)``: editing,
deleting or reordering rows breaks the chain at the first changed row, and recomputing the hashes does not
help without the server key (which only the master key unwraps). The application's database role may only
INSERT and SELECT audit rows (migration 0004 and `voice_server.stores.postgres`), and triggers refuse UPDATE,
DELETE and TRUNCATE for everyone else.

Rows name users by id only. The source address is sealed with the data key of the user the row is about, so
an erased user's trail keeps no readable address: only a pseudonymous id remains.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Final

from voice_server.security import fields
from voice_server.security.keys import Conn, DecryptionError, Keyring
from voice_server.stores.postgres import Database
from voice_server.stores.user_rows import UserRows

log = logging.getLogger(__name__)

GENESIS: Final = bytes(32)
_EPOCH: Final = datetime(1970, 1, 1, tzinfo=UTC)
_CHAIN_LOCK: Final = 0x41_55_44_31  # serialises appends across workers: the chain has one order


@dataclass(frozen=True, slots=True)
class AuditEvent:
    """What happened. ``action`` is ``"METHOD /route/{template}"`` for HTTP requests or a dotted name
    (``auth.login``, ``call.start``, ``account.erase``); ``resource`` names the object (``memory:<id>``)."""

    action: str
    outcome: str
    actor_id: uuid.UUID | None = None
    user_id: uuid.UUID | None = None
    resource: str = ""
    status: int | None = None
    source: str | None = None


@dataclass(frozen=True, slots=True)
class Verification:
    """The result of `verify`: ``first_bad`` is the sequence number of the first row that fails (``None``
    when the whole chain is intact), ``reason`` says how."""

    rows: int
    first_bad: int | None
    reason: str

    @property
    def ok(self) -> bool:
        return self.first_bad is None


def canonical(row: dict[str, Any]) -> bytes:
    """The bytes a row's hash covers: every column except the hash and MAC, in a fixed order and format."""
    at: datetime = row["at"]
    return json.dumps(
        [
            row["seq"],
            (at - _EPOCH) // timedelta(microseconds=1),  # exact: Postgres keeps microseconds
            str(row["actor_id"]) if row["actor_id"] else None,
            str(row["user_id"]) if row["user_id"] else None,
            row["action"],
            row["resource"],
            row["outcome"],
            row["status"],
            bytes(row["source"]).hex() if row["source"] is not None else None,
        ],
        separators=(",", ":"),
    ).encode()


def chain_hash(prev_hash: bytes, row: dict[str, Any]) -> bytes:
    """SHA-256(prev_hash ‖ canonical(row))."""
    return hashlib.sha256(bytes(prev_hash) + canonical(row)).digest()


class AuditLog:
    """Appends and reads audit rows.

    Args:
        db: The database (its pool acts as the application role).
        keys: For sealing source addresses and the chain's MAC key.
    """

    def __init__(self, db: Database, keys: Keyring) -> None:
        self._db = db
        self._keys = keys

    async def record(self, event: AuditEvent) -> int:
        """Append ``event`` (its own transaction) and return its sequence number.

        Raises:
            psycopg.Error: The row could not be written; callers that serve data fail the request rather
                than serve it unaudited.
        """
        async with self._db.pool.connection() as conn, conn.transaction():
            return await self.append(conn, event)

    async def append(self, conn: Conn, event: AuditEvent) -> int:
        """`record` inside the caller's transaction (the row commits or rolls back with the caller's work)."""
        await conn.execute("SELECT pg_advisory_xact_lock(%s)", (_CHAIN_LOCK,))
        cur = await conn.execute("SELECT seq, hash FROM audit_log ORDER BY seq DESC LIMIT 1")
        last = await cur.fetchone()
        seq = 1 if last is None else int(last["seq"]) + 1
        prev = GENESIS if last is None else bytes(last["hash"])
        source: bytes | None = None
        if event.source:
            try:
                key = (
                    await self._keys.for_user(conn, event.user_id) if event.user_id is not None else self._keys.system
                )
                source = key.seal(event.source, fields.audit_source(seq))
            except LookupError:
                source = None  # the user is gone (erasure): the record stays pseudonymous
        row: dict[str, Any] = {
            "seq": seq,
            "at": datetime.now(UTC),
            "actor_id": event.actor_id,
            "user_id": event.user_id,
            "action": event.action[:200],
            "resource": event.resource[:200],
            "outcome": event.outcome,
            "status": event.status,
            "source": source,
        }
        digest = chain_hash(prev, row)
        await conn.execute(
            "INSERT INTO audit_log (seq, at, actor_id, user_id, action, resource, outcome, status, source,"
            " prev_hash, hash, mac) VALUES (%(seq)s, %(at)s, %(actor_id)s, %(user_id)s, %(action)s, %(resource)s,"
            " %(outcome)s, %(status)s, %(source)s, %(prev)s, %(hash)s, %(mac)s)",
            {**row, "prev": prev, "hash": digest, "mac": hmac.digest(self._keys.audit_mac_key, digest, "sha256")},
        )
        return seq

    async def trail(
        self, *, user_id: uuid.UUID | None, limit: int, before: int | None = None
    ) -> list[dict[str, Any]]:
        """Newest first: rows about or by ``user_id`` (``None``: every row, for admins), ``limit`` of them
        with ``seq < before``. Source addresses are opened where their key still exists."""
        async with self._db.pool.connection() as conn:
            cur = await conn.execute(
                "SELECT seq, at, actor_id, user_id, action, resource, outcome, status, source FROM audit_log"
                " WHERE (%s::uuid IS NULL OR user_id = %s OR actor_id = %s) AND (%s::bigint IS NULL OR seq < %s)"
                " ORDER BY seq DESC LIMIT %s",
                (user_id, user_id, user_id, before, before, limit),
            )
            rows = await cur.fetchall()
        for row in rows:
            row["source"] = await self.open_source(row)
        return rows

    def export_rows(self, user_id: uuid.UUID) -> UserRows:
        """The audit rows about or by ``user_id``, sources opened (`open_source`), for their export."""

        async def opened(row: dict[str, Any]) -> dict[str, Any]:
            return {**row, "source": await self.open_source(row)}

        return UserRows(
            "SELECT seq, at, actor_id, user_id, action, resource, outcome, status, source FROM audit_log"
            " WHERE user_id = %s OR actor_id = %s ORDER BY seq", (user_id, user_id), opened)

    async def open_source(self, row: dict[str, Any]) -> str | None:
        """The source address of an audit row, or ``None`` (none recorded, or its key was erased).

        Keys come through the keyring's cache (`Keyring.user_key`, its own pooled connection on a miss), not
        the caller's connection: a caller inside a transaction (the export's cursor) would otherwise look the
        key up again for every row, since keys read inside a transaction are not cached.
        """
        if row["source"] is None:
            return None
        try:
            key = await self._keys.user_key(self._db.pool, row["user_id"]) if row["user_id"] else self._keys.system
            return key.open(row["source"], fields.audit_source(row["seq"]))
        except (LookupError, DecryptionError):
            return None  # erased user (crypto-shredded) or a tampered row: `verify` names it


async def verify(conn: Conn, mac_key: bytes, *, batch: int = 5000) -> Verification:
    """Walk the whole chain in order and report the first row whose sequence, link, hash or MAC is wrong.

    Detects edited rows (hash), deleted or reordered rows (sequence gap or broken link), and rewritten chains
    (MAC). Deleting the newest rows leaves a shorter valid chain: compare `Verification.rows` with an earlier
    run (``soma audit verify`` prints it) to detect that.
    """
    prev, expected, count = GENESIS, 1, 0
    while True:
        cur = await conn.execute(
            "SELECT seq, at, actor_id, user_id, action, resource, outcome, status, source, prev_hash, hash, mac"
            " FROM audit_log WHERE seq >= %s ORDER BY seq LIMIT %s",
            (expected, batch),
        )
        rows = await cur.fetchall()
        for row in rows:
            seq = int(row["seq"])
            if seq != expected:
                return Verification(count, expected, f"row {expected} is missing (next is {seq})")
            if bytes(row["prev_hash"]) != prev:
                return Verification(count, seq, "its prev_hash does not link to the row before it")
            digest = chain_hash(prev, row)
            if digest != bytes(row["hash"]):
                return Verification(count, seq, "its content does not match its hash (edited)")
            if not hmac.compare_digest(hmac.digest(mac_key, digest, "sha256"), bytes(row["mac"])):
                return Verification(count, seq, "its MAC is wrong (the chain was recomputed without the key)")
            prev, expected, count = digest, seq + 1, count + 1
        if len(rows) < batch:
            return Verification(count, None, "intact")

