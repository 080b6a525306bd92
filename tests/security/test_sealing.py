"""Sealing primitives without a server: data keys, chunked files, share-link tokens, audit hashing."""

from __future__ import annotations

import io
import os
import stat
import uuid
from datetime import UTC, datetime
from pathlib import Path

import pytest

from voice_server.security import fields
from voice_server.security.audit import GENESIS, canonical, chain_hash
from voice_server.security.files import CHUNK, MAGIC, FileSealer, open_records
from voice_server.security.keys import DecryptionError, KeyFileError, UserKey, load_master_keys
from voice_server.security.share_links import check_token, make_token

ALICE, BOB = uuid.uuid4(), uuid.uuid4()


def key_of(user: uuid.UUID, material: bytes = b"k" * 32) -> UserKey:
    return UserKey(user, material)


def test_a_value_opens_only_for_its_user_and_row() -> None:
    """The ciphertext is bound to the user and the row/column context: anything else fails loudly."""
    alice = key_of(ALICE)
    conversation = uuid.uuid4()
    blob = alice.seal("my secret", fields.turn("user_text", conversation, 1))
    assert b"my secret" not in blob
    assert alice.open(blob, fields.turn("user_text", conversation, 1)) == "my secret"
    with pytest.raises(DecryptionError):
        alice.open(blob, fields.turn("user_text", conversation, 2))  # another row
    with pytest.raises(DecryptionError):
        alice.open(blob, fields.turn("heard_text", conversation, 1))  # another column
    with pytest.raises(DecryptionError):
        key_of(BOB).open(blob, fields.turn("user_text", conversation, 1))  # same key bytes, another user
    tampered = bytearray(blob)
    tampered[-1] ^= 1
    with pytest.raises(DecryptionError):
        alice.open(bytes(tampered), fields.turn("user_text", conversation, 1))


def test_each_seal_is_fresh_and_legacy_plaintext_still_reads() -> None:
    """Same plaintext twice gives different ciphertexts (random nonce); a 0x00-prefixed legacy value opens as is."""
    alice = key_of(ALICE)
    assert alice.seal("x", "c") != alice.seal("x", "c")
    assert alice.open(b"\x00hello", "anything") == "hello"
    with pytest.raises(DecryptionError):
        alice.open(b"\x07junk", "c")


def test_subject_tags_are_per_user_and_deterministic() -> None:
    """Equality tags match for one user and differ across users (no cross-user linking)."""
    assert key_of(ALICE).tag("ana") == key_of(ALICE).tag("ana")
    assert key_of(ALICE).tag("ana") != key_of(ALICE, b"j" * 32).tag("ana")


def _seal_file(key: UserKey, data: bytes, context: str) -> bytes:
    sealer = FileSealer(key, context)
    out = bytearray()
    for start in range(0, len(data), 100_000):
        out += sealer.feed(data[start : start + 100_000])
    out += sealer.finish()
    return bytes(out)


def _records(blob: bytes) -> list[bytes]:
    body, records = blob[len(MAGIC) :], []
    while body:
        length = int.from_bytes(body[:4], "big")
        records.append(body[: 4 + length])
        body = body[4 + length :]
    return records


@pytest.mark.parametrize("size", [0, 1, CHUNK, CHUNK + 1, 3 * CHUNK + 17])
def test_sealed_files_round_trip_at_chunk_boundaries(size: int) -> None:
    """Any size, including empty and exact chunk multiples, comes back byte for byte."""
    data = os.urandom(size)
    blob = _seal_file(key_of(ALICE), data, "media.file|1")
    assert b"".join(open_records(io.BytesIO(blob), key_of(ALICE), "media.file|1")) == data


def test_sealed_files_refuse_truncation_reordering_and_swaps() -> None:
    """Dropping the last chunk, swapping chunks or opening as another file all fail instead of returning data."""
    data = os.urandom(3 * CHUNK + 5)
    blob = _seal_file(key_of(ALICE), data, "media.file|1")
    records = _records(blob)
    assert len(records) == 4
    variants = {
        "truncated": MAGIC + b"".join(records[:-1]),
        "cut mid-record": blob[:-10],
        "reordered": MAGIC + records[1] + records[0] + b"".join(records[2:]),
        "no magic": blob[len(MAGIC) :],
    }
    for name, variant in variants.items():
        with pytest.raises(DecryptionError):
            b"".join(open_records(io.BytesIO(variant), key_of(ALICE), "media.file|1"))
        assert name
    with pytest.raises(DecryptionError):
        b"".join(open_records(io.BytesIO(blob), key_of(ALICE), "media.file|2"))


def test_share_tokens_are_signed_and_expire() -> None:
    """A token verifies with its key until it expires; altered, foreign-key or junk tokens are refused."""
    key, link = os.urandom(32), uuid.uuid4()
    token = make_token(key, link, expires_at=2_000_000_000)
    assert check_token(key, token, now=1_900_000_000) == link
    assert check_token(key, token, now=2_000_000_001) is None
    assert check_token(os.urandom(32), token, now=1_900_000_000) is None
    flipped = token[:-2] + ("A" if token[-2] != "A" else "B") + token[-1]
    assert check_token(key, flipped, now=1_900_000_000) is None
    for junk in ("", "shr_", "shr_!!!", "abc", "shr_" + "A" * 60, "shr_" + "A" * 500):
        assert check_token(key, junk, now=1_900_000_000) is None


def test_audit_hash_covers_every_column() -> None:
    """Changing any audited column changes the row hash; the chain starts from 32 zero bytes."""
    row = {
        "seq": 1, "at": datetime(2026, 11, 30, 12, 0, 0, 123456, tzinfo=UTC), "actor_id": ALICE, "user_id": ALICE,
        "action": "GET /v1/memories", "resource": "", "outcome": "ok", "status": 200, "source": b"\x01abc",
    }
    base = chain_hash(GENESIS, row)
    assert canonical(row) == canonical(dict(row))
    for column, other in [("seq", 2), ("action", "DELETE /v1/memories"), ("status", 404), ("user_id", BOB),
                          ("at", datetime(2026, 11, 30, 12, 0, 0, 123457, tzinfo=UTC)), ("source", None)]:
        assert chain_hash(GENESIS, {**row, column: other}) != base, column
    assert chain_hash(b"\x01" * 32, row) != base


def test_master_key_file_is_created_private_and_checked(tmp_path: Path) -> None:
    """The generated key file is 0600 and reloads; a world-readable, malformed or missing supplied file is refused."""
    path = tmp_path / "keys" / "master.key"
    (created,) = load_master_keys(path, create=True)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert load_master_keys(path, create=False) == [created]
    path.chmod(0o644)
    with pytest.raises(KeyFileError, match="readable by other users"):
        load_master_keys(path, create=False)
    path.chmod(0o600)
    path.write_text("{not json")
    with pytest.raises(KeyFileError, match="malformed"):
        load_master_keys(path, create=False)
    with pytest.raises(KeyFileError, match="does not exist"):
        load_master_keys(tmp_path / "missing.key", create=False)
