"""The import job's sans-database parts: idempotency keys, batching and sealing, the sealed upload reader."""

from __future__ import annotations

import asyncio
import io
import os
import secrets
import uuid
from collections.abc import AsyncIterator
from datetime import datetime
from pathlib import Path

import pytest

from tests.avatar import import_fixtures as fx
from voice_server.avatar.importers import ImportedMessage, Me, parse
from voice_server.avatar.imports.job import BATCH, OccurrenceKeys, seal_batch
from voice_server.security import fields
from voice_server.security.files import CHUNK, SealedReader, write_sealed
from voice_server.security.keys import DecryptionError, UserKey


def _msg(text: str, minute: int) -> ImportedMessage:
    return ImportedMessage("whatsapp", "Chat", "Ana", datetime(2024, 1, 1, 9, minute), text, False)


def _key() -> UserKey:
    return UserKey(uuid.uuid4(), secrets.token_bytes(32))


def test_identical_messages_in_one_minute_get_distinct_keys_and_a_rerun_the_same_ones() -> None:
    """Two identical "ok" in the same minute are two messages; the keys are the same on every run."""
    messages = [_msg("ok", 1), _msg("ok", 1), _msg("hi", 1), _msg("ok", 2), _msg("ok", 1)]
    first = [OccurrenceKeys().key(m) for m in messages[:1]]
    counter = OccurrenceKeys()
    keys = [counter.key(m) for m in messages]
    again = OccurrenceKeys()
    assert [again.key(m) for m in messages] == keys
    assert keys[0] == first[0] and keys[0] != keys[1] and keys[1].endswith("|1")
    assert keys[3].endswith("|0") and keys[4] == keys[0]  # the counter restarts when the time changes


def test_a_longer_reexport_keeps_the_keys_of_the_messages_already_imported() -> None:
    """Appending messages to an export changes none of the earlier keys (so only the new ones are stored)."""
    old = [_msg("ok", 1), _msg("ok", 1), _msg("later", 3)]
    new = [*old, _msg("ok", 3), _msg("newest", 4)]
    keys_old, keys_new = OccurrenceKeys(), OccurrenceKeys()
    assert [keys_old.key(m) for m in old] == [keys_new.key(m) for m in new][: len(old)]


def test_batches_are_bounded_sealed_to_their_row_and_report_position(tmp_path: Path) -> None:
    """Records come in batches of at most BATCH, each value sealed for its own row and column, with the
    byte position growing to the file's end; the user's own facts become memory candidates, and the other
    person's as theirs (issue 20: "Ana Souza said: …", about Ana's dog)."""
    path = tmp_path / "WhatsApp Chat with Ana.txt"
    size = fx.whatsapp_android_stream(path, 1300)
    with path.open("a", encoding="utf-8") as out:
        out.write("02/02/2030, 10:00 - Me Myself: My sister Ana lives in Porto.\n")
        out.write("02/02/2030, 10:01 - Ana Souza: My dog is called Rex.\n")
    key = _key()
    with path.open("rb") as f:
        records = parse("whatsapp", f, me=Me.of("Me Myself"), path=str(path))
        counter = OccurrenceKeys()
        batches, seq = [], 0
        while True:
            batch = seal_batch(records, counter, key, f, seq)
            if not batch.read and not batch.skipped:
                break
            seq += len(batch.candidates)
            batches.append(batch)
    assert [b.read for b in batches] == [BATCH, BATCH, 302]
    assert batches[-1].position >= size
    positions = [b.position for b in batches]
    assert positions == sorted(positions)
    ids, idem, _, conversations, senders, texts, ats, is_user, _ = batches[-1].columns
    assert key.open(texts[-2], fields.imported("text", ids[-2])) == "My sister Ana lives in Porto."
    assert key.open(senders[-1], fields.imported("sender", ids[-1])) == "Ana Souza"
    assert key.open(conversations[0], fields.imported("conversation", ids[0])) == "Ana"
    with pytest.raises(DecryptionError):  # bound to its row: another row's id does not open it
        key.open(texts[-2], fields.imported("text", ids[-1]))
    assert is_user[-2] and not is_user[-1] and ats[-1].tzinfo is not None
    assert len(set(idem)) == len(idem)
    facts = {c.text: (said, episode) for b in batches for _, _, c, said, episode in b.candidates}
    assert "My sister Ana lives in Porto." in facts
    assert "Ana Souza said: My dog is called Rex." in facts
    said, episode = facts["My sister Ana lives in Porto."]
    assert said == ats[-2]  # said when the message was sent, not at import
    # Every message with text is an episode of its own, both speakers; a memory names its message's episode.
    last = batches[-1].episodes
    assert len(last) == 302 and episode == last.ids[-2]
    assert key.open(last.speakers[-1], fields.episode("speaker", last.ids[-1])) == "Ana Souza"
    assert last.message_ids[-1] == ids[-1] and last.said_at[-1] == ats[-1]


@pytest.mark.parametrize("size", [0, 5, CHUNK - 1, CHUNK, CHUNK + 1, 2 * CHUNK + 999])
def test_the_sealed_upload_reads_back_seekably(tmp_path: Path, size: int) -> None:
    """An upload sealed in chunks reads back byte-exact from any offset (the parsers read files twice)."""
    data = os.urandom(size)
    key, path = _key(), tmp_path / "upload.sealed"

    async def chunks() -> AsyncIterator[bytes]:
        for i in range(0, size, 70_000):
            yield data[i : i + 70_000]

    asyncio.run(write_sealed(path, key, "imports.file|x", chunks(), limit=10**9))
    assert data[:64] not in path.read_bytes() or size == 0
    with io.BufferedReader(SealedReader(path, key, "imports.file|x")) as f:
        assert f.read() == data
        f.seek(size // 3)
        assert f.read(100) == data[size // 3 : size // 3 + 100]
        f.seek(0, os.SEEK_END)
        assert f.tell() == size
    with pytest.raises(DecryptionError), io.BufferedReader(SealedReader(path, key, "imports.file|other")) as f:
        f.read()
