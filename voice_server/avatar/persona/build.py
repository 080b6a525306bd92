"""One persona build: stream a user's messages through `ProfileExtractor`, embed the examples, store.

1. Read the user's imported messages through their owner (`voice_server.avatar.imports.store`) with a
   server-side cursor, `FETCH` rows at a time, ordered by time; each batch is opened (decrypted) and counted
   in a worker thread, so neither the texts of a whole history nor the CPU work ever sit on the event loop.
   The user's own messages feed the style, places and example sample; everyone else's only count their
   sender (people). Then the same for what the user typed in chat conversations, read by the turns' owner
   (``chat`` channel turns: typed, unlike voice transcripts whose capitals and punctuation are Whisper's).
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
from typing import Protocol

import numpy as np
import numpy.typing as npt

from voice_server import accounts
from voice_server.avatar.imports import store as imports_store
from voice_server.avatar.imports.store import TypedMessage
from voice_server.avatar.memory import store as memory_store
from voice_server.avatar.memory.ports import Embedder
from voice_server.avatar.persona.lexicon import Lexicon
from voice_server.avatar.persona.profile import MemoryFact, PersonaDoc, ProfileExtractor
from voice_server.avatar.persona.store import PersonaStore
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


class ChatTexts(Protocol):
    """What a user typed in chat conversations, read by the turns' owner (`voice_server.conversations.
    ConversationStore`). A protocol, because that module imports this package: the turns table is read only
    by its owner, which this module must not import."""

    async def stream_chat_texts(self, key: UserKey, feed: Callable[[list[str]], None], *, fetch: int) -> None:
        """Hand the key's owner's ``chat`` turns' user texts (opened), in turn order, to ``feed`` at most
        ``fetch`` at a time, each batch in a worker thread."""
        ...


def _feed_imported(extractor: ProfileExtractor, messages: list[TypedMessage]) -> None:
    for message in messages:
        if message.is_user:
            extractor.add_own(message.text or "", message.sender)
        else:
            extractor.add_other(message.sender)


def _feed_turns(extractor: ProfileExtractor, texts: list[str]) -> None:
    for text in texts:
        extractor.add_own(text)


async def build_persona(
    db: Database, keys: Keyring, embedder: Embedder | None, user_id: uuid.UUID, *, turns: ChatTexts
) -> BuildResult:
    """Build and store ``user_id``'s persona (see the module doc). Without an embedder no examples are stored.

    ``turns`` reads what the user typed in chat conversations (`voice_server.conversations.ConversationStore`).

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
        imports = await imports_store.done_count(conn, user_id)
        memory_rows = await memory_store.most_important(conn, key, MEMORIES)
    memories = [MemoryFact(m["text"], m["kind"], float(m["importance"]), m["subject"]) for m in memory_rows]
    extractor = await asyncio.to_thread(ProfileExtractor, Lexicon())
    # Typed messages only: transcribed recordings are left out, like voice turns (their capitals and
    # punctuation are Whisper's, not the user's).
    await imports_store.stream_typed_messages(db, key, lambda batch: _feed_imported(extractor, batch), fetch=FETCH)
    await turns.stream_chat_texts(key, lambda batch: _feed_turns(extractor, batch), fetch=FETCH)
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
