"""Envelope encryption: a master key on disk wraps one AES-256-GCM data key per user, stored in Postgres.

Every private value (turn text, memory text, live session state, media files, the source address in the audit
log) is sealed with its owner's data key. Each ciphertext is bound by associated data to its user and to the
row and column it was written for, so a ciphertext copied into another row — of the same or another user —
fails to open (`DecryptionError`), never decrypts to the wrong thing.

Deleting a user's data key (``user_keys`` row) makes everything sealed with it unreadable, including copies in
backups: erasure is crypto-shredding. `rotate_master_key` re-wraps the data keys under a new master key without
touching the data.

Sealed value format (bytea): ``0x01 ‖ nonce(12) ‖ AES-GCM ciphertext ‖ tag(16)``. A value starting with
``0x00`` is legacy plaintext written before encryption existed (migration 0004 marks it so); it is read as
such and re-sealed by `voice_server.security.backfill` at start-up.
"""

from __future__ import annotations

import base64
import hmac
import json
import logging
import os
import secrets
import uuid
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import psycopg
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from psycopg.pq import TransactionStatus
from psycopg_pool import AsyncConnectionPool

from voice_server.integrity import DataIntegrityError

log = logging.getLogger(__name__)

SEALED: Final = 0x01
LEGACY_PLAINTEXT: Final = 0x00
NONCE_LEN: Final = 12
TAG_LEN: Final = 16
KEY_LEN: Final = 32
SEALED_OVERHEAD: Final = 1 + NONCE_LEN + TAG_LEN  # bytes a sealed value adds to its plaintext
_CACHE_USERS: Final = 4096  # unwrapped data keys kept in memory (32 bytes each + cipher objects)
_WRAP_AD: Final = b"soma/user-key/v1|"

Conn = psycopg.AsyncConnection[dict[str, Any]]


class DecryptionError(DataIntegrityError):
    """A sealed value did not authenticate: wrong user, wrong row, tampered, or its key was erased."""


class KeyFileError(RuntimeError):
    """The master key file is missing, unreadable, malformed or too permissive; the message says which."""


@dataclass(frozen=True, slots=True)
class MasterKey:
    """One master key: ``id`` names it in ``user_keys.master_key_id``."""

    id: str
    key: bytes


def _load_key_file(path: Path) -> list[MasterKey]:
    try:
        mode = path.stat().st_mode & 0o777
        if mode & 0o077:
            raise KeyFileError(f"{path} is readable by other users (mode {mode:o}); run: chmod 600 {path}")
        data = json.loads(path.read_text(encoding="utf-8"))
        keys = [MasterKey(str(k["id"]), base64.b64decode(k["key"], validate=True)) for k in data["keys"]]
    except KeyFileError:
        raise
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise KeyFileError(f"master key file {path} is unreadable or malformed ({type(exc).__name__})") from None
    if not keys or any(len(k.key) != KEY_LEN for k in keys):
        raise KeyFileError(f"master key file {path} holds no valid 256-bit key")
    return keys


def _write_key_file(path: Path, keys: list[MasterKey]) -> None:
    """Write atomically with mode 0600 from creation (never a moment where the key is world-readable)."""
    body = json.dumps({"keys": [{"id": k.id, "key": base64.b64encode(k.key).decode()} for k in keys]}, indent=1)
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        fh.write(body)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


def new_master_key() -> MasterKey:
    """A fresh random master key with a random id."""
    return MasterKey(secrets.token_hex(8), secrets.token_bytes(KEY_LEN))


def load_master_keys(path: Path, *, create: bool) -> list[MasterKey]:
    """The master keys in ``path``, newest (the one that wraps new data keys) first.

    Args:
        path: The key file (``<data_dir>/master.key`` or ``SOMA_MASTER_KEY_FILE``).
        create: Generate the file (mode 0600) when it does not exist — on the first start only; a supplied
            key file that is missing is an error, not a reason to start with an empty key.

    Raises:
        KeyFileError: Missing (and not ``create``), malformed, or readable by group/others.
    """
    if not path.exists():
        if not create:
            raise KeyFileError(f"master key file {path} does not exist")
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        key = new_master_key()
        _write_key_file(path, [key])
        log.info("generated a new master key", extra={"key_file": str(path)})
        return [key]
    return _load_key_file(path)


class UserKey:
    """One user's data key, ready to seal and open values for that user.

    Associated data is ``user id ‖ context``: ``context`` names where the value lives (e.g.
    ``"turns.user_text|<conversation>|<index>"``) and must be given identically to `seal` and `open`.
    """

    __slots__ = ("_aead", "_mac_key", "user_id")

    def __init__(self, user_id: uuid.UUID, key: bytes) -> None:
        self.user_id = user_id
        self._aead = AESGCM(key)
        # A separate key for equality tags (HMAC), derived so a tag never reveals anything about the AEAD key.
        self._mac_key = hmac.digest(key, b"soma/tag/v1", "sha256")

    def _ad(self, context: str) -> bytes:
        return self.user_id.bytes + b"|" + context.encode()

    def seal_bytes(self, data: bytes, context: str) -> bytes:
        """Encrypt ``data`` for ``context``; a new random nonce every call."""
        nonce = secrets.token_bytes(NONCE_LEN)
        return bytes([SEALED]) + nonce + self._aead.encrypt(nonce, data, self._ad(context))

    def seal_into(self, data: memoryview, context: str, out: memoryview) -> None:
        """`seal_bytes` written into ``out`` (exactly ``len(data) + SEALED_OVERHEAD`` bytes): no temporary
        copies, for bulk data (file chunks)."""
        nonce = secrets.token_bytes(NONCE_LEN)
        out[0] = SEALED
        out[1 : 1 + NONCE_LEN] = nonce
        self._aead.encrypt_into(nonce, data, self._ad(context), out[1 + NONCE_LEN :])

    def open_bytes(self, blob: bytes, context: str) -> bytes:
        """Decrypt a `seal_bytes` value (or return a legacy plaintext value as is).

        Raises:
            DecryptionError: The value was sealed for another user or context, or was altered.
        """
        blob = bytes(blob)
        if blob[:1] == bytes([LEGACY_PLAINTEXT]):
            return blob[1:]
        if blob[:1] != bytes([SEALED]) or len(blob) < 1 + NONCE_LEN + TAG_LEN:
            raise DecryptionError(f"not a sealed value ({context.split('|', 1)[0]})")
        try:
            return self._aead.decrypt(blob[1 : 1 + NONCE_LEN], blob[1 + NONCE_LEN :], self._ad(context))
        except InvalidTag:
            raise DecryptionError(f"sealed value does not authenticate ({context.split('|', 1)[0]})") from None

    def seal(self, text: str, context: str) -> bytes:
        """`seal_bytes` for text (UTF-8)."""
        return self.seal_bytes(text.encode(), context)

    def open(self, blob: bytes, context: str) -> str:
        """`open_bytes` for text (UTF-8)."""
        return self.open_bytes(blob, context).decode()

    def open_optional(self, blob: bytes | None, context: str) -> str | None:
        """`open` that passes ``None`` through (nullable columns)."""
        return None if blob is None else self.open(blob, context)

    def tag(self, value: str) -> bytes:
        """A deterministic keyed tag of ``value`` (for equality lookups on a sealed column, per user)."""
        return hmac.digest(self._mac_key, value.encode(), "sha256")[:16]


class Keyring:
    """Loads, creates and caches users' data keys; shared by the whole process.

    Args:
        master_keys: From `load_master_keys`; the first wraps new data keys, all of them unwrap.
    """

    def __init__(self, master_keys: list[MasterKey]) -> None:
        if not master_keys:
            raise ValueError("at least one master key")
        self._masters = {k.id: AESGCM(k.key) for k in master_keys}
        self._current = master_keys[0].id
        self._cache: OrderedDict[uuid.UUID, UserKey] = OrderedDict()
        self._system: UserKey | None = None
        self._audit_mac: bytes | None = None
        self._share: bytes | None = None

    async def open_server_keys(self, conn: Conn) -> None:
        """Load (or create on first start) the server's own data key, wrapped like a user's: it seals values
        that belong to no user (a failed login's source address) and keys the audit log's MAC. Stored, not
        derived from the master key, so a master key rotation does not change it. Call once before use."""
        key = await self._server_key(conn, "system")
        self._system = UserKey(uuid.UUID(int=0), key)
        self._audit_mac = hmac.digest(key, b"soma/audit-mac/v1", "sha256")
        self._share = hmac.digest(key, b"soma/share-links/v1", "sha256")

    @property
    def system(self) -> UserKey:
        """The server's key for values owned by no user (after `open_server_keys`)."""
        if self._system is None:
            raise RuntimeError("Keyring.open_server_keys was not called")
        return self._system

    @property
    def audit_mac_key(self) -> bytes:
        """The key of the audit log's per-row MAC (after `open_server_keys`)."""
        if self._audit_mac is None:
            raise RuntimeError("Keyring.open_server_keys was not called")
        return self._audit_mac

    @property
    def share_key(self) -> bytes:
        """The key that signs share-link tokens (after `open_server_keys`)."""
        if self._share is None:
            raise RuntimeError("Keyring.open_server_keys was not called")
        return self._share

    async def _server_key(self, conn: Conn, name: str) -> bytes:
        ad_id = uuid.uuid5(uuid.NAMESPACE_URL, f"soma:server-key:{name}")
        key = secrets.token_bytes(KEY_LEN)
        await conn.execute(
            "INSERT INTO server_keys (name, master_key_id, wrapped) VALUES (%s, %s, %s) ON CONFLICT DO NOTHING",
            (name, self._current, self._wrap(self._current, ad_id, key)),
        )
        cur = await conn.execute("SELECT master_key_id, wrapped FROM server_keys WHERE name = %s", (name,))
        row = await cur.fetchone()
        assert row is not None
        return self._unwrap(row["master_key_id"], ad_id, row["wrapped"])

    async def for_user(self, conn: Conn, user_id: uuid.UUID) -> UserKey:
        """The user's data key, created (and wrapped) on first use.

        Raises:
            LookupError: The user does not exist (or was erased): nothing can be sealed for them.
            DecryptionError: The stored key does not unwrap with any master key (wrong key file).
        """
        cached = self._cache.get(user_id)
        if cached is not None:
            self._cache.move_to_end(user_id)
            return cached
        cur = await conn.execute("SELECT master_key_id, wrapped FROM user_keys WHERE user_id = %s", (user_id,))
        row = await cur.fetchone()
        if row is None:
            key = secrets.token_bytes(KEY_LEN)
            try:
                cur = await conn.execute(
                    "INSERT INTO user_keys (user_id, master_key_id, wrapped) SELECT id, %s, %s FROM users"
                    " WHERE id = %s ON CONFLICT (user_id) DO NOTHING RETURNING user_id",
                    (self._current, self._wrap(self._current, user_id, key), user_id),
                )
                created = await cur.fetchone()
            except psycopg.errors.ForeignKeyViolation:
                created = None
            if created is None:  # a concurrent first use won the race, or there is no such user
                cur = await conn.execute(
                    "SELECT master_key_id, wrapped FROM user_keys WHERE user_id = %s", (user_id,)
                )
                row = await cur.fetchone()
                if row is None:
                    raise LookupError("no such user")
                key = self._unwrap(row["master_key_id"], user_id, row["wrapped"])
        else:
            key = self._unwrap(row["master_key_id"], user_id, row["wrapped"])
        user_key = UserKey(user_id, key)
        # Inside a transaction the key row may be this transaction's own, uncommitted insert: caching it would
        # let later, committed writes use a key that a rollback erased. Cache only what is surely committed.
        if conn.info.transaction_status == TransactionStatus.IDLE:
            self._cache[user_id] = user_key
            if len(self._cache) > _CACHE_USERS:
                self._cache.popitem(last=False)
        return user_key

    def cached(self, user_id: uuid.UUID) -> UserKey:
        """A key already loaded by `for_user`/`user_key` (bulk loaders seal many rows without awaiting).

        Raises:
            KeyError: The key is not in the cache.
        """
        return self._cache[user_id]

    async def user_key(self, pool: AsyncConnectionPool[Conn], user_id: uuid.UUID) -> UserKey:
        """`for_user` that borrows a pooled connection only on a cache miss (the common case costs nothing)."""
        cached = self._cache.get(user_id)
        if cached is not None:
            self._cache.move_to_end(user_id)
            return cached
        async with pool.connection() as conn:
            return await self.for_user(conn, user_id)

    def forget(self, user_id: uuid.UUID) -> None:
        """Drop a cached key (the user was erased: nothing may be sealed or opened with it again)."""
        self._cache.pop(user_id, None)

    def _wrap(self, master_id: str, user_id: uuid.UUID, key: bytes) -> bytes:
        nonce = secrets.token_bytes(NONCE_LEN)
        return nonce + self._masters[master_id].encrypt(nonce, key, _WRAP_AD + user_id.bytes)

    def _unwrap(self, master_id: str, user_id: uuid.UUID, wrapped: bytes) -> bytes:
        master = self._masters.get(master_id)
        if master is None:
            raise DecryptionError(f"user key wrapped by unknown master key {master_id}: wrong key file?")
        wrapped = bytes(wrapped)
        try:
            return master.decrypt(wrapped[:NONCE_LEN], wrapped[NONCE_LEN:], _WRAP_AD + user_id.bytes)
        except InvalidTag:
            raise DecryptionError("user key does not unwrap: wrong or corrupted master key") from None

    async def rewrap_all(self, conn: Conn, to_master: str) -> int:
        """Re-wrap every stored data key under ``to_master`` (one transaction); returns how many."""
        count = 0
        async with conn.transaction():
            cur = await conn.execute("SELECT user_id, master_key_id, wrapped FROM user_keys FOR UPDATE")
            for row in await cur.fetchall():
                key = self._unwrap(row["master_key_id"], row["user_id"], row["wrapped"])
                await conn.execute(
                    "UPDATE user_keys SET master_key_id = %s, wrapped = %s, rotated_at = now() WHERE user_id = %s",
                    (to_master, self._wrap(to_master, row["user_id"], key), row["user_id"]),
                )
                count += 1
            cur = await conn.execute("SELECT name, master_key_id, wrapped FROM server_keys FOR UPDATE")
            for row in await cur.fetchall():
                ad_id = uuid.uuid5(uuid.NAMESPACE_URL, f"soma:server-key:{row['name']}")
                key = self._unwrap(row["master_key_id"], ad_id, row["wrapped"])
                await conn.execute(
                    "UPDATE server_keys SET master_key_id = %s, wrapped = %s WHERE name = %s",
                    (to_master, self._wrap(to_master, ad_id, key), row["name"]),
                )
        return count


async def rotate_master_key(conn: Conn, key_file: Path) -> tuple[str, int]:
    """Replace the master key: add a new one to ``key_file``, re-wrap every data key, drop the old ones.

    Crash-safe in this order: the file first holds new and old keys (either unwraps), then the database
    switches in one transaction, then the old keys leave the file. Run with the server stopped: a running
    server would keep wrapping new users' keys under the old master key.

    Returns:
        The new key's id and the number of data keys re-wrapped.
    """
    old = _load_key_file(key_file)
    new = new_master_key()
    _write_key_file(key_file, [new, *old])
    ring = Keyring([new, *old])
    count = await ring.rewrap_all(conn, new.id)
    _write_key_file(key_file, [new])
    return new.id, count
