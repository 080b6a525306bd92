"""The episode indexer: embeds queued episodes in the background, in small batches, calls first.

Imports and conversations write episodes with their terms at once (lexical search finds them immediately) and
queue them in ``episode_pending``; this one task embeds them with the server's MiniLM embedder and stores the
vectors. It shares the embedder's single lane with recall on the turn's path, so it hands the lane
`EMBED_CHUNK` short texts at a time (~20-40 ms on 2 cores): a turn's recall waits at most one chunk. Before
each batch it waits for `Quiet` (no call live, no turn answered for a few seconds; at most `MAX_WAIT_S`, so an
idle open call cannot stall indexing for ever), and between batches it yields. Idle, it looks for work every
`POLL_S` seconds, or at once when `wake` is called.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time

import numpy as np

from voice_server.avatar.memory import episodes
from voice_server.avatar.memory.ports import Embedder
from voice_server.background import OwnedTask
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
QUIET_S = 5.0  # since the last recall: a conversation in progress recalls every few seconds


class Quiet:
    """When background memory work may use the CPU and the models: no call is live and no turn recalled
    memories in the last `QUIET_S` seconds. Text chats are not "live calls", but a reply that waits for an
    embedding batch or a summary is as slow to its reader: each recall `touch`es this."""

    def __init__(self, live: LiveCalls | None) -> None:
        self._live = live
        self._last = -QUIET_S

    def touch(self) -> None:
        """A turn is being answered now."""
        self._last = time.monotonic()

    async def wait(self, max_wait_s: float | None) -> bool:
        """Return once quiet, or after ``max_wait_s`` seconds (``None``: no limit); true when quiet."""
        deadline = None if max_wait_s is None else time.monotonic() + max_wait_s
        while True:
            left = None if deadline is None else deadline - time.monotonic()
            if left is not None and left <= 0:
                return False
            if self._live is not None and self._live.count:
                if not await self._live.until_none(left):
                    return False
                continue
            idle = time.monotonic() - self._last
            if idle >= QUIET_S:
                return True
            await asyncio.sleep(min(QUIET_S - idle, left if left is not None else QUIET_S))


class EpisodeIndexer:
    """One background task that embeds every queued episode (see the module doc).

    Args:
        db: The database.
        keys: Users' data keys (episode texts are sealed).
        embedder: The embedder recall uses (the vectors must share its space).
        quiet: When the server's conversations leave room for background work.
    """

    def __init__(self, db: Database, keys: Keyring, embedder: Embedder, quiet: Quiet) -> None:
        self._db = db
        self._keys = keys
        self._embedder = embedder
        self._quiet = quiet
        self._wake = asyncio.Event()
        self._idle = asyncio.Event()
        self._task = OwnedTask("episode-indexer")
        self.indexed = 0  # episodes embedded since start (metrics, tests)

    def start(self) -> None:
        """Start the task (idempotent)."""
        if not self._task.running:
            self._task.start(self._run())

    def wake(self) -> None:
        """New episodes were queued: look now instead of at the next poll."""
        self._idle.clear()
        self._wake.set()

    async def aclose(self) -> None:
        """Stop the task; what is still queued is indexed after the next start."""
        await self._task.close()

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
        if not await self._quiet.wait(MAX_WAIT_S):
            log.debug("episode indexer: conversations kept going; indexing one batch anyway")
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
