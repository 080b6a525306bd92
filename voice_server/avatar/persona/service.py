"""The server's persona: rebuilds run by one owned worker, prompts cached per user, examples per turn.

`PersonaService` follows `ImportService`'s shape: started and stopped by the resources' lifespan, one named
worker task, a bounded queue of users (`QUEUE_MAX`; a user already waiting is not queued twice, and a user
whose build is running is built once more afterwards), builds one at a time. Stopping cancels the running
build (nothing of it is stored; its row stays ``building`` and is built again at the next start, as are
users whose imports finished after their last build — e.g. by ``soma import`` in another process).

The system prompt of a user (`prompt_for`) is cached for `CACHE_TTL_S` in a bounded LRU (`CACHE_USERS`);
an edit or a finished build in this process drops the entry at once, other workers of a scaled-out
deployment see it within the TTL. A session keeps the prompt it started with (it is the LLM's cached prefix).
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from voice_server.avatar.memory.ports import Embedder
from voice_server.avatar.persona.build import ChatTexts, build_persona
from voice_server.avatar.persona.prompt import EDIT_KEYS, examples_section, system_prompt
from voice_server.avatar.persona.store import PersonaRow, PersonaStore, Vector
from voice_server.background import QueueFullError, WhenFull, Worker
from voice_server.security.keys import Keyring
from voice_server.stores.postgres import Database

log = logging.getLogger(__name__)

QUEUE_MAX = 64
CACHE_USERS = 1024
CACHE_TTL_S = 60.0
EXAMPLES_PER_TURN = 3
EXAMPLES_TIMEOUT_S = 0.15


class PersonaBusyError(RuntimeError):
    """Too many rebuilds are waiting; try again later."""


@dataclass(frozen=True, slots=True)
class _Cached:
    prompt: str
    name: str
    has_examples: bool
    expires: float


class PersonaService:
    """Rebuilds, caches and serves users' personas (see the module doc). Call `start` once, `aclose` at
    shutdown.

    Args:
        db: The database (migration ``0007_persona``).
        keys: Users' data keys (profiles, edits and examples are sealed).
        embedder: The MiniLM embedder for the examples; ``None``: profiles and prompts only.
        turns: What users typed in chat conversations (`voice_server.conversations.ConversationStore`).
    """

    def __init__(self, db: Database, keys: Keyring, embedder: Embedder | None, *, turns: ChatTexts) -> None:
        self.db = db
        self.keys = keys
        self.embedder = embedder
        self.turns = turns
        self.store = PersonaStore(db, keys)
        self._worker = Worker("persona-worker")
        # Refused when full: `rebuild` tells the caller (429) instead of forgetting a user's build.
        self._builds = self._worker.queue(self._build, maxsize=QUEUE_MAX, when_full=WhenFull.REFUSE)
        self._queued: set[uuid.UUID] = set()  # the users in `_builds` (each at most once)
        self._again: set[uuid.UUID] = set()
        self._running: tuple[uuid.UUID, asyncio.Task[Any]] | None = None
        self._cache: collections.OrderedDict[uuid.UUID, _Cached] = collections.OrderedDict()

    # ----------------------------------------------------------------------------------------- lifecycle

    async def start(self) -> None:
        """Start the worker and queue the builds a previous run left to do."""
        self._worker.start()
        try:
            for user_id in await self.store.stale():
                self._enqueue(user_id)
        except Exception:
            log.exception("persona: could not queue unfinished builds")

    async def aclose(self) -> None:
        """Cancel the running build (nothing stored; built again at the next start) and stop."""
        await self._worker.close()

    async def drained(self) -> None:
        """Wait until no build is queued or running (tests, benchmarks)."""
        await self._worker.drain()

    # ---------------------------------------------------------------------------------------- rebuilding

    def _enqueue(self, user_id: uuid.UUID) -> bool:
        if self._running is not None and self._running[0] == user_id:
            self._again.add(user_id)
            return True
        if user_id in self._queued:
            return True
        try:
            self._builds.put(user_id)
        except QueueFullError:
            return False
        self._queued.add(user_id)
        return True

    async def rebuild(self, user_id: uuid.UUID) -> None:
        """Queue a rebuild of the user's persona; it says ``building`` until the build ends.

        Raises:
            PersonaBusyError: `QUEUE_MAX` other users' builds are waiting (nothing changes).
        """
        waiting = user_id in self._queued or (self._running is not None and self._running[0] == user_id)
        if not waiting and self._builds.full:
            raise PersonaBusyError("too many persona builds are waiting; try again later")
        # Marked before it is queued, so the build's own final status can never be overwritten by this one.
        await self.store.set_status(user_id, "building")
        if not self._enqueue(user_id):  # the queue filled up while the status was written
            await self.store.settle_status(user_id)
            raise PersonaBusyError("too many persona builds are waiting; try again later")

    async def after_import(self, user_id: uuid.UUID) -> None:
        """An import of the user's finished: rebuild (never raises; a build that cannot be queued now is
        done at the next start, which rebuilds personas older than their newest import)."""
        try:
            await self.rebuild(user_id)
        except PersonaBusyError:
            log.warning("persona: the build queue is full; the rebuild after an import waits for the next start")
        except Exception:
            log.exception("persona: could not queue a rebuild after an import")

    async def cancel_user(self, user_id: uuid.UUID) -> None:
        """Before an account is erased: drop its queued build, stop its running one, forget its cache."""
        if user_id in self._queued:
            self._queued.discard(user_id)
            self._builds.remove(lambda queued: queued == user_id)
        self._again.discard(user_id)
        self._cache.pop(user_id, None)
        if self._running is not None and self._running[0] == user_id:
            task = self._running[1]
            task.cancel()
            await asyncio.wait([task])

    async def _build(self, user_id: uuid.UUID) -> None:
        """One build, on the worker task. The build runs as its own task so that `cancel_user` can stop it
        without stopping the worker."""
        self._queued.discard(user_id)  # no await since the worker took it: `cancel_user` sees one or the other
        task = asyncio.create_task(build_persona(self.db, self.keys, self.embedder, user_id, turns=self.turns),
                                   name=f"persona-build-{user_id}")
        self._running = (user_id, task)
        try:
            result = await task
            log.info("persona built", extra={"messages": result.messages, "examples": result.examples,
                                             "stats_s": result.stats_s, "embed_s": result.embed_s})
        except asyncio.CancelledError:
            current = asyncio.current_task()
            if current is not None and current.cancelling():
                raise  # the service is stopping (awaiting the build cancelled it too)
            log.info("persona build cancelled: its account was erased")
        except LookupError:
            log.info("persona build skipped: the account no longer exists")
        except Exception:
            log.exception("persona build failed")
            with contextlib.suppress(Exception):
                await self.store.settle_status(user_id)
        finally:
            self._running = None
            self._cache.pop(user_id, None)
        if user_id in self._again:
            self._again.discard(user_id)
            self._enqueue(user_id)

    # ------------------------------------------------------------------------------------ reading, edits

    def view(self, row: PersonaRow, username: str) -> dict[str, Any]:
        """The ``GET /v1/persona`` object of ``row``."""
        profile = row.doc.profile if row.doc is not None else {
            "style": {}, "interests": [], "people": [], "places": [], "self_description": ""
        }
        return {
            "object": "persona",
            "status": row.status,
            "built_at": row.built_at,
            "sources": {"messages": row.messages, "imports": row.imports},
            "profile": profile,
            "edits": dict(row.edits),
            "prompt": system_prompt(row.doc, row.edits, username),
        }

    async def get(self, user_id: uuid.UUID, username: str) -> dict[str, Any]:
        """The user's persona as the API shows it."""
        return self.view(await self.store.load(user_id), username)

    async def edit(self, user_id: uuid.UUID, username: str, changes: Mapping[str, str | None]) -> dict[str, Any]:
        """Apply ``changes`` to the edits (a ``None`` value removes that edit) and return the persona."""
        row = await self.store.load(user_id)
        edits = dict(row.edits)
        for name, value in changes.items():
            if name not in EDIT_KEYS:
                raise ValueError(f"unknown edit {name!r}")
            if value is None:
                edits.pop(name, None)
            else:
                edits[name] = value
        await self.store.save_edits(user_id, edits)
        self._cache.pop(user_id, None)
        return self.view(await self.store.load(user_id), username)

    async def _cached(self, user_id: uuid.UUID, username: str) -> _Cached:
        now = time.monotonic()
        entry = self._cache.get(user_id)
        if entry is not None and entry.expires > now:
            self._cache.move_to_end(user_id)
            return entry
        row = await self.store.load(user_id)
        name = row.edits.get("name") or (row.doc.name if row.doc is not None else "") or username
        entry = _Cached(system_prompt(row.doc, row.edits, username), name, row.examples > 0, now + CACHE_TTL_S)
        self._cache[user_id] = entry
        self._cache.move_to_end(user_id)
        while len(self._cache) > CACHE_USERS:
            self._cache.popitem(last=False)
        return entry

    async def prompt_for(self, user_id: uuid.UUID, username: str) -> str:
        """The user's system prompt: their persona with their edits, or the default persona."""
        return (await self._cached(user_id, username)).prompt

    async def examples_for(self, user_id: uuid.UUID, username: str, vector: Vector | None) -> str:
        """The per-turn section quoting the user's `EXAMPLES_PER_TURN` messages nearest to ``vector`` (the
        embedding of what they just said); "" without a vector or examples, or when the lookup fails or takes
        over `EXAMPLES_TIMEOUT_S` (a turn is never held up by it)."""
        if vector is None:
            return ""
        try:
            async with asyncio.timeout(EXAMPLES_TIMEOUT_S):
                entry = await self._cached(user_id, username)
                if not entry.has_examples:
                    return ""
                texts = await self.store.nearest_examples(user_id, vector, EXAMPLES_PER_TURN)
        except TimeoutError:
            log.warning("persona: examples took over %.0f ms; answering without", EXAMPLES_TIMEOUT_S * 1000)
            return ""
        except Exception:
            log.warning("persona: examples failed; answering without", exc_info=True)
            return ""
        return examples_section(entry.name, texts)
