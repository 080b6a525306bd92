"""One persona build: stream a user's messages through `ProfileExtractor`, embed the examples, store.

1. Read the user's imported messages with a server-side cursor, `FETCH` rows at a time, ordered by time;
   each batch is opened (decrypted) and counted in a worker thread, so neither the texts of a whole history
   nor the CPU work ever sit on the event loop. The user's own messages feed the style, places and example
   sample; everyone else's only count their sender (people). Then the same for what the user typed in chat
   conversations (``chat`` channel turns: typed, unlike voice transcripts whose capitals and punctuation are
   Whisper's, not the user's).
2. Combine with the user's live memories (people, the self-description) in a worker thread.
3. Embed the example sample (at most `sample.MAX_EXAMPLES`) on the embedder's lane, `EMBED_BATCH` at a time
   (live turns' recall embeddings get the lane between batches).
4. Store profile, counts and examples in one transaction (`PersonaStore.save_build`).

Memory: one batch of rows and the extractor's bounded counters; never the history.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from voice_server import accounts
from voice_server.avatar.memory import store as memory_store
from voice_server.avatar.memory.service import Embedder
from voice_server.avatar.persona.lexicon import Lexicon
from voice_server.avatar.persona.profile import MemoryFact, PersonaDoc, ProfileExtractor
from voice_server.avatar.persona.store import PersonaStore
from voice_server.security import fields
from voice_server.security.keys import Keyring, UserKey
from voice_server.stores.postgres import Database

log = logging.getLogger(__name__)

FETCH = 1000
# Small batches: the embedder has one worker thread, shared with every live turn's recall (a 300 ms budget),
# so a turn arriving during a build waits for at most one batch (~0.1 s) instead of a long one.
EMBED_BATCH = 16
MEMORIES = 200  # live memories read for people and the self-description (the most important)
DIMENSION = 384


@dataclass(frozen=True, slots=True)
class BuildResult:
    """What a build produced, and where its time went (for logs and the benchmark)."""

    messages: int
    examples: int
    imports: int
    stats_s: float
    embed_s: float


def _feed_imported(extractor: ProfileExtractor, key: UserKey, rows: list[dict[str, Any]]) -> None:
    for row in rows:
        sender = key.open(row["sender"], fields.imported("sender", row["id"]))
        if row["is_user"]:
            extractor.add_own(key.open(row["text"], fields.imported("text", row["id"])), sender)
        else:
            extractor.add_other(sender)


def _feed_turns(extractor: ProfileExtractor, key: UserKey, rows: list[dict[str, Any]]) -> None:
    for row in rows:
        extractor.add_own(fields.open_turn(key, row)["user_text"])


async def _stream(
    db: Database, name: str, sql: str, user_id: uuid.UUID, feed: Callable[[list[dict[str, Any]]], None]
) -> None:
    """Run ``sql`` (one ``%s``: the user) with a server-side cursor and hand each batch to ``feed`` in a thread."""
    async with db.pool.connection() as conn, conn.transaction(), conn.cursor(name=name) as cursor:
        await cursor.execute(sql, (user_id,))
        while rows := await cursor.fetchmany(FETCH):
            await asyncio.to_thread(feed, rows)


async def build_persona(db: Database, keys: Keyring, embedder: Embedder | None, user_id: uuid.UUID) -> BuildResult:
    """Build and store ``user_id``'s persona (see the module doc). Without an embedder no examples are stored.

    Raises:
        LookupError: The user does not exist (erased meanwhile).
        asyncio.CancelledError: Nothing of this build is stored (the last transaction rolls back).
    """
    started = time.perf_counter()
    async with db.pool.connection() as conn:
        key = await keys.for_user(conn, user_id)
        user = await accounts.get_user(conn, user_id)
        if user is None:
            raise LookupError("no such user")
        cur = await conn.execute("SELECT count(*) AS n FROM imports WHERE user_id = %s AND status = 'done'", (user_id,))
        done = await cur.fetchone()
        memory_rows = await memory_store.most_important(conn, key, MEMORIES)
    imports = int(done["n"]) if done else 0
    memories = [MemoryFact(m["text"], m["kind"], float(m["importance"]), m["subject"]) for m in memory_rows]
    extractor = await asyncio.to_thread(ProfileExtractor, Lexicon())
    await _stream(
        db,
        "persona_imported",
        # Transcribed recordings are left out, like voice turns: their capitals and punctuation are Whisper's.
        "SELECT id, sender, text, is_user FROM imported_messages WHERE user_id = %s"
        " AND (attachment IS NULL OR attachment NOT IN ('voice', 'audio', 'video')) ORDER BY at, id",
        user_id,
        lambda rows: _feed_imported(extractor, key, rows),
    )
    await _stream(
        db,
        "persona_turns",
        "SELECT t.conversation_id, t.turn_index, t.user_text FROM turns t JOIN conversations c"
        " ON c.id = t.conversation_id WHERE t.user_id = %s AND c.channel = 'chat' ORDER BY t.id",
        user_id,
        lambda rows: _feed_turns(extractor, key, rows),
    )
    extracted = await asyncio.to_thread(
        extractor.finish, memories, display_name=user["display_name"] or "", username=user["username"]
    )
    stats_s = time.perf_counter() - started
    examples = extracted.examples if embedder is not None else []
    started = time.perf_counter()
    vectors = await _embed(embedder, examples)
    embed_s = time.perf_counter() - started
    learned = extracted.messages > 0 or bool(memories)
    doc: PersonaDoc | None = extracted.doc if learned else None
    await PersonaStore(db, keys).save_build(
        user_id, doc, messages=extracted.messages, imports=imports, examples=examples, vectors=vectors
    )
    return BuildResult(extracted.messages, len(examples), imports, round(stats_s, 3), round(embed_s, 3))


async def _embed(embedder: Embedder | None, texts: list[str]) -> npt.NDArray[np.float32]:
    if embedder is None or not texts:
        return np.zeros((0, DIMENSION), dtype=np.float32)
    parts = [
        np.asarray(await embedder.aembed(texts[i : i + EMBED_BATCH]), dtype=np.float32)
        for i in range(0, len(texts), EMBED_BATCH)
    ]
    return np.concatenate(parts)
