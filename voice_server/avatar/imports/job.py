"""One import job: a parsed export file stored, sealed, in one transaction, then turned into memories.

`run_import` is the one code path behind ``POST /v1/imports`` (via `ImportService`) and ``soma import``:

1. detect the format (unless given) and call the parser, which validates the whole file first (a malformed
   file fails here, before anything is written);
2. in **one transaction per file**, read the records a batch (`BATCH`) at a time in a worker thread (parsing
   and sealing never run on the event loop), insert each batch with one statement, and its episodes (every
   message with text, both speakers, term-hashed: episodic memory, `voice_server.avatar.memory.episodes`,
   embedded later by the indexer), and report progress (messages read, byte position / size) after every batch;
3. in the same transaction, create memories from the newly stored messages, the user's and (as theirs: "Ana
   said: …") the other people's: the rule extraction
   of `voice_server.avatar.memory.extraction`, at most `MAX_MEMORIES` candidates per file (the most important
   ones; bounded work whatever the file's size), embedded `EMBED_BATCH` at a time and reconciled with the
   existing memories like a conversation's are, with ``source='import'``;
4. mark the import ``done`` with its counts, and commit. Any failure (a parser error mid-way, a database
   error, cancellation) rolls everything of that file back and marks the import ``failed`` with the reason.

Audio, video and WhatsApp archives with media (`MEDIA_FORMATS`) first go through
`voice_server.avatar.imports.recordings_job.prepare` — validated, transcribed with progress in seconds of audio, their
recordings and keyframes sealed into a staging folder — before the same transaction stores the transcripts
as messages and, at its end, records the kept files as the user's media linked to the import.

Idempotency: each message's key is a keyed per-user tag (`UserKey.tag`) of its `ImportedMessage.fingerprint`
and its occurrence number among identical messages *with the same timestamp* (`OccurrenceKeys`); rows with
a key the user already has are not inserted (``ON CONFLICT DO NOTHING``), and only messages actually stored
can become memories. Re-importing a file, or a later export of the same chat, therefore adds only what is
new. The counter is reset whenever the timestamp changes, so memory stays constant on exports in time order;
an export without times (notes) counts over the whole file, bounded by `OCCURRENCE_MAX` distinct messages.

Memory: one batch of records, the occurrence counter and the bounded candidate heap; never the file.
Timestamps: a source's naive wall-clock time (WhatsApp) is stored as if it were UTC (the export does not
say the zone); aware times are stored as they are.
"""

from __future__ import annotations

import asyncio
import collections
import heapq
import json
import logging
import os
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from pathlib import Path
from typing import IO, Any, Literal

import numpy as np

from voice_server.avatar.importers import (
    HEAD_BYTES,
    MEDIA_FORMATS,
    Format,
    ImportedMessage,
    ImportFormatError,
    Me,
    Record,
    Skipped,
    participants,
)
from voice_server.avatar.importers import detect as detect_format
from voice_server.avatar.importers import parse as parse_file
from voice_server.avatar.imports.recordings_job import prepare
from voice_server.avatar.imports.recordings_plan import MediaPlan, MediaTools, NoSpeechModelError, already_imported
from voice_server.avatar.memory import episodes, policy
from voice_server.avatar.memory.episodes import EpisodeBatch
from voice_server.avatar.memory.extraction import Candidate, extract, extract_theirs
from voice_server.avatar.memory.ports import Embedder
from voice_server.avatar.memory.store import Conn, MemoryStore, NewMemory
from voice_server.security import fields
from voice_server.security.keys import Keyring, UserKey
from voice_server.stores.postgres import Database

log = logging.getLogger(__name__)

BATCH = 500  # records per insert statement and per progress report
# Formats where messages have several senders: `me` must name one of them, or nothing would be the user's.
MULTI_SENDER: frozenset[Format] = frozenset({"whatsapp", "telegram", "generic", "meta_messages", "whatsapp_zip"})
MAX_MEMORIES = 200  # memory candidates kept per file (the most important; ties: the earliest)
EMBED_BATCH = 64
OCCURRENCE_MAX = 200_000  # distinct messages counted under one timestamp (only exports without times get near)
Status = Literal["queued", "running", "done", "failed"]


class ImportFailed(Exception):
    """The import was rolled back; the message is what the user is told (never message text)."""


@dataclass(frozen=True, slots=True)
class Progress:
    """Where a running import is: records read so far and the byte position in a file of ``size`` bytes;
    for audio and video, seconds of audio transcribed of ``audio_total_s`` (records come after)."""

    read: int
    skipped: int
    position: int
    size: int
    audio_s: float = 0.0
    audio_total_s: float = 0.0


@dataclass(frozen=True, slots=True)
class ImportResult:
    """What one file added."""

    format: Format
    read: int
    skipped: dict[str, int]
    created: int
    memories: int
    audio_s: float = 0.0
    media: tuple[dict[str, Any], ...] = ()  # per recording (audio/video imports): see `MediaEntry`


ProgressCallback = Callable[[Progress], None]


class OccurrenceKeys:
    """The idempotency key text of each message in file order: ``fingerprint|n`` where ``n`` counts earlier
    identical messages (same fingerprint) under the same timestamp. Sans-I/O; the job tags it per user."""

    def __init__(self) -> None:
        self._at: datetime | None | object = object()
        self._seen: collections.Counter[str] = collections.Counter()

    def key(self, message: ImportedMessage) -> str:
        """The key of the next message (call once per message, in file order)."""
        if message.at != self._at or len(self._seen) >= OCCURRENCE_MAX:
            self._at = message.at
            self._seen.clear()
        fingerprint = message.fingerprint()
        n = self._seen[fingerprint]
        self._seen[fingerprint] += 1
        return f"{fingerprint}|{n}"


@dataclass(slots=True)
class Batch:
    """One batch of records, sealed and ready for one INSERT (built in a worker thread)."""

    columns: tuple[list[Any], ...]  # ids, idem keys, sources, conversations, senders, texts, ats, is_user, attachments
    # (idem key, sequence number, candidate, said, the episode of its message)
    candidates: list[tuple[bytes, int, Candidate, datetime | None, uuid.UUID]]
    episodes: EpisodeBatch = field(default_factory=EpisodeBatch)  # every message, both speakers (episodic memory)
    read: int = 0
    skipped: collections.Counter[str] = field(default_factory=collections.Counter)
    position: int = 0
    from_user: int = 0


def seal_batch(
    records: Iterator[Record], keys: OccurrenceKeys, key: UserKey, f: IO[bytes], seq: int, size: int = BATCH
) -> Batch:
    """Take up to ``size`` records from ``records`` and seal them (blocking: parsing happens here).

    ``seq`` numbers the candidates found (file order). An empty batch (no records read, nothing skipped)
    means the file is finished.
    """
    columns: tuple[list[Any], ...] = ([], [], [], [], [], [], [], [], [])
    batch = Batch(columns, [])
    for record in records:
        if isinstance(record, Skipped):
            batch.skipped[record.reason] += 1
        else:
            idem = key.tag(keys.key(record))
            message_id = uuid.uuid4()
            at = record.at.replace(tzinfo=UTC) if record.at is not None and record.at.tzinfo is None else record.at
            values = (
                message_id,
                idem,
                record.source,
                key.seal(record.conversation, fields.imported("conversation", message_id)),
                key.seal(record.sender, fields.imported("sender", message_id)),
                key.seal(record.text, fields.imported("text", message_id)),
                at,
                record.is_user,
                record.attachment,
            )
            for column, value in zip(columns, values, strict=True):
                column.append(value)
            episode_id = batch.episodes.add(
                key, text=record.text, speaker=record.sender, thread=record.conversation,
                thread_id=f"{record.source}|{record.conversation}", is_user=record.is_user,
                said_at=at if at is not None else datetime.now(UTC), message_id=message_id,
            ) if record.text.strip() else None
            batch.read += 1
            batch.from_user += record.is_user
            if episode_id is not None:
                today = record.at.date() if record.at is not None else date.today()
                # The other person's news is remembered too, as theirs ("Ana Souza said: I moved to Lisbon").
                said = extract(record.text, today) if record.is_user else extract_theirs(record.text, record.sender,
                                                                                         today)
                for found in said:
                    if isinstance(found, Candidate):  # "forget that" in an old chat deletes nothing today
                        batch.candidates.append((idem, seq, found, at, episode_id))
                        seq += 1
        if batch.read + sum(batch.skipped.values()) >= size:
            break
    batch.position = f.tell()
    return batch


_INSERT = (
    "INSERT INTO imported_messages (id, user_id, import_id, idem_key, source, conversation, sender, text, at,"
    " is_user, attachment) SELECT m.id, %s, %s, m.idem_key, m.source, m.conversation, m.sender, m.text, m.at,"
    " m.is_user, m.attachment FROM unnest(%s::uuid[], %s::bytea[], %s::text[], %s::bytea[], %s::bytea[],"
    " %s::bytea[], %s::timestamptz[], %s::boolean[], %s::text[])"
    " AS m(id, idem_key, source, conversation, sender, text, at, is_user, attachment)"
    " ON CONFLICT (user_id, idem_key) DO NOTHING RETURNING idem_key"
)


def _open_and_parse(
    open_file: Callable[[], IO[bytes]], name: str, fmt: Format | None, me: Me
) -> tuple[IO[bytes], Format, int, Iterator[Record] | None]:
    """Open, detect, and validate (the parser's first pass): blocking, run in a thread. Media formats are
    not parsed here (``None``): `media_job.prepare` validates and transcribes them."""
    f = open_file()
    try:
        head = f.read(HEAD_BYTES)
        f.seek(0, os.SEEK_END)
        size = f.tell()
        f.seek(0)
        chosen = fmt or detect_format(name, head)
        if chosen in MEDIA_FORMATS:
            return f, chosen, size, None
        return f, chosen, size, parse_file(chosen, f, me=me, path=name)
    except BaseException:
        f.close()
        raise


async def run_import(
    db: Database,
    keys: Keyring,
    embedder: Embedder | None,
    *,
    user_id: uuid.UUID,
    import_id: uuid.UUID,
    open_file: Callable[[], IO[bytes]],
    name: str,
    me: Me,
    fmt: Format | None = None,
    progress: ProgressCallback | None = None,
    media: MediaTools | None = None,
    speaker: str | None = None,
    modified: datetime | None = None,
) -> ImportResult:
    """Store one file for ``user_id`` under the existing ``imports`` row ``import_id`` (see the module doc).

    Args:
        open_file: Opens the file as a seekable binary file (called once, in a worker thread).
        name: The file's name or path (format detection, a WhatsApp chat's name, a note's title).
        me: Which participant is the user.
        fmt: The format, or ``None`` to detect it.
        embedder: Without one, no memories are created (the messages are still stored).
        progress: Called on the event loop after each batch (and each transcribed window).
        media: The speech model and media store audio/video imports need (``None``: they fail, saying so).
        speaker: Who speaks in a lone recording; ``None``: the user (see `media_job`).
        modified: The file's modification time when known, to date a recording without metadata.

    Raises:
        ImportFailed: Nothing of the file was kept; the row says ``failed`` and why.
    """
    source = _Source(open_file, name, me, fmt, media, speaker, modified)
    try:
        return await _run(db, keys, embedder, user_id, import_id, source, progress)
    except (ImportFormatError, ImportFailed, NoSpeechModelError) as exc:
        reason = str(exc)
    except asyncio.CancelledError:
        await asyncio.shield(mark_failed(db, keys, user_id, import_id, "cancelled: the server stopped"))
        raise
    except Exception as exc:
        log.exception("import failed")
        reason = f"internal error ({type(exc).__name__}); nothing was imported"
    await mark_failed(db, keys, user_id, import_id, reason)
    raise ImportFailed(reason)


async def mark_failed(db: Database, keys: Keyring, user_id: uuid.UUID, import_id: uuid.UUID, reason: str) -> None:
    """Record that an import failed and why (the reason sealed); a failure to record it is only logged."""
    try:
        async with db.pool.connection() as conn:
            key = await keys.for_user(conn, user_id)
            await conn.execute(
                "UPDATE imports SET status = 'failed', error = %s, finished_at = now(), read = 0, created = 0,"
                " memories = 0 WHERE id = %s AND user_id = %s",
                (key.seal(reason[:1000], fields.import_error(import_id)), import_id, user_id),
            )
    except Exception:
        log.warning("import: could not record the failure", exc_info=True)


@dataclass(frozen=True, slots=True)
class _Source:
    """The file a job imports and what the caller said about it (see `run_import`'s arguments)."""

    open_file: Callable[[], IO[bytes]]
    name: str
    me: Me
    fmt: Format | None
    media: MediaTools | None
    speaker: str | None
    modified: datetime | None


async def _prepare_media(
    db: Database,
    keys: Keyring,
    user_id: uuid.UUID,
    import_id: uuid.UUID,
    source: _Source,
    f: IO[bytes],
    chosen: Format,
    size: int,
    progress: ProgressCallback | None,
) -> MediaPlan:
    """Validate, transcribe and stage an audio/video file or archive before the transaction (`media_job`)."""
    if source.media is None:
        raise NoSpeechModelError("audio and video imports are not available here (no media tools)")
    async with db.pool.connection() as conn:
        key = await keys.for_user(conn, user_id)

    async def known(tags: list[bytes]) -> set[bytes]:
        async with db.pool.connection() as conn:
            return await already_imported(conn, user_id, tags)

    def audio_progress(done: float, total: float) -> None:
        if progress is not None:
            progress(Progress(0, 0, 0, size, done, total))

    return await prepare(source.media, key, known, import_id=import_id, f=f, fmt=chosen, name=source.name,
                         me=source.me, speaker=source.speaker, modified=source.modified,
                         progress=audio_progress)


async def _run(
    db: Database,
    keys: Keyring,
    embedder: Embedder | None,
    user_id: uuid.UUID,
    import_id: uuid.UUID,
    source: _Source,
    progress: ProgressCallback | None,
) -> ImportResult:
    f, chosen, size, records = await asyncio.to_thread(_open_and_parse, source.open_file, source.name, source.fmt,
                                                       source.me)
    plan: MediaPlan | None = None
    committed = False
    try:
        async with db.pool.connection() as conn:
            await conn.execute(
                "UPDATE imports SET status = 'running', format = %s, bytes_total = %s WHERE id = %s AND user_id = %s",
                (chosen, size, import_id, user_id),
            )
        if records is None:
            plan = await _prepare_media(db, keys, user_id, import_id, source, f, chosen, size, progress)
            records = plan.records()
        occurrences = OccurrenceKeys()
        # A min-heap by (importance, -seq), the weakest on top; each with the time its message was sent.
        heap: list[tuple[float, int, Candidate, datetime | None, uuid.UUID]] = []
        read, created, seq, from_user = 0, 0, 0, 0
        skipped: collections.Counter[str] = collections.Counter()
        audio_s = plan.audio_s if plan is not None else 0.0
        async with db.pool.connection() as conn, conn.transaction():
            key = await keys.for_user(conn, user_id)
            while True:
                batch = await asyncio.to_thread(seal_batch, records, occurrences, key, f, seq)
                if not batch.read and not batch.skipped:
                    break
                read += batch.read
                from_user += batch.from_user
                skipped += batch.skipped
                seq += len(batch.candidates)
                stored: set[bytes] = set()
                if batch.read:
                    cur = await conn.execute(_INSERT, (user_id, import_id, *batch.columns))
                    stored = {bytes(row["idem_key"]) for row in await cur.fetchall()}
                    created += len(stored)
                    await episodes.insert_batch(conn, user_id, batch.episodes)
                for idem, n, candidate, said_at, episode_id in batch.candidates:
                    if idem in stored:
                        item = (candidate.importance, -n, candidate, said_at, episode_id)
                        if len(heap) < MAX_MEMORIES:
                            heapq.heappush(heap, item)
                        elif item[:2] > heap[0][:2]:
                            heapq.heapreplace(heap, item)
                if progress is not None:
                    progress(Progress(read, sum(skipped.values()), batch.position, size, audio_s, audio_s))
            if read and not from_user and chosen in MULTI_SENDER:
                why = await asyncio.to_thread(_not_a_participant, source.open_file, source.name, chosen, source.me)
                raise ImportFailed(why)
            chosen_candidates = [(c, at, e) for _, _, c, at, e in sorted(heap, key=lambda item: -item[1])]  # file order
            memories = 0
            if embedder is not None and chosen_candidates:
                memories = await _remember(conn, MemoryStore(db, keys), embedder, user_id, chosen_candidates)
            report = None
            if plan is not None:
                await plan.commit(conn, import_id)
                report = key.seal(json.dumps(plan.report(), ensure_ascii=False), fields.import_report(import_id))
            await conn.execute(
                "UPDATE imports SET status = 'done', read = %s, skipped = %s, skip_reasons = %s::jsonb, created = %s,"
                " memories = %s, audio_seconds = %s, media_report = %s, error = NULL, finished_at = now()"
                " WHERE id = %s AND user_id = %s",
                (read, sum(skipped.values()), _json(skipped), created, memories, audio_s, report, import_id, user_id),
            )
        committed = True
    finally:
        if plan is not None:
            await plan.aclose(committed=committed)
        await asyncio.to_thread(f.close)
    media_report = tuple(plan.report()) if plan is not None else ()
    return ImportResult(chosen, read, dict(sorted(skipped.items())), created, memories, audio_s, media_report)


def _not_a_participant(open_file: Callable[[], IO[bytes]], name: str, fmt: Format, me: Me) -> str:
    """Why an import where `me` matched no sender fails: the names the user could have meant (blocking)."""
    with open_file() as f:
        people = participants(fmt, f, path=name)
    listed = ", ".join(f"{who} ({n})" for who, n in people[:20])
    return f"no message in this file is from {', '.join(sorted(me.names)) or 'you'}; its participants are: {listed}"


def worker_id(data_dir: Path) -> str:
    """This data dir's worker id (created once): servers sharing one database each fail only their own
    unfinished imports at start-up. The data dir lock makes one process at a time its server or CLI owner."""
    path = data_dir / "worker-id"
    try:
        return path.read_text(encoding="ascii").strip()
    except FileNotFoundError:
        value = uuid.uuid4().hex
        path.write_text(value, encoding="ascii")
        return value


def _json(counts: collections.Counter[str]) -> str:
    return json.dumps(dict(sorted(counts.items())))


async def _remember(
    conn: Conn,
    store: MemoryStore,
    embedder: Embedder,
    user_id: uuid.UUID,
    candidates: Sequence[tuple[Candidate, datetime | None, uuid.UUID]],
) -> int:
    """Embed and reconcile the file's memory candidates (each with the time its message was sent, which becomes
    the memory's ``said_at``, and the episode of that message, its provenance) inside the import's
    transaction; the number added."""
    unique: dict[str, tuple[Candidate, datetime | None, uuid.UUID]] = {}
    for candidate, said_at, episode_id in candidates:
        unique.setdefault(candidate.text.casefold(), (candidate, said_at, episode_id))
    chosen = list(unique.values())
    # The same lock as the memory service's per-turn learning: one writer of a user's memories at a time.
    await conn.execute("SELECT pg_advisory_xact_lock(hashtextextended(%s, 0))", (str(user_id),))
    added = 0
    for start in range(0, len(chosen), EMBED_BATCH):
        part = chosen[start : start + EMBED_BATCH]
        vectors = np.asarray(await embedder.aembed([c.text for c, _, _ in part]), dtype=np.float32)
        for (candidate, said_at, episode_id), vector in zip(part, vectors, strict=True):
            matches = await store.similar(conn, user_id, vector, limit=5, subject=candidate.subject)
            decision = policy.reconcile(candidate, matches, said_at)
            if decision.action == "none":
                continue
            memory = NewMemory(candidate.text, candidate.kind, candidate.importance, candidate.subject,
                               candidate.event_date, "import", said_at=said_at, episode_id=episode_id)
            row = await store.insert(conn, user_id, memory, vector)
            if decision.action == "history":  # an older statement than what is known: kept as its history
                await store.supersede(conn, user_id, row["id"], decision.targets[0])
            else:
                for old in decision.targets:
                    await store.supersede(conn, user_id, old, row["id"])
            added += 1
    return added


async def create_import(
    conn: Conn,
    keys: Keyring,
    user_id: uuid.UUID,
    name: str,
    fmt: Format | None,
    size: int = 0,
    *,
    worker: str,
    import_id: uuid.UUID | None = None,
) -> uuid.UUID:
    """Insert a ``queued`` import row (its name sealed) and return its id.

    ``worker`` is `worker_id` of the data dir running it: a restart there fails what it left unfinished.
    """
    key = await keys.for_user(conn, user_id)
    import_id = import_id or uuid.uuid4()
    await conn.execute(
        "INSERT INTO imports (id, user_id, format, name, bytes_total, worker) VALUES (%s, %s, %s, %s, %s, %s)",
        (import_id, user_id, fmt, key.seal(name, fields.import_name(import_id)), size, worker),
    )
    return import_id

