"""The voice-match job: search Kokoro's packs for the voice nearest a person's profile, in the background.

One search runs at a time on the server (it keeps both cores busy for minutes); others wait in a bounded
queue, in order. The search itself (`voice_server.avatar.voice.match.search_voice`) runs on this runner's own
worker thread. Calls come first: before every synthesis the search's checkpoint waits while any conversation is
live (at most `CALLS_FIRST_MAX_WAIT_S` per synthesis, so an idle open call cannot stall it for ever, the rule
imports follow) and stops at once when the job is cancelled or the server shuts down.

Progress is kept in memory while a job runs (`progress`), so polling it costs no database write per synthesis;
the row is updated when the job starts and ends. A server that stops mid-search marks it failed at the next start.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import date
from typing import Any

import numpy as np
import soxr

from models.executors import ComputeLane
from models.speaker import SpeakerEncoders
from models.tts import KokoroTts, pack_to_bytes
from voice_server.avatar.voice import enroll, store
from voice_server.avatar.voice.match import MatchCancelled, MatchPlan, MatchResult, search_voice
from voice_server.background import OwnedTask
from voice_server.live_calls import LiveCalls
from voice_server.security.keys import Keyring
from voice_server.stores.postgres import Database

log = logging.getLogger(__name__)

QUEUE_MAX = 32
CALLS_FIRST_MAX_WAIT_S = 30.0
DEFAULT_PACK = "jf_alpha"  # the stock Kokoro voice an avatar speaks with before a match: the search's baseline


class QueueFullError(RuntimeError):
    """Too many searches wait already."""


@dataclass(frozen=True, slots=True)
class MatchSettings:
    """How matches run: the search plan and the stock voice they must beat."""

    plan: MatchPlan
    default_pack: str = DEFAULT_PACK
    calls_first_max_wait_s: float = CALLS_FIRST_MAX_WAIT_S


class MatchRunner:
    """Queues and runs voice matches.

    Args:
        db, keys: The stores (the job rows, clips and voices are `voice_server.avatar.voice.store`'s).
        kokoro: The Kokoro engine the packs are tried with.
        encoders: Returns the loaded speaker encoders (loads them on first use).
        live: The server's live conversations (the search steps aside for them).
        settings: The plan and the baseline pack.
        on_matched: Called with (user id, new voice id) after a match better than the default was stored.
    """

    def __init__(
        self,
        db: Database,
        keys: Keyring,
        kokoro: KokoroTts,
        encoders: Callable[[], Awaitable[SpeakerEncoders]],
        live: LiveCalls,
        settings: MatchSettings,
        on_matched: Callable[[uuid.UUID, uuid.UUID], Awaitable[None]],
    ) -> None:
        self._db = db
        self._keys = keys
        self._kokoro = kokoro
        self._encoders = encoders
        self._live = live
        self.settings = settings
        self._on_matched = on_matched
        self._queue: asyncio.Queue[tuple[uuid.UUID, uuid.UUID]] = asyncio.Queue(QUEUE_MAX)
        self._task = OwnedTask("voice-match")
        self._lane = ComputeLane("voice-match")
        self._cancels: dict[uuid.UUID, threading.Event] = {}
        self._owners: dict[uuid.UUID, uuid.UUID] = {}  # job -> user, for `cancel_user`
        self._progress: dict[uuid.UUID, tuple[int, int]] = {}

    async def start(self) -> None:
        """Fail the searches a stopped server left behind, then start the worker."""
        async with self._db.pool.connection() as conn:
            failed = await store.fail_interrupted(conn)
        if failed:
            log.info("voice match: %d search(es) interrupted by the last stop were marked failed", failed)
        self._task.start(self._work())

    async def aclose(self) -> None:
        """Stop the search in progress (at its next synthesis) and the worker."""
        for event in self._cancels.values():
            event.set()
        await self._task.close(timeout=10.0)
        await asyncio.to_thread(self._lane.close, 10.0)

    def progress(self, job_id: uuid.UUID) -> tuple[int, int] | None:
        """(syntheses done, planned) of a running job; ``None`` when it is not running here."""
        return self._progress.get(job_id)

    async def submit(self, user_id: uuid.UUID) -> dict[str, Any] | None:
        """Queue a search for the user; the job row, or ``None`` when they have one queued or running.

        Raises:
            QueueFullError: `QUEUE_MAX` searches wait already.
        """
        if self._queue.full():
            raise QueueFullError("too many voice searches are waiting; try again later")
        async with self._db.pool.connection() as conn, conn.transaction():
            job = await store.create_job(conn, user_id, self.settings.plan.budget)
        if job is not None:
            try:
                self._queue.put_nowait((user_id, job["id"]))
            except asyncio.QueueFull:  # filled by another request while this one wrote its row
                async with self._db.pool.connection() as conn:
                    await store.set_job(conn, job["id"], state="failed", error="too many searches were waiting")
                raise QueueFullError("too many voice searches are waiting; try again later") from None
            self._cancels[job["id"]] = threading.Event()
            self._owners[job["id"]] = user_id
        return job

    def cancel_user(self, user_id: uuid.UUID) -> None:
        """Stop every queued or running search of the user (they end ``cancelled``, or vanish with the account)."""
        for job_id, owner in list(self._owners.items()):
            if owner == user_id and (event := self._cancels.get(job_id)) is not None:
                event.set()

    async def cancel(self, user_id: uuid.UUID, job_id: uuid.UUID) -> dict[str, Any] | None:
        """Cancel the user's job (a finished one stays as it ended); its row, or ``None`` if not theirs."""
        async with self._db.pool.connection() as conn:
            job = await store.get_job(conn, user_id, job_id)
            if job is None:
                return None
            event = self._cancels.get(job_id)
            if event is not None:
                event.set()
            await store.set_job(conn, job_id, state="cancelled")
            return await store.get_job(conn, user_id, job_id)

    async def _work(self) -> None:
        while True:
            user_id, job_id = await self._queue.get()
            try:
                await self._run(user_id, job_id)
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("voice match failed")
                async with self._db.pool.connection() as conn:
                    await store.set_job(conn, job_id, state="failed", error="the search failed; see the server log")
            finally:
                self._cancels.pop(job_id, None)
                self._owners.pop(job_id, None)
                self._progress.pop(job_id, None)

    async def _run(self, user_id: uuid.UUID, job_id: uuid.UUID) -> None:
        cancelled = self._cancels.get(job_id) or threading.Event()
        if cancelled.is_set():
            return
        async with self._db.pool.connection() as conn:
            key = await self._keys.for_user(conn, user_id)
            clips = await store.clips(conn, key)
            target = enroll.target(clips)
            if target is None:
                await store.set_job(conn, job_id, state="failed", error="the voice profile is empty")
                return
            await store.set_job(conn, job_id, state="running")
        encoders = await self._encoders()
        loop = asyncio.get_running_loop()
        plan = self.settings.plan
        self._progress[job_id] = (0, plan.budget)

        def checkpoint() -> None:
            if cancelled.is_set():
                raise MatchCancelled
            try:
                quiet = asyncio.run_coroutine_threadsafe(
                    self._live.until_none(self.settings.calls_first_max_wait_s), loop
                )
            except RuntimeError:  # the loop is closed: the server stops
                raise MatchCancelled from None
            while True:  # woken twice a second, so a cancel or a shutdown never waits for the calls to end
                try:
                    quiet.result(timeout=0.5)
                    break
                except TimeoutError:
                    if cancelled.is_set():
                        quiet.cancel()
                        raise MatchCancelled from None
            if cancelled.is_set():
                raise MatchCancelled

        def progress(done: int, total: int) -> None:
            self._progress[job_id] = (done, total)  # a tuple swap: atomic for the readers on the loop

        def synth(style: np.ndarray, speed: float, text: str) -> np.ndarray:
            audio = self._kokoro.synthesize_with(text, style, speed)
            return np.asarray(soxr.resample(audio, self._kokoro.sample_rate, 16_000), dtype=np.float32)

        pool = dict(self._kokoro.styles)
        future = self._lane.executor.submit(
            search_voice, pool, self.settings.default_pack, target, synth, encoders.embed, plan,
            checkpoint=checkpoint, progress=progress,
        )
        try:
            result: MatchResult = await asyncio.wrap_future(future)
        except MatchCancelled:
            async with self._db.pool.connection() as conn:
                await store.set_job(conn, job_id, state="cancelled")
            return
        except asyncio.CancelledError:
            cancelled.set()  # the shutdown: the search stops at its next checkpoint; `aclose` waits for the lane
            raise
        await self._finish(user_id, job_id, result)

    async def _finish(self, user_id: uuid.UUID, job_id: uuid.UUID, result: MatchResult) -> None:
        done, total = self._progress.get(job_id, (result.syntheses, result.syntheses))
        default = (result.default_r, result.default_d)
        async with self._db.pool.connection() as conn, conn.transaction():
            key = await self._keys.for_user(conn, user_id)
            voice_id: uuid.UUID | None = None
            if result.improved:
                meta = {"speed": result.speed, "recipe": result.recipe, "syntheses": result.syntheses,
                        "seconds": round(result.seconds, 1)}
                voice = await store.add_voice(
                    conn, key, kind="matched", name=f"Closest match, {date.today().isoformat()}",
                    params=store.pack_params(meta, pack_to_bytes(result.style)),
                    similarity=(result.heldout_r, result.heldout_d),
                )
                voice_id = voice.id
            await store.set_job(conn, job_id, state="done", done=done, total=total, voice_id=voice_id,
                                default=default)
        log.info("voice match: %s after %d syntheses in %.0f s", "improved" if result.improved else "no better voice",
                 result.syntheses, result.seconds)
        if voice_id is not None:
            await self._on_matched(user_id, voice_id)
