"""Audio, video and WhatsApp-with-media imports: validated, transcribed and their files staged before the
import job stores the transcripts in its one transaction like any other messages.

`prepare` is called by `import_job.run_import` for `MEDIA_FORMATS`, before the transaction opens:

1. the validating pass (`recordings.probe` / `whatsapp_zip.open_chat_zip` plus a probe of every voice note the
   chat names): a file that is not audio/video, damaged or cut short fails here and nothing is written;
   inside an archive a damaged or missing voice note is only reported (the chat is still imported);
2. recordings this user already imported (a keyed tag of their SHA-256 in ``import_media``) are not
   transcribed again;
3. the audio is decoded in windows of at most 28 s and each window is transcribed with the server's speech
   model on its own worker (`WhisperAsr.atranscribe`: never on the event loop, one window at a time,
   queued behind live calls' decodes like any other), reporting progress (seconds done / total) per window;
4. every transcribed recording, and a video's keyframes, are sealed into a staging folder of the media
   store.

The returned `MediaPlan` yields the records to store (`records`: the transcripts, or the chat with each
voice note's transcript right after the line that sent it) and, inside the import's transaction,
`commit` records the staged files as the user's media, linked to the import (``import_media``), and moves
them into place. `aclose` removes whatever was not committed. Blocking work (decoding, hashing, reading the
archive) runs on the plan's own single worker thread, so PyAV never sees two threads at once, even when
the job is cancelled mid-way.

A voice note up to `ONE_MESSAGE_S` long becomes one message; a longer recording one message per window,
each timed at the recording's time plus its offset. Transcripts carry ``attachment`` = ``voice`` (Opus voice
notes), ``audio`` or ``video``, so style statistics can tell spoken from written words.
"""

from __future__ import annotations

import asyncio
import functools
import uuid
import zipfile
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import PurePath
from typing import IO, Literal

from voice_server.avatar.importers import (
    Format,
    ImportedMessage,
    ImportFormatError,
    Me,
    Record,
    Skipped,
    recordings,
    whatsapp,
)
from voice_server.avatar.importers.keyframes import keyframes
from voice_server.avatar.importers.records import Attachment
from voice_server.avatar.importers.whatsapp_zip import ChatZip, open_chat_zip
from voice_server.avatar.imports.recordings_plan import (
    AudioProgress,
    KnownTags,
    MediaEntry,
    MediaPlan,
    MediaTools,
    NoSpeechModelError,
    Piece,
    Readable,
    Transcriber,
    content_tag,
    copy_body,
)
from voice_server.security.keys import UserKey

ONE_MESSAGE_S = 120.0
MAX_ARCHIVE_AUDIO_S = 24 * 3600.0  # voice notes transcribed per archive
MAX_LOOP_WORDS = 8  # longest phrase `collapse_loops` looks for


def collapse_loops(text: str) -> str:
    """Keep one copy of a phrase said over and over in a row: a decode stuck in a loop ("thank you thank you
    thank you thank you …"). One or two words count from four repeats, longer phrases from three.

    faster-whisper already re-decodes a window whose text compresses too well (its compression-ratio
    fallback); this catches what is left. It is deliberately milder than `models.asr.drop_repetition`, which
    is made for short live utterances and would cut real speech that repeats a phrase once in a long window.
    """
    words = text.split()
    keys = [w.strip(".,!?;:").casefold() for w in words]
    out: list[str] = []
    i = 0
    while i < len(words):
        looped = 0  # words a loop starting here takes up
        for size in range(1, min(MAX_LOOP_WORDS, len(words) - i) + 1):
            block = keys[i : i + size]
            repeats = 1
            while keys[i + repeats * size : i + (repeats + 1) * size] == block:
                repeats += 1
            if repeats >= (4 if size < 3 else 3):
                out.extend(words[i : i + size])
                looped = repeats * size
                break
        if looped:
            i += looped
        else:
            out.append(words[i])
            i += 1
    return " ".join(out)


async def transcribe(
    plan: MediaPlan, asr: Transcriber, windows: Iterator[recordings.Window], done: Callable[[float], None]
) -> list[Piece]:
    """Transcribe ``windows`` (decoded on the plan's worker) one at a time; ``done(seconds)`` after each."""
    pieces: list[Piece] = []
    language: str | None = None
    try:
        while (window := await plan.blocking(next, windows, None)) is not None:
            if not window.silent:
                result = await asr.atranscribe(window.samples, language=language)
                language = language or result.language  # the first window's language holds for the recording
                text = collapse_loops(result.text.strip())
                if text:
                    pieces.append(Piece(window.start_s, text))
            done(window.seconds)
    finally:
        close = getattr(windows, "close", None)
        if close is not None:
            await asyncio.shield(plan.blocking(close))
    return pieces


def transcript_messages(
    pieces: list[Piece],
    *,
    seconds: float,
    sha256: str,
    source: Literal["audio", "video", "whatsapp"],
    conversation: str,
    sender: str,
    at: datetime | None,
    is_user: bool,
    attachment: Attachment,
    where: int | None = None,
) -> list[ImportedMessage]:
    """A recording's transcript as messages: one for a voice note up to `ONE_MESSAGE_S` (``seconds`` long),
    else one per window, each at ``at`` plus its offset.

    ``where`` is the chat line a voice note was sent on (``None``: each message's part number).
    """
    if not pieces:
        return []
    groups = [pieces] if seconds <= ONE_MESSAGE_S else [[p] for p in pieces]
    out = []
    for part, group in enumerate(groups):
        offset = group[0].offset_s
        when = at + timedelta(seconds=int(offset)) if at is not None and len(groups) > 1 else at
        text = " ".join(p.text for p in group)
        out.append(ImportedMessage(source, conversation, sender, when, text, is_user, attachment,
                                   part if where is None else where, transcribed_from=f"{sha256}:{part}"))
    return out


def attachment_of(name: str, kind: recordings.MediaKind) -> Attachment:
    """``voice`` for an Opus/Ogg voice note, ``audio`` for other sound, ``video`` for video."""
    if kind == "video":
        return "video"
    return "voice" if PurePath(name).suffix.lower() in (".opus", ".ogg", ".oga") else "audio"


async def prepare(
    tools: MediaTools,
    key: UserKey,
    existing: KnownTags,
    *,
    import_id: uuid.UUID,
    f: IO[bytes],
    fmt: Format,
    name: str,
    me: Me,
    speaker: str | None,
    modified: datetime | None,
    progress: AudioProgress,
) -> MediaPlan:
    """Validate, transcribe and stage one audio/video file or WhatsApp archive (see the module doc).

    Args:
        existing: Awaitable lookup of recording tags already imported (`already_imported` on a connection).
        f: The file, seekable; the caller closes it after the plan.
        speaker: Who speaks in a lone recording (default: the user, sender ``me``).
        modified: The file's modification time, when known (the CLI), to date a recording.
        progress: Called on the event loop with (seconds transcribed, seconds in all).

    Raises:
        ImportFormatError: The file (or the archive's chat) is damaged or not what it claims.
        NoSpeechModelError: No speech model is loaded.
    """
    plan = MediaPlan(tools.store, key, import_id, tools.max_bytes)
    try:
        if fmt == "whatsapp_zip":
            await _prepare_archive(plan, tools, key, existing, f=f, name=name, me=me, progress=progress)
        else:
            await _prepare_recording(plan, tools, key, existing, f=f, fmt=fmt, name=name, me=me, speaker=speaker,
                                     modified=modified, progress=progress)
    except BaseException:
        await plan.aclose(committed=False)
        raise
    return plan


def _need(tools: MediaTools) -> Transcriber:
    if tools.asr is None:
        raise NoSpeechModelError(
            "audio and video imports need the speech model, and none is loaded here (SOMA_LOAD_MODELS=false or "
            "the models are not provisioned)"
        )
    return tools.asr


async def _prepare_recording(
    plan: MediaPlan,
    tools: MediaTools,
    key: UserKey,
    existing: KnownTags,
    *,
    f: IO[bytes],
    fmt: Format,
    name: str,
    me: Me,
    speaker: str | None,
    modified: datetime | None,
    progress: AudioProgress,
) -> None:
    kind: recordings.MediaKind = "video" if fmt == "video" else "audio"
    base = PurePath(name).name
    info = await plan.blocking(recordings.probe, f, base, kind)
    entry = MediaEntry(base, "voice" if attachment_of(base, info.kind) == "voice" else info.kind,
                       seconds=info.seconds)
    plan.entries.append(entry)
    tag = content_tag(key, info.sha256)
    if tag in await existing([tag]):
        entry.status = "already_imported"
        plan.set_records(lambda: iter([Skipped(0, "media_already_imported")]))
        return
    pieces: list[Piece] = []
    if info.has_audio:
        asr = _need(tools)
        done = 0.0

        def step(seconds: float) -> None:
            nonlocal done
            done += seconds
            progress(min(done, info.seconds), info.seconds)

        progress(0.0, info.seconds)
        windows = await plan.blocking(recordings.speech_windows, f)
        pieces = await transcribe(plan, asr, windows, step)
        plan.audio_s = info.seconds
    sender = speaker or "me"
    by_user = speaker is None or me.matches(speaker)
    messages = transcript_messages(
        pieces, seconds=info.seconds, sha256=info.sha256, source=info.kind, conversation=base, sender=sender,
        at=recordings.recorded_at(base, info.created, modified), is_user=by_user,
        attachment=attachment_of(base, info.kind),
    )
    entry.messages = len(messages)
    entry.status = "transcribed" if messages else "no_speech"

    def reopen() -> Readable:
        f.seek(0)
        return _Unclosable(f)

    source = await plan.stage(copy_body(plan, reopen), name=base, content_type=info.content_type, kind="source",
                              tag=tag, seconds=info.seconds, by_user=by_user)
    entry.media_id = source.media_id
    if info.kind == "video":
        frames = await plan.blocking(keyframes, f)
        stem = PurePath(base).stem
        for frame in frames:
            item = await plan.stage(_one(frame.jpeg), name=f"{stem} {frame.offset_s:.1f}s.jpg",
                                    content_type="image/jpeg", kind="keyframe", source_id=source.media_id,
                                    offset_s=round(frame.offset_s, 3))
            entry.keyframes.append(item.media_id)
    records: list[Record] = list(messages) if messages else [Skipped(0, "no_speech")]
    plan.set_records(lambda: iter(records))


async def _one(data: bytes) -> AsyncIterator[bytes]:
    yield data


class _Unclosable:
    """``f`` lent out for one read-through: closing it does not close the job's file."""

    def __init__(self, f: IO[bytes]) -> None:
        self._f = f

    def read(self, n: int = -1, /) -> bytes:
        return self._f.read(n)

    def close(self) -> None:
        pass


@dataclass(slots=True)
class _Note:
    """A voice note a chat line sends, and what became of it."""

    info: zipfile.ZipInfo
    entry: MediaEntry
    sha256: str = ""
    pieces: list[Piece] = field(default_factory=list)
    tag: bytes = b""
    by_user: bool = False  # the user sent it: their own voice (`voice_server.avatar.voice` builds on these)


async def _prepare_archive(
    plan: MediaPlan,
    tools: MediaTools,
    key: UserKey,
    existing: KnownTags,
    *,
    f: IO[bytes],
    name: str,
    me: Me,
    progress: AudioProgress,
) -> None:
    chat = await plan.blocking(open_chat_zip, f, name)
    plan.on_close(chat.close)
    chat_file = await plan.blocking(chat.open_member, chat.chat)
    plan.on_close(chat_file.close)
    references = await plan.blocking(_voice_references, chat, chat_file, me)
    notes: dict[str, _Note] = {}
    missing: set[str] = set()
    for attached, info, by_user in references:
        if info is None:
            missing.add(attached)
        elif info.filename not in notes:
            base = PurePath(info.filename).name
            notes[info.filename] = _Note(info, MediaEntry(base, "voice" if attachment_of(base, "audio") == "voice"
                                                          else "audio"), by_user=by_user)
    for note in notes.values():
        try:
            found = await plan.blocking(_probe_member, chat, note.info)
        except ImportFormatError as exc:
            note.entry.status, note.entry.error = "damaged", str(exc)
            continue
        note.sha256, note.entry.seconds, note.tag = found.sha256, found.seconds, content_tag(key, found.sha256)
    plan.entries.extend(MediaEntry(PurePath(m).name, "voice", status="missing") for m in sorted(missing))
    probed = [n for n in notes.values() if n.entry.status != "damaged"]
    for tag in await existing([n.tag for n in probed]):
        for note in probed:
            if note.tag == tag:
                note.entry.status = "already_imported"
    todo = [n for n in probed if n.entry.status == "transcribed"]
    total = sum(n.entry.seconds for n in todo)
    if total > MAX_ARCHIVE_AUDIO_S:
        raise ImportFormatError(f"the archive's voice notes last {recordings.seconds_label(total)}; the limit is "
                                f"{recordings.seconds_label(MAX_ARCHIVE_AUDIO_S)} per import: split the chat")
    if todo:
        asr = _need(tools)
        done = 0.0

        def step(seconds: float) -> None:
            nonlocal done
            done += seconds
            progress(min(done, total), total)

        progress(0.0, total)
        for note in todo:
            member = await plan.blocking(chat.open_member, note.info)
            try:
                windows = await plan.blocking(recordings.speech_windows, member)
                note.pieces = await transcribe(plan, asr, windows, step)
            except ImportFormatError as exc:  # probed fine, failed to decode later: this note only
                note.entry.status, note.entry.error = "damaged", str(exc)
                continue
            finally:
                await plan.blocking(member.close)
            note.entry.status = "transcribed" if note.pieces else "no_speech"
            source = await plan.stage(copy_body(plan, functools.partial(chat.open_member, note.info)),
                                      name=note.entry.name, content_type=_zip_content_type(note.entry.name),
                                      kind="source", tag=note.tag, seconds=note.entry.seconds,
                                      by_user=note.by_user)
            note.entry.media_id = source.media_id
        plan.audio_s = total
    plan.entries.extend(n.entry for n in notes.values())
    plan.set_records(lambda: _archive_records(chat, chat_file, me, notes))


def _zip_content_type(name: str) -> str:
    suffix = PurePath(name).suffix.lower()
    return {".opus": "audio/ogg", ".ogg": "audio/ogg", ".m4a": "audio/mp4", ".mp3": "audio/mpeg",
            ".aac": "audio/aac", ".wav": "audio/wav", ".amr": "audio/amr", ".flac": "audio/flac"}.get(
        suffix, "application/octet-stream")


def _voice_references(
    chat: ChatZip, chat_file: IO[bytes], me: Me
) -> list[tuple[str, zipfile.ZipInfo | None, bool]]:
    """Every (attached name, archive entry or ``None``, sent by the user) of the voice notes the chat sends
    (validates it)."""
    found: list[tuple[str, zipfile.ZipInfo | None, bool]] = []
    for record in whatsapp.parse(chat_file, me=me, conversation=chat.conversation):
        if isinstance(record, ImportedMessage) and record.attachment in ("voice", "audio") and record.attachment_name:
            found.append((record.attachment_name, chat.attachment(record), record.is_user))
    return found


def _probe_member(chat: ChatZip, info: zipfile.ZipInfo) -> recordings.MediaInfo:
    with chat.open_member(info) as member:
        return recordings.probe(member, PurePath(info.filename).name, "audio")


def _archive_records(chat: ChatZip, chat_file: IO[bytes], me: Me, notes: dict[str, _Note]) -> Iterator[Record]:
    """The chat in file order, each voice note's transcript right after the line that sent it."""
    for record in whatsapp.parse(chat_file, me=me, conversation=chat.conversation):
        yield record
        if not isinstance(record, ImportedMessage) or not record.attachment_name:
            continue
        info = chat.attachment(record)
        if info is None:
            if record.attachment in ("voice", "audio"):
                yield Skipped(record.where, "media_missing")
            continue
        note = notes[info.filename]
        match note.entry.status:
            case "damaged":
                yield Skipped(record.where, "media_damaged")
            case "already_imported":
                yield Skipped(record.where, "media_already_imported")
            case "no_speech":
                yield Skipped(record.where, "no_speech")
            case _:
                messages = transcript_messages(
                    note.pieces, seconds=note.entry.seconds, sha256=note.sha256, source="whatsapp",
                    conversation=record.conversation, sender=record.sender, at=record.at, is_user=record.is_user,
                    attachment=record.attachment or "voice", where=record.where,
                )
                note.entry.messages = len(messages)
                yield from messages
