"""The server's import jobs: uploaded files queued, run one at a time by an owned worker, progress published.

`ImportService` follows `MemoryService`'s shape: started and stopped by the resources' lifespan, one named
worker task, a bounded queue, and on shutdown the running job is cancelled (its transaction rolls back, the
row says ``failed``) and queued ones are marked failed. The queue (`import_queue.FairQueue`) holds at most
``per_user`` imports per user (uploading, waiting and running together) and `QUEUE_MAX` in all, refusing
the upload beyond either instead of growing, and runs waiting jobs round-robin between users, so no user
can keep another's imports out or make them wait behind their own.

An upload waits on disk sealed with its owner's data key (`security.files`) under ``<data_dir>/imports/
<user>/`` and is deleted when its job ends, however it ends. Imports left ``queued`` or ``running`` by a
crash are marked failed at the next start and their files removed.

Progress (`state`) lives in memory while a job runs; subscribers wait on `changed()` instead of polling.
Audio and video jobs (given `MediaTools`) report seconds of audio transcribed too; files they staged in the
media store and left by a crash are removed when their import is marked failed at the next start.
"""

from __future__ import annotations

import asyncio
import io
import logging
import shutil
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from voice_server.avatar.importers import Format, Me
from voice_server.avatar.imports.job import ImportFailed, Progress, create_import, mark_failed, run_import, worker_id
from voice_server.avatar.imports.queue import FairQueue, QueueFullError, QuotaExceededError
from voice_server.avatar.imports.recordings_plan import MediaTools
from voice_server.avatar.memory.ports import Embedder
from voice_server.background import OwnedTask
from voice_server.security import fields
from voice_server.security.files import SealedReader, write_sealed
from voice_server.security.keys import Keyring
from voice_server.stores.postgres import Database

log = logging.getLogger(__name__)

QUEUE_MAX = 64  # imports held at once, all users together (each user at most `per_user` of them)
PER_USER = 4
CANCELLED = "cancelled: you stopped this import; nothing of it was kept"
STOPPED = "interrupted: the server stopped"

__all__ = ["CANCELLED", "ImportService", "Job", "QueueFullError", "QuotaExceededError"]


@dataclass(frozen=True, slots=True)
class Job:
    """One queued upload."""

    user_id: uuid.UUID
    import_id: uuid.UUID
    path: Path
    name: str
    me: Me
    fmt: Format | None
    speaker: str | None = None


class ImportService:
    """Queue, run and report imports (see the module doc). Call `start` once, `aclose` at shutdown.

    ``media``: the speech model and media store that audio/video imports need (``None``: they fail, saying
    why). ``on_imported`` is awaited with the user's id after each import that finished (the persona rebuilds).
    ``per_user``: imports one user may have uploading, waiting or running at once.
    """

    def __init__(
        self,
        db: Database,
        keys: Keyring,
        embedder: Embedder | None,
        data_dir: Path,
        media: MediaTools | None = None,
        *,
        on_imported: Callable[[uuid.UUID], Awaitable[None]] | None = None,
        per_user: int = PER_USER,
    ) -> None:
        self.data_dir = data_dir
        self.media = media
        self.root = data_dir / "imports"
        self.worker = ""  # set by `start`
        self.db = db
        self.keys = keys
        self.embedder = embedder
        self.on_imported = on_imported
        # Not a `background.Worker` lane: admission (a slot per upload, held until its job ends, refused per
        # user and in all) and round-robin service between users are the fair queue's own; only the owned
        # task is shared.
        self._queue: FairQueue[uuid.UUID, Job] = FairQueue(per_user, max(QUEUE_MAX, per_user))
        self._worker = OwnedTask("import-worker")
        self._running: tuple[Job, asyncio.Task[None]] | None = None
        self._erased: set[uuid.UUID] = set()
        self._cancelled: set[uuid.UUID] = set()  # the running import its owner stopped (`_run` says so)
        self._states: dict[uuid.UUID, dict[str, Any]] = {}
        self._tick = asyncio.Event()

    async def start(self) -> None:
        """Fail what a previous run left unfinished, then start the worker."""
        self.worker = await asyncio.to_thread(worker_id, self.data_dir)
        async with self.db.pool.connection() as conn:
            cur = await conn.execute(
                "SELECT id, user_id FROM imports WHERE status IN ('queued', 'running') AND worker = %s",
                (self.worker,),
            )
            unfinished = await cur.fetchall()
        for row in unfinished:
            await mark_failed(self.db, self.keys, row["user_id"], row["id"], STOPPED)
            if self.media is not None:
                staged = self.media.store.staging_dir(row["user_id"], row["id"])
                await asyncio.to_thread(shutil.rmtree, staged, True)
        if unfinished:
            log.warning("imports: %d unfinished imports marked failed", len(unfinished))
        await asyncio.to_thread(shutil.rmtree, self.root, True)
        self._worker.start(self._work())

    async def aclose(self) -> None:
        """Cancel the running job (rolled back, marked failed) and fail the queued ones."""
        await self._worker.close(timeout=60.0)  # the running job rolls back and records why
        for _, job in self._queue.remove(lambda _: True):
            await self._finish_failed(job, STOPPED)

    # ------------------------------------------------------------------------------------------- upload

    async def submit(
        self,
        user_id: uuid.UUID,
        name: str,
        me: Me,
        fmt: Format | None,
        body: AsyncIterator[bytes],
        limit: int,
        *,
        speaker: str | None = None,
    ) -> uuid.UUID:
        """Seal ``body`` to disk, record a ``queued`` import and queue it; returns its id. ``speaker``: who
        speaks in a lone audio/video recording (default: the user).

        Raises:
            QuotaExceededError: ``user_id`` already has ``per_user`` imports (nothing is read or kept).
            QueueFullError: `QUEUE_MAX` imports are held, all users together (nothing is read or kept).
            ValueError: The body exceeds ``limit`` bytes (nothing is kept).
        """
        self._queue.admit(user_id)  # the slot is held until the job ends; released below if it never starts
        try:
            import_id = uuid.uuid4()
            folder = self.root / str(user_id)
            await asyncio.to_thread(folder.mkdir, 0o700, True, True)
            path = folder / f"{import_id}.sealed"
            async with self.db.pool.connection() as conn:
                key = await self.keys.for_user(conn, user_id)
            size = await write_sealed(path, key, fields.import_file(import_id), body, limit)
            job = Job(user_id, import_id, path, name, me, fmt, speaker)
            try:
                async with self.db.pool.connection() as conn:
                    await create_import(conn, self.keys, user_id, name, fmt, size, worker=self.worker,
                                        import_id=import_id)
            except BaseException:
                path.unlink(missing_ok=True)
                raise
        except BaseException:
            self._queue.release(user_id)
            raise
        self._queue.put(user_id, job)
        self._publish(import_id, {"status": "queued", "read": 0, "skipped": 0, "position": 0, "size": size})
        return import_id

    # --------------------------------------------------------------------------------------------- state

    def state(self, import_id: uuid.UUID) -> dict[str, Any] | None:
        """The live progress of a queued or running import (``None`` once it ended: read the row)."""
        return self._states.get(import_id)

    def ticket(self) -> asyncio.Event:
        """An event set at the next change of any import's progress: take it *before* reading `state`, then
        wait on it, and no change is missed."""
        return self._tick

    def _publish(self, import_id: uuid.UUID, state: dict[str, Any] | None) -> None:
        if state is None:
            self._states.pop(import_id, None)
        else:
            self._states[import_id] = state
        tick, self._tick = self._tick, asyncio.Event()
        tick.set()

    # -------------------------------------------------------------------------------------------- worker

    async def _work(self) -> None:
        while True:
            _, job = await self._queue.get()
            if job.user_id in self._erased:  # erased while its upload was being written
                await self._drop(job)
                continue
            task = asyncio.create_task(self._run(job), name=f"import-{job.import_id}")
            self._running = (job, task)
            try:
                await task
            except asyncio.CancelledError:
                current = asyncio.current_task()
                if current is not None and current.cancelling():
                    raise  # the service is stopping (awaiting the job's task cancelled it too)
                log.info("import %s cancelled (its owner stopped it or was erased)", job.import_id)
            except ImportFailed as exc:
                log.info("import %s failed: %s", job.import_id, exc)
            except Exception:
                log.exception("import %s failed", job.import_id)
            finally:
                self._running = None
                self._queue.release(job.user_id)

    async def cancel(self, user_id: uuid.UUID, import_id: uuid.UUID) -> bool:
        """Stop one of ``user_id``'s imports: a waiting one is dropped, a running one rolled back; either way
        nothing of it is kept and its row says ``failed`` (`CANCELLED`). False when it is neither waiting nor
        running in this process (finished already, or another server's)."""
        if self.state(import_id) is None:
            return False
        async with self.db.pool.connection() as conn:
            cur = await conn.execute("SELECT 1 FROM imports WHERE id = %s AND user_id = %s", (import_id, user_id))
            if await cur.fetchone() is None:
                return False
        # From here on no await until the job is out of the queue: the worker dequeues and starts a job without
        # yielding in between, so it is either still waiting (and is taken out here) or is the running one.
        if self._running is not None and self._running[0].import_id == import_id:
            task = self._running[1]
            self._cancelled.add(import_id)  # `_run` records the owner's reason, not a server stop
            task.cancel()
            await asyncio.wait([task])
            return True
        dropped = self._queue.remove(lambda job: job.import_id == import_id)
        if not dropped:  # it ended while the row was read
            return False
        for _, job in dropped:
            await self._finish_failed(job, CANCELLED)
        return True

    async def cancel_user(self, user_id: uuid.UUID) -> None:
        """Before an account is erased: stop its running import (rolled back) and drop its waiting ones, so
        the erasure never waits behind an import's transaction."""
        self._erased.add(user_id)  # one id per erasure in this process's lifetime (an upload may still finish)
        for _, job in self._queue.remove(lambda job: job.user_id == user_id):
            await self._drop(job)
        if self._running is not None and self._running[0].user_id == user_id:
            task = self._running[1]
            task.cancel()
            await asyncio.wait([task])

    async def _run(self, job: Job) -> None:
        async with self.db.pool.connection() as conn:
            key = await self.keys.for_user(conn, job.user_id)
        context = fields.import_file(job.import_id)

        def open_file() -> IO[bytes]:
            return io.BufferedReader(SealedReader(job.path, key, context), buffer_size=256 * 1024)

        def progress(p: Progress) -> None:
            self._publish(job.import_id, {"status": "running", "read": p.read, "skipped": p.skipped,
                                          "position": p.position, "size": p.size, "audio_s": round(p.audio_s, 2),
                                          "audio_total_s": round(p.audio_total_s, 2)})

        self._publish(job.import_id, {"status": "running", "read": 0, "skipped": 0, "position": 0, "size": 0})
        try:
            await run_import(
                self.db, self.keys, self.embedder, user_id=job.user_id, import_id=job.import_id,
                open_file=open_file, name=job.name, me=job.me, fmt=job.fmt, progress=progress, media=self.media,
                speaker=job.speaker,
            )
            if self.on_imported is not None:
                await self.on_imported(job.user_id)
        except asyncio.CancelledError:
            if job.import_id in self._cancelled:  # the owner stopped it: say so (run_import wrote "server stopped")
                self._cancelled.discard(job.import_id)
                await asyncio.shield(mark_failed(self.db, self.keys, job.user_id, job.import_id, CANCELLED))
            raise
        finally:
            await asyncio.shield(asyncio.to_thread(job.path.unlink, True))
            self._publish(job.import_id, None)

    async def _finish_failed(self, job: Job, reason: str) -> None:
        """End a job taken out of the queue before it ran: its row says why, then `_drop`."""
        try:
            await mark_failed(self.db, self.keys, job.user_id, job.import_id, reason)
        finally:
            await self._drop(job)

    async def _drop(self, job: Job) -> None:
        """Let go of a job that will not run: its owner's slot, its sealed upload, its progress stream."""
        self._queue.release(job.user_id)
        await asyncio.to_thread(job.path.unlink, True)
        self._publish(job.import_id, None)

    def erase_files(self, user_id: uuid.UUID) -> None:
        """Remove an erased user's waiting uploads (blocking)."""
        shutil.rmtree(self.root / str(user_id), ignore_errors=True)
