"""The episode indexer: embeds queued episodes in the background, in small batches, calls first.

Imports and conversations write episodes with their terms at once (lexical search finds them immediately) and
queue them in ``episode_pending``; this one task embeds them with the server's MiniLM embedder and stores the
vectors. It shares the embedder's single lane with recall on the turn's path, so it hands the lane
`EMBED_CHUNK` short texts at a time (~20-40 ms on 2 cores): a turn's recall waits at most one chunk. Before
each batch it waits until no conversation is live (at most `MAX_WAIT_S`, so an idle open call cannot stall
indexing for ever), and between batches it yields. Idle, it looks for work every `POLL_S` seconds, or at once
when `wake` is called.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Sequence
from typing import Any, Protocol

import numpy as np

from voice_server.avatar.memory import episodes
from voice_server.live_calls import LiveCalls
from voice_server.security import fields
from voice_server.security.keys import Keyring
from voice_server.stores.postgres import Database

log = logging.getLogger(__name__)

BATCH = 128  # episodes read, embedded and stored per transaction
EMBED_CHUNK = 16  # texts per embedder call (the lane is shared with recall)
POLL_S = 2.0
MAX_WAIT_S = 30.0  # as imports wait (`voice_server.avatar.calls_first`): an idle open call cannot stall indexing
ERROR_BACKOFF_S = 5.0


class Embedder(Protocol):
    """`models.embed.MiniLmEmbedder`'s async face (memory's, imports' and the indexer's embedder)."""

    async def aembed(self, texts: Sequence[str]) -> Any: ...


class EpisodeIndexer:
    """One background task that embeds every queued episode (see the module doc).

    Args:
        db: The database.
        keys: Users' data keys (episode texts are sealed).
        embedder: The embedder recall uses (the vectors must share its space).
        live: The server's live conversations; ``None``: never wait (tests, CLI).
    """

    def __init__(self, db: Database, keys: Keyring, embedder: Embedder, live: LiveCalls | None = None) -> None:
        self._db = db
        self._keys = keys
        self._embedder = embedder
        self._live = live
        self._wake = asyncio.Event()
        self._idle = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self.indexed = 0  # episodes embedded since start (metrics, tests)

    def start(self) -> None:
        """Start the task (idempotent)."""
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="episode-indexer")

    def wake(self) -> None:
        """New episodes were queued: look now instead of at the next poll."""
        self._idle.clear()
        self._wake.set()

    async def aclose(self) -> None:
        """Stop the task; what is still queued is indexed after the next start."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def idle(self) -> None:
        """Wait until the queue was found empty (after the last `wake`)."""
        await self._idle.wait()

    async def _run(self) -> None:
        while True:
            try:
                done = await self.index_batch()
            except Exception:
                log.exception("episode indexer: a batch failed; retrying shortly")
                await asyncio.sleep(ERROR_BACKOFF_S)
                continue
            if done:
                continue  # more may wait; each batch already yielded to the loop at its awaits
            self._idle.set()
            self._wake.clear()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(POLL_S):
                    await self._wake.wait()

    async def index_batch(self) -> int:
        """Embed and store one batch of queued episodes; returns how many (0: the queue is empty)."""
        async with self._db.pool.connection() as conn:
            rows = await episodes.pending(conn, BATCH)
            if not rows:
                return 0
            texts = []
            for row in rows:
                key = await self._keys.for_user(conn, row["user_id"])
                texts.append(key.open(row["text"], fields.episode("text", row["id"])))
        if self._live is not None and not await self._live.until_none(MAX_WAIT_S):
            log.debug("episode indexer: a conversation stayed live; indexing one batch anyway")
        # Similar lengths together: the encoder pads each call to its longest text.
        order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
        vectors = np.zeros((len(texts), 384), dtype=np.float32)
        for start in range(0, len(order), EMBED_CHUNK):
            chunk = order[start : start + EMBED_CHUNK]
            vectors[chunk] = np.asarray(await self._embedder.aembed([texts[i] for i in chunk]), dtype=np.float32)
        async with self._db.pool.connection() as conn, conn.transaction():
            await episodes.store_vectors(conn, rows, list(vectors))
        self.indexed += len(rows)
        return len(rows)
