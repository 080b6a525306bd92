"""Serving tuned models: the person's own model answers them on every channel while it is switched on.

A tuned model is opened from its sealed files into a private RAM-backed directory, loaded from there by path
and the directory removed at once (measured in shared/TRAINING.md: loading from in-memory bytes costs twice
the model in RSS, this costs it once and leaves nothing on disk). At most ``resident`` tuned models stay loaded
(least recently used first out); each costs its int8 weights (~135 MB for SmolLM2, ~620 MB for Qwen 0.5B).

A conversation holds a `Lease` on the model it speaks with, for as long as it lasts: a model is closed only when
it is out of the cache *and* no lease holds it, so switching a model off or evicting it never cuts a reply.
When every resident model is leased and another is needed, the cache grows past ``resident`` for the time being
(a call is never refused or downgraded for memory that frees itself when the calls end), and shrinks again as
leases end.

A tuned model speaks sampled (`tuned_policy`), not greedy like the shared model: it is a model of how the person
writes, and its single most likely reply to most openers is the person's most frequent stock line (measured on
the bench's history: greedy, the tuned model answered "no worries mate" to five of eight openers), while
sampling gives the spread of how they really reply.
"""

from __future__ import annotations

import asyncio
import logging
import shutil
import uuid
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from pipeline.llm import ReplyPolicy
from voice_server.avatar.training import store
from voice_server.security.keys import Keyring
from voice_server.stores.postgres import Database

log = logging.getLogger(__name__)

DEFAULT_RESIDENT = 2
CLOSE_TIMEOUT_S = 10.0
TUNED_TEMPERATURE, TUNED_TOP_K, TUNED_TOP_P = 0.7, 40, 0.9


def tuned_policy(policy: ReplyPolicy | None = None) -> ReplyPolicy:
    """``policy`` (default: `ReplyPolicy()`) with the sampling a tuned model speaks with (see the module doc)."""
    return replace(policy or ReplyPolicy(), temperature=TUNED_TEMPERATURE, top_k=TUNED_TOP_K, top_p=TUNED_TOP_P)


@dataclass(slots=True)
class _Loaded:
    model_id: uuid.UUID
    user_id: uuid.UUID
    llm: Any
    leases: int = 0
    cached: bool = True


@dataclass(slots=True)
class Lease:
    """A tuned model in use; `release` exactly once when the conversation or request ends (idempotent)."""

    llm: Any
    model_id: uuid.UUID
    _release: Callable[[], None] = field(repr=False)
    _released: bool = False

    def release(self) -> None:
        """The model is no longer used by this holder."""
        if not self._released:
            self._released = True
            self._release()


class TunedModels:
    """The loaded tuned models (see the module doc).

    Args:
        db, keys: The stores (the choice and the sealed files are `voice_server.avatar.training.store`'s).
        root: ``<data dir>/tuned``.
        side_files: The base model's directory, whose tokenizer and template files a tuned model shares.
        load: Loads a CTranslate2 directory as a `models.llm.CT2Llm` (blocking; run on a thread).
        resident: Tuned models kept loaded.
    """

    def __init__(self, db: Database, keys: Keyring, root: Path, side_files: Path, load: Callable[[Path], Any],
                 resident: int = DEFAULT_RESIDENT) -> None:
        self._db = db
        self._keys = keys
        self._root = root
        self._side = side_files
        self._load = load
        self.resident = resident
        self._cache: OrderedDict[uuid.UUID, _Loaded] = OrderedDict()
        self._loading: dict[uuid.UUID, asyncio.Future[_Loaded]] = {}
        self._closing: set[asyncio.Task[Any]] = set()

    @property
    def loaded(self) -> list[uuid.UUID]:
        """Ids of the models loaded now (cached or still leased), least recently used first."""
        return list(self._cache)

    async def lease_for(self, user_id: uuid.UUID) -> Lease | None:
        """A lease on the user's active tuned model, loading it when needed; ``None`` when the base model
        answers them (no tuned model is on). A model that fails to load is logged and the base model answers:
        a call is never refused over it."""
        async with self._db.pool.connection() as conn:
            active, _ = await store.choice(conn, user_id)
        if active is None:
            return None
        try:
            loaded = await self._get(user_id, active)
        except Exception:
            log.exception("tuned model %s failed to load; the base model answers", active)
            return None
        loaded.leases += 1
        return Lease(loaded.llm, active, lambda: self._release(loaded))

    async def _get(self, user_id: uuid.UUID, model_id: uuid.UUID) -> _Loaded:
        if (hit := self._cache.get(model_id)) is not None:
            self._cache.move_to_end(model_id)
            return hit
        pending = self._loading.get(model_id)
        if pending is None:
            pending = asyncio.get_running_loop().create_future()
            self._loading[model_id] = pending
            try:
                async with self._db.pool.connection() as conn:
                    key = await self._keys.for_user(conn, user_id)
                llm = await asyncio.to_thread(self._open, key, user_id, model_id)
                loaded = _Loaded(model_id, user_id, llm)
                self._cache[model_id] = loaded
                self._trim()
                pending.set_result(loaded)
            except BaseException as exc:
                pending.set_exception(exc)
                pending.exception()  # retrieved: only waiters re-raise it
                raise
            finally:
                del self._loading[model_id]
            return loaded
        return await asyncio.shield(pending)

    def _open(self, key: Any, user_id: uuid.UUID, model_id: uuid.UUID) -> Any:
        where = store.ram_dir("soma-tuned-")
        try:
            store.open_model_files(store.model_dir(self._root, user_id, model_id), key, model_id,
                                   store.WEIGHT_FILES, where)
            store.copy_side_files(self._side, where)
            return self._load(where)
        finally:
            shutil.rmtree(where, ignore_errors=True)

    def _trim(self) -> None:
        """Drop least recently used models beyond `resident`; leased ones stay until their leases end."""
        for model_id in list(self._cache):
            if len(self._cache) <= self.resident:
                break
            loaded = self._cache[model_id]
            if loaded.leases == 0:
                del self._cache[model_id]
                loaded.cached = False
                self._close(loaded)

    def _release(self, loaded: _Loaded) -> None:
        loaded.leases -= 1
        if loaded.leases == 0 and not loaded.cached:
            self._close(loaded)
        elif loaded.leases == 0:
            self._trim()

    def forget(self, model_id: uuid.UUID) -> None:
        """Take a model out of the cache (switched off, deleted, its owner erased); it closes once unleased."""
        loaded = self._cache.pop(model_id, None)
        if loaded is not None:
            loaded.cached = False
            if loaded.leases == 0:
                self._close(loaded)

    def forget_user(self, user_id: uuid.UUID) -> None:
        """`forget` every model of the user (erasure)."""
        for model_id, loaded in list(self._cache.items()):
            if loaded.user_id == user_id:
                self.forget(model_id)

    def _close(self, loaded: _Loaded) -> None:
        task = asyncio.get_running_loop().create_task(asyncio.to_thread(loaded.llm.close, CLOSE_TIMEOUT_S))
        self._closing.add(task)
        task.add_done_callback(self._closing.discard)

    async def aclose(self) -> None:
        """Close every loaded model (shutdown: the conversations have ended)."""
        for model_id in list(self._cache):
            self.forget(model_id)
        if self._closing:
            await asyncio.gather(*self._closing, return_exceptions=True)
