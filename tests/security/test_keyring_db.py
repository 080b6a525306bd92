"""Data keys in a real Postgres: created once per user, never cached from a rolled-back transaction, re-wrapped
by a master key rotation without touching the data, and refused under the wrong master key."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import psycopg
import pytest
from psycopg.rows import dict_row

from tests.server.test_memory_learning import new_user
from voice_server.security.keys import DecryptionError, Keyring, load_master_keys, new_master_key, rotate_master_key
from voice_server.stores.postgres import Database


@pytest.fixture
async def db(tmp_path: Path) -> AsyncIterator[Database]:
    async with Database.open(None, tmp_path / "data") as database:
        yield database


async def test_a_key_created_in_a_rolled_back_transaction_is_not_reused(db: Database) -> None:
    """A key whose row was rolled back is never cached: the next use creates the key that really persists,
    and a restarted server (new keyring, same master key) opens what was sealed with it."""
    masters = [new_master_key()]
    keys = Keyring(masters)
    user = await new_user(db)
    async with db.pool.connection() as conn:
        with pytest.raises(RuntimeError):
            async with conn.transaction():
                lost = await keys.for_user(conn, user)
                raise RuntimeError("the caller's work failed")
        kept = await keys.for_user(conn, user)
        assert await keys.for_user(conn, user) is kept  # cached once committed
    blob = kept.seal("hello", "ctx")
    with pytest.raises(DecryptionError):
        lost.open(blob, "ctx")
    async with db.pool.connection() as conn:
        assert (await Keyring(masters).for_user(conn, user)).open(blob, "ctx") == "hello"
        with pytest.raises(LookupError):
            await keys.for_user(conn, uuid.uuid4())  # no such user: nothing can be sealed for them


async def test_rotation_rewraps_keys_and_old_data_still_opens(db: Database, tmp_path: Path) -> None:
    """`rotate_master_key` leaves one new key in the file, every data key re-wrapped under it, the data as it
    was; the old master key no longer unwraps anything."""
    key_file = tmp_path / "master.key"
    old = load_master_keys(key_file, create=True)
    users = [await new_user(db) for _ in range(3)]
    keys = Keyring(old)
    blobs = {}
    for user in users:
        blobs[user] = (await keys.user_key(db.pool, user)).seal(f"secret of {user}", "ctx")
    async with await psycopg.AsyncConnection.connect(db.url, autocommit=True, row_factory=dict_row) as owner:
        await keys.open_server_keys(owner)
        new_id, count = await rotate_master_key(owner, key_file)
    assert count == 3
    (current,) = load_master_keys(key_file, create=False)
    assert current.id == new_id and current.id != old[0].id
    rotated = Keyring([current])
    async with db.pool.connection() as conn:
        await rotated.open_server_keys(conn)
        for user in users:
            assert (await rotated.for_user(conn, user)).open(blobs[user], "ctx") == f"secret of {user}"
        with pytest.raises(DecryptionError, match="unknown master key"):
            await Keyring(old).for_user(conn, users[0])
    assert rotated.audit_mac_key == keys.audit_mac_key  # the audit chain's MAC key survives rotation
