"""The staged side of an audio/video import: what `media_job.prepare` hands back to the import job.

A `MediaPlan` owns, for one file, the report entries (`MediaEntry`), the files sealed into a staging folder of
the media store (`Staged`: each transcribed recording and a video's keyframes), the records to store, and a
single worker thread that runs all of the job's blocking media work in order (PyAV never sees two threads
at once, even when the job is cancelled mid-way). Call order: `prepare` fills it; the import job iterates
`records` in its transaction, then `commit` (rows, links, files moved into place), then `aclose`.
"""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Protocol, TypeVar

import numpy as np
import numpy.typing as npt

from models.asr import Transcript
from voice_server.avatar.importers import Record
from voice_server.security import fields
from voice_server.security.files import write_sealed
from voice_server.security.keys import UserKey
from voice_server.user_files import Conn, MediaStore

T = TypeVar("T")
COPY_BLOCK = 1 << 20
Status = Literal["transcribed", "no_speech", "already_imported", "missing", "damaged"]


class NoSpeechModelError(RuntimeError):
    """An audio/video import where no speech model is loaded; the message says so (the import fails)."""


class Transcriber(Protocol):
    """The speech model as the job uses it (`models.asr.WhisperAsr`)."""

    async def atranscribe(self, audio: npt.NDArray[np.float32], *, language: str | None = "en") -> Transcript:
        """Transcribe up to 30 s of 16 kHz mono audio off the event loop; ``language=None`` detects it."""
        ...


@dataclass(frozen=True, slots=True)
class MediaTools:
    """What audio and video imports need besides the database.

    Attributes:
        asr: The speech model, or ``None`` when none is loaded (such imports then fail with that reason).
        store: Where kept recordings and keyframes go (sealed like uploads).
        max_bytes: The largest recording kept (``SOMA_MEDIA_MAX_BYTES``).
    """

    asr: Transcriber | None
    store: MediaStore
    max_bytes: int = 2 * 1024**3


@dataclass(slots=True)
class MediaEntry:
    """One recording's line in the import's report (JSON-safe via `as_json`)."""

    name: str
    kind: Literal["audio", "video", "voice"]
    status: Status = "transcribed"
    seconds: float = 0.0
    messages: int = 0
    error: str = ""
    media_id: uuid.UUID | None = None
    keyframes: list[uuid.UUID] = field(default_factory=list)

    def as_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"name": self.name, "kind": self.kind, "status": self.status,
                               "seconds": round(self.seconds, 2), "messages": self.messages}
        if self.error:
            out["error"] = self.error
        if self.media_id is not None:
            out["media_id"] = str(self.media_id)
        if self.keyframes:
            out["keyframes"] = [str(k) for k in self.keyframes]
        return out


@dataclass(frozen=True, slots=True)
class Piece:
    """What one window said, ``offset_s`` into its recording."""

    offset_s: float
    text: str


@dataclass(frozen=True, slots=True)
class Staged:
    """A file sealed into the staging folder, to become a media row and an ``import_media`` link."""

    media_id: uuid.UUID
    path: Path
    name: str
    content_type: str
    size: int
    kind: Literal["source", "keyframe"]
    tag: bytes | None = None
    source_id: uuid.UUID | None = None
    offset_s: float | None = None
    seconds: float | None = None
    by_user: bool | None = None  # a source recording: is it the user speaking (their voice profile may use it)


AudioProgress = Callable[[float, float], None]  # (seconds transcribed, seconds in all)
KnownTags = Callable[[list[bytes]], Awaitable[set[bytes]]]  # which recording tags were imported before


class Readable(Protocol):
    """What `copy_body` reads from."""

    def read(self, n: int = -1, /) -> bytes: ...

    def close(self) -> None: ...


class MediaPlan:
    """What `prepare` produced for one file; see the module doc for the call order."""

    def __init__(self, store: MediaStore, key: UserKey, import_id: uuid.UUID, max_bytes: int) -> None:
        self.entries: list[MediaEntry] = []
        self.audio_s = 0.0
        self._store = store
        self._key = key
        self._max_bytes = max_bytes
        self._staging = store.staging_dir(key.user_id, import_id)
        self._staged: list[Staged] = []
        self._records: Callable[[], Iterator[Record]] = lambda: iter(())
        self._closers: list[Callable[[], None]] = []  # what `prepare` opened and the records read (an archive)
        self._pool = ThreadPoolExecutor(1, thread_name_prefix="soma-media-import")
        self._committed = False

    async def blocking(self, fn: Callable[..., T], *args: Any) -> T:
        """Run ``fn`` on the plan's worker thread (in submission order with all its other blocking work)."""
        return await asyncio.get_running_loop().run_in_executor(self._pool, fn, *args)

    def records(self) -> Iterator[Record]:
        """The records to store, in order (blocking: iterate them in a worker thread, like a parser's)."""
        return self._records()

    def set_records(self, records: Callable[[], Iterator[Record]]) -> None:
        """What `records` returns (``prepare`` sets it once the transcripts are known)."""
        self._records = records

    def on_close(self, closer: Callable[[], None]) -> None:
        """Run ``closer`` (blocking) in `aclose`, after every other use of the worker; last added, first run."""
        self._closers.append(closer)

    def report(self) -> list[dict[str, Any]]:
        """The per-recording report (JSON-safe)."""
        return [entry.as_json() for entry in self.entries]

    async def stage(
        self,
        body: AsyncIterator[bytes],
        *,
        name: str,
        content_type: str,
        kind: Literal["source", "keyframe"],
        tag: bytes | None = None,
        source_id: uuid.UUID | None = None,
        offset_s: float | None = None,
        seconds: float | None = None,
        by_user: bool | None = None,
    ) -> Staged:
        """Seal ``body`` into the staging folder under a new media id (see `Staged` for the rest).

        Raises:
            ValueError: The file is over the media size limit.
        """
        media_id = uuid.uuid4()
        await self.blocking(self._staging.mkdir, 0o700, True, True)
        path = self._staging / f"{media_id}.sealed"
        self._staged.append(Staged(media_id, path, name, content_type, 0, kind))  # removed by aclose if it fails
        size = await write_sealed(path, self._key, fields.media_file(media_id), body, self._max_bytes)
        item = Staged(media_id, path, name, content_type, size, kind, tag, source_id, offset_s, seconds, by_user)
        self._staged[-1] = item
        return item

    async def commit(self, conn: Conn, import_id: uuid.UUID) -> None:
        """Inside the import's transaction: record the staged files as the user's media, link them to the
        import, and move them into the media store. A recording another import kept meanwhile (the unique
        tag) is dropped here, not duplicated."""
        user_id = self._key.user_id
        dropped: set[uuid.UUID] = set()
        for item in self._staged:
            if item.source_id in dropped:
                dropped.add(item.media_id)
                continue
            await self._store.insert_row(conn, self._key, item.media_id, item.name, item.content_type, item.size)
            cur = await conn.execute(
                "INSERT INTO import_media (media_id, user_id, import_id, kind, source_id, offset_s, seconds,"
                " content_tag, by_user) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s)"
                " ON CONFLICT (user_id, content_tag) WHERE kind = 'source' DO NOTHING RETURNING media_id",
                (item.media_id, user_id, import_id, item.kind, item.source_id, item.offset_s, item.seconds, item.tag,
                 item.by_user),
            )
            if await cur.fetchone() is None:
                await conn.execute("DELETE FROM media WHERE id = %s AND user_id = %s", (item.media_id, user_id))
                dropped.add(item.media_id)
        kept = [item for item in self._staged if item.media_id not in dropped]
        await self.blocking(self._move, kept)
        self._committed = True

    def _move(self, kept: list[Staged]) -> None:
        for item in kept:
            target = self._store.path_for(self._key.user_id, item.media_id)
            target.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
            item.path.replace(target)

    async def aclose(self, *, committed: bool) -> None:
        """Close what the plan holds open; unless the transaction ``committed``, delete every file it wrote
        (staged or already moved). Waits for the worker's current task first."""

        def close() -> None:
            for closer in reversed(self._closers):
                closer()
            if not committed:
                for item in self._staged:
                    self._store.path_for(self._key.user_id, item.media_id).unlink(missing_ok=True)
            shutil.rmtree(self._staging, ignore_errors=True)
            with contextlib.suppress(OSError):  # another job may be staging for this user too
                self._staging.parent.rmdir()

        try:
            await asyncio.shield(self.blocking(close))
        finally:
            self._pool.shutdown(wait=False)


async def already_imported(conn: Conn, user_id: uuid.UUID, tags: list[bytes]) -> set[bytes]:
    """Which of these recording tags the user has kept from an earlier import."""
    if not tags:
        return set()
    cur = await conn.execute(
        "SELECT content_tag FROM import_media WHERE user_id = %s AND kind = 'source' AND content_tag = ANY(%s)",
        (user_id, tags),
    )
    return {bytes(row["content_tag"]) for row in await cur.fetchall()}


def content_tag(key: UserKey, sha256: str) -> bytes:
    """The keyed tag of a recording's digest (what ``import_media.content_tag`` holds)."""
    return key.tag(f"media|{sha256}")


async def copy_body(plan: MediaPlan, open_file: Callable[[], Readable]) -> AsyncIterator[bytes]:
    """A file's bytes, read a block at a time on the plan's worker."""
    f = await plan.blocking(open_file)
    try:
        while block := await plan.blocking(f.read, COPY_BLOCK):
            yield block
    finally:
        await plan.blocking(f.close)
