"""Audio and video files as speech to import: sniffing, the validating pass, decoding, recording times.

Sans-database like the other importers: it reads the one (seekable, binary) file it is given with PyAV
(FFmpeg) and never touches a model. The import job (`voice_server.avatar.imports.recordings_job`) transcribes what
`speech_windows` yields.

1. `sniff` says from the first bytes (and, for ambiguous containers, the name) whether a file is audio or
   video; `probe` is the validating pass: it decodes the whole audio track once, in constant memory, and
   raises `ImportFormatError` for anything that is not audio/video, is damaged or is cut short (decoded
   length well short of the length the container declares, an Ogg stream ending inside a page, a WAV file
   shorter than its header says). Nothing is transcribed or written for a file that fails here.
2. `speech_windows` decodes the audio track again, resampled to 16 kHz mono float32, and cuts it with
   `WindowCutter` into windows of at most `MAX_WINDOW_S` (Whisper reads 30 s), each cut at the quietest
   50 ms near its end so that no word is split between two windows. Memory: one window.
3. `recorded_at` dates a recording: the container's ``creation_time``, else a date in the file name
   (WhatsApp ``PTT-20240312-WA0004.opus``, ``00000012-AUDIO-2024-03-12-10-01-02.opus``, recorder apps'
   ``Recording_20240312_100102.m4a``), else the file's modification time when there is one.
"""

from __future__ import annotations

import codecs
import hashlib
import math
import re
import struct
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import PurePath
from typing import IO, Literal

import av
import numpy as np
import numpy.typing as npt
from av.audio.stream import AudioStream
from av.container import InputContainer
from av.video.stream import VideoStream

from voice_server.avatar.importers.records import ImportFormatError

MediaKind = Literal["audio", "video"]
SAMPLE_RATE = 16_000
# Whisper reads 30 s at once, and faster-whisper pads every window to that, so one window costs about the
# same whatever its length (~1.5-1.8 s with Whisper base on 2 cores): the longest windows are the cheapest.
# On two minutes of espeak-ng speech, 28 / 20 / 14 s windows: RTF 0.063 / 0.087 / 0.137, word recall
# 0.945 / 0.949 / 0.907. A little under 30 s keeps a window's last word inside it.
MAX_WINDOW_S = 28.0
CUT_SEARCH_S = 6.0  # where a window may end: the quietest frame of its last seconds
FRAME_S = 0.05
SILENCE_DBFS = -50.0  # a window this quiet throughout is not sent to the speech model
MAX_DURATION_S = 6 * 3600.0  # one file's audio; longer recordings are refused (split them)
TRUNCATION_TOLERANCE_S = 0.5  # decoded audio may fall this much (or 2 %) short of the declared length

AUDIO_SUFFIXES = frozenset({".ogg", ".oga", ".opus", ".m4a", ".mp3", ".wav", ".aac", ".flac", ".amr", ".weba",
                            ".mka"})
VIDEO_SUFFIXES = frozenset({".mp4", ".mov", ".webm", ".mkv", ".m4v", ".3gp"})
_M4A_BRANDS = frozenset({b"M4A ", b"M4B ", b"M4P ", b"F4A "})
_MP3_SYNC = frozenset({0xFB, 0xFA, 0xF3, 0xF2, 0xE3, 0xE2, 0xF1, 0xF9, 0xF0, 0xF8})  # MPEG audio / ADTS
_QUICKTIME_ATOMS = frozenset({b"moov", b"mdat", b"wide", b"free", b"skip"})
_EBML = b"\x1a\x45\xdf\xa3"


def sniff(name: str | PurePath, head: bytes) -> MediaKind | None:
    """``"audio"`` or ``"video"`` when ``head`` (the file's first bytes) starts like a media container.

    Content decides; the name only says whether an MP4/QuickTime or Matroska/WebM file (which can hold
    either) is a sound recording (``.m4a``, ``.weba``…). ``None`` for anything else, including text.
    """
    suffix = PurePath(name).suffix.lower()
    if head.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE, codecs.BOM_UTF8)):
        return None
    if head.startswith((b"OggS", b"ID3", b"fLaC", b"#!AMR")) or (head[:4] == b"RIFF" and head[8:12] == b"WAVE"):
        return "audio"
    if len(head) >= 2 and head[0] == 0xFF and head[1] in _MP3_SYNC:
        return "audio"
    if head[4:8] == b"ftyp":
        return "audio" if head[8:12] in _M4A_BRANDS or suffix in AUDIO_SUFFIXES else "video"
    if head[4:8] in _QUICKTIME_ATOMS and suffix in VIDEO_SUFFIXES | AUDIO_SUFFIXES:
        return "audio" if suffix in AUDIO_SUFFIXES else "video"
    if head.startswith(_EBML):
        return "audio" if suffix in AUDIO_SUFFIXES else "video"
    return None


def looks_like_media(name: str | PurePath) -> bool:
    """Whether the name has an audio or video suffix (to word the error for a file that is not)."""
    return PurePath(name).suffix.lower() in AUDIO_SUFFIXES | VIDEO_SUFFIXES


@dataclass(frozen=True, slots=True)
class MediaInfo:
    """What the validating pass found in one file.

    Attributes:
        kind: audio, or video (a video stream that is not just cover art).
        container: FFmpeg's name for the container (``ogg``, ``mov,mp4,m4a,3gp,3g2,mj2``…).
        content_type: the MIME type the file is kept under in the media store.
        seconds: decoded audio length (0 without an audio track).
        has_audio: whether there is an audio track at all.
        created: the container's creation time (aware), when it states a plausible one.
        sha256: hex digest of the file's bytes: the recording's identity for idempotent imports.
        size: bytes.
    """

    kind: MediaKind
    container: str
    content_type: str
    seconds: float
    has_audio: bool
    created: datetime | None
    sha256: str
    size: int


def probe(f: IO[bytes], name: str = "", kind: MediaKind | None = None) -> MediaInfo:
    """The validating pass: hash the file, open it, decode its whole audio track (constant memory).

    Args:
        f: the file, binary and seekable; left open.
        name: its name (the content type of an ambiguous container, error messages).
        kind: what detection said; a "video" without a picture stream is treated as audio.

    Raises:
        ImportFormatError: not audio/video, no audio where audio is the point, damaged, cut short, or
            longer than `MAX_DURATION_S`. The message says which, in words a user can act on.
    """
    sha, size = _digest(f)
    what = PurePath(name).name or "the file"
    if size == 0:
        raise ImportFormatError(f"{what} is empty")
    f.seek(0)
    try:
        container = av.open(f, mode="r")
    except (av.FFmpegError, ValueError, IndexError) as exc:
        raise ImportFormatError(f"{what} is not a readable audio or video file ({_reason(exc)})") from None
    with container:
        format_name = container.format.name
        has_video = any(not _is_cover_art(s) for s in container.streams.video)
        found: MediaKind = "video" if has_video and kind != "audio" else "audio"
        audio = container.streams.audio[0] if container.streams.audio else None
        if audio is None and found == "audio":
            raise ImportFormatError(f"{what} holds no audio track")
        created = _creation_time(container.metadata) or (_creation_time(audio.metadata) if audio else None)
        seconds = 0.0
        if audio is not None:
            declared = _declared_seconds(audio, container)
            if declared is not None and declared > MAX_DURATION_S:
                raise ImportFormatError(f"{what} lasts {declared / 3600:.1f} h; the limit is "
                                        f"{MAX_DURATION_S / 3600:.0f} h per file: split it")
            seconds = _decode_length(container, audio, what)
            if declared is not None and seconds < declared - max(TRUNCATION_TOLERANCE_S, 0.02 * declared):
                raise ImportFormatError(f"{what} is cut short: {seconds:.1f} s of audio decode, the file "
                                        f"declares {declared:.1f} s (an incomplete copy?)")
    _check_complete(f, format_name, size, what)
    return MediaInfo(found, format_name, _content_type(format_name, found, name), seconds, audio is not None,
                     created, sha, size)


def _digest(f: IO[bytes]) -> tuple[str, int]:
    f.seek(0)
    h = hashlib.sha256()
    size = 0
    while block := f.read(1 << 20):
        h.update(block)
        size += len(block)
    return h.hexdigest(), size


def _reason(exc: BaseException) -> str:
    text = str(getattr(exc, "strerror", None) or exc).strip()
    return text.splitlines()[0][:120] if text else type(exc).__name__


def _is_cover_art(stream: VideoStream) -> bool:
    """An MP3/M4A's album picture is a one-frame "video" stream flagged as an attached picture."""
    return bool(stream.disposition & av.stream.Disposition.attached_pic)


def _declared_seconds(stream: AudioStream, container: InputContainer) -> float | None:
    if stream.duration is not None and stream.time_base is not None and stream.duration > 0:
        return float(stream.duration * stream.time_base)
    if container.duration is not None and container.duration > 0:
        return container.duration / 1_000_000  # AV_TIME_BASE
    return None


def _decode_length(container: InputContainer, stream: AudioStream, what: str) -> float:
    """Seconds of audio that really decode; a decoding error anywhere is the file's error."""
    samples = 0.0
    try:
        for packet in container.demux(stream):
            for frame in packet.decode():
                samples += frame.samples / (frame.sample_rate or SAMPLE_RATE)
                if samples > MAX_DURATION_S:
                    raise ImportFormatError(f"{what} lasts over {MAX_DURATION_S / 3600:.0f} h: split it")
    except ImportFormatError:
        raise
    except (av.FFmpegError, ValueError, IndexError) as exc:  # FFmpeg's errors are ValueErrors and OSErrors
        raise ImportFormatError(f"{what} is damaged after {samples:.1f} s of audio ({_reason(exc)})") from None
    return samples


def _check_complete(f: IO[bytes], format_name: str, size: int, what: str) -> None:
    """Catch the cuts FFmpeg decodes quietly: an Ogg file ending inside a page, a short WAV."""
    if format_name == "ogg":
        f.seek(max(0, size - 65_536))
        tail = f.read()
        start = tail.rfind(b"OggS\x00")  # capture pattern and version 0: a page header, not payload bytes
        if start < 0 or len(tail) - start < 27:
            raise ImportFormatError(f"{what} is cut short: its last Ogg page is incomplete")
        segments = tail[start + 26]
        table = tail[start + 27 : start + 27 + segments]
        if len(table) < segments or len(tail) - start < 27 + segments + sum(table):
            raise ImportFormatError(f"{what} is cut short: its last Ogg page is incomplete")
    elif format_name == "wav":
        f.seek(4)
        (riff,) = struct.unpack("<I", f.read(4))
        if riff != 0xFFFFFFFF and riff + 8 > size:  # 0xFFFFFFFF: a stream writer that never knew the size
            raise ImportFormatError(f"{what} is cut short: {size:,} bytes of the {riff + 8:,} its header declares")


def _creation_time(metadata: dict[str, str]) -> datetime | None:
    raw = metadata.get("creation_time") or metadata.get("date") or metadata.get("DATE") or ""
    try:
        at = datetime.fromisoformat(raw.strip().replace("Z", "+00:00"))
    except ValueError:
        return None
    if at.year < 1990:  # 1904/1970: a device that wrote its epoch, not a date
        return None
    return at if at.tzinfo is not None else at.replace(tzinfo=UTC)


_TYPES = {"ogg": "ogg", "mp3": "mpeg", "wav": "wav", "flac": "flac", "aac": "aac", "amr": "amr"}


def _content_type(format_name: str, kind: MediaKind, name: str) -> str:
    first = format_name.split(",")[0]
    if first in _TYPES:
        return f"audio/{_TYPES[first]}"
    if first == "mov":
        if kind == "audio":
            return "audio/mp4"
        return "video/quicktime" if PurePath(name).suffix.lower() == ".mov" else "video/mp4"
    if first == "matroska":
        if PurePath(name).suffix.lower() in (".webm", ".weba"):
            return f"{kind}/webm"
        return "audio/x-matroska" if kind == "audio" else "video/x-matroska"
    return "application/octet-stream"


# ----------------------------------------------------------------------------------------------- decoding


@dataclass(frozen=True, slots=True)
class Window:
    """A stretch of audio to transcribe in one go: 16 kHz mono float32, ``start_s`` into the recording."""

    start_s: float
    samples: npt.NDArray[np.float32]

    @property
    def seconds(self) -> float:
        return len(self.samples) / SAMPLE_RATE

    @property
    def silent(self) -> bool:
        """Whether it is too quiet throughout to hold speech (`SILENCE_DBFS`)."""
        if not len(self.samples):
            return True
        rms = float(np.sqrt(np.mean(np.square(self.samples, dtype=np.float64))))
        return rms <= 10 ** (SILENCE_DBFS / 20)


class WindowCutter:
    """Cuts a stream of 16 kHz samples into `Window`\\ s of at most ``max_s`` seconds (sans-I/O).

    A window ends at the quietest `FRAME_S` frame of its last ``search_s`` seconds (a pause between words
    or sentences), and the next window starts there, so a word is never split between two transcriptions.
    Memory: one window plus the block being pushed.
    """

    def __init__(self, max_s: float = MAX_WINDOW_S, search_s: float = CUT_SEARCH_S) -> None:
        self._max = int(max_s * SAMPLE_RATE)
        self._search = int(min(search_s, max_s / 2) * SAMPLE_RATE)
        self._frame = int(FRAME_S * SAMPLE_RATE)
        self._blocks: list[npt.NDArray[np.float32]] = []
        self._held = 0
        self._start = 0  # samples before the held ones

    def push(self, samples: npt.NDArray[np.float32]) -> list[Window]:
        """Add samples; return the windows they complete (usually none)."""
        out: list[Window] = []
        self._blocks.append(np.asarray(samples, dtype=np.float32).reshape(-1))
        self._held += len(self._blocks[-1])
        while self._held >= self._max:
            held = np.concatenate(self._blocks)
            cut = self._cut_point(held[: self._max])
            out.append(Window(self._start / SAMPLE_RATE, held[:cut].copy()))
            self._start += cut
            self._blocks = [held[cut:]]
            self._held = len(held) - cut
        return out

    def finish(self) -> list[Window]:
        """The last window (if any samples are left); the cutter is then empty."""
        if not self._held:
            return []
        held = np.concatenate(self._blocks)
        window = Window(self._start / SAMPLE_RATE, held)
        self._start += len(held)
        self._blocks, self._held = [], 0
        return [window]

    def _cut_point(self, window: npt.NDArray[np.float32]) -> int:
        tail = window[len(window) - self._search :]
        frames = len(tail) // self._frame
        energy = np.square(tail[: frames * self._frame].reshape(frames, self._frame), dtype=np.float64).sum(axis=1)
        # The latest of the quietest frames keeps windows long (fewer, fuller transcriptions).
        quietest = frames - 1 - int(np.argmin(energy[::-1]))
        return len(window) - self._search + quietest * self._frame + self._frame // 2


def speech_windows(f: IO[bytes], *, max_s: float = MAX_WINDOW_S) -> Iterator[Window]:
    """Decode the audio track of a file `probe` accepted into 16 kHz mono windows (blocking; lazy).

    Raises:
        ImportFormatError: the file fails to decode now although it probed fine (changed under us).
    """
    f.seek(0)
    cutter = WindowCutter(max_s)
    try:
        with av.open(f, mode="r") as container:
            stream = container.streams.audio[0]
            resampler = av.AudioResampler(format="flt", layout="mono", rate=SAMPLE_RATE)
            for packet in container.demux(stream):
                for frame in packet.decode():
                    for out in resampler.resample(frame):
                        yield from cutter.push(_mono(out))
            for out in resampler.resample(None):
                yield from cutter.push(_mono(out))
    except (av.FFmpegError, ValueError, IndexError) as exc:
        raise ImportFormatError(f"the audio could not be decoded ({_reason(exc)})") from None
    yield from cutter.finish()


def _mono(frame: av.AudioFrame) -> npt.NDArray[np.float32]:
    return np.asarray(frame.to_ndarray(), dtype=np.float32).reshape(-1)  # "flt" mono: already float32, no copy


# ------------------------------------------------------------------------------------------------- dates

_IOS_MEDIA = re.compile(r"-(?:AUDIO|VIDEO|PHOTO)-(\d{4})-(\d{2})-(\d{2})-(\d{2})-(\d{2})-(\d{2})")
_DATE_TIME = re.compile(r"(?<!\d)((?:19|20)\d{2})[-_.]?(\d{2})[-_.]?(\d{2})[ _T-]?(\d{2})[-_.:h]?(\d{2})[-_.:m]?(\d{2})"
                        r"(?!\d)")
_DATE = re.compile(r"(?<!\d)((?:19|20)\d{2})[-_.]?(\d{2})[-_.]?(\d{2})(?!\d)")


def date_from_name(name: str) -> tuple[datetime, bool] | None:
    """The recording time a file name states, naive local time, and whether it includes the time of day.

    ``00000012-AUDIO-2024-03-12-10-01-02.opus`` → 2024-03-12 10:01:02 (WhatsApp iOS), ``PTT-20240312-WA0004
    .opus`` → 2024-03-12 (WhatsApp Android: the date only), ``Recording_20240312_100102.m4a``,
    ``2024-03-12 10.01.02.m4a`` → with the time. Impossible dates are ignored.
    """
    stem = PurePath(name).name
    for rx, timed in ((_IOS_MEDIA, True), (_DATE_TIME, True), (_DATE, False)):
        for m in rx.finditer(stem):
            parts = [int(g) for g in m.groups()]
            try:
                return datetime(*parts), timed  # type: ignore[arg-type]  # 3 or 6 ints, matched above
            except ValueError:
                continue
    return None


def recorded_at(name: str, created: datetime | None, modified: datetime | None) -> datetime | None:
    """When a recording was made: container metadata, else the name (with its time of day; a date alone
    takes the modification time's clock on that same day), else the modification time."""
    if created is not None:
        return created
    named = date_from_name(name)
    if named is not None:
        at, timed = named
        if timed:
            return at
        if modified is not None:
            local = modified.astimezone().replace(tzinfo=None) if modified.tzinfo else modified
            if local.date() == at.date():
                return local
        return at
    return modified


def seconds_label(seconds: float) -> str:
    """``"1 h 02 min"``, ``"3 min 05 s"``, ``"42.0 s"``: a duration for progress lines and reports."""
    if seconds >= 3600:
        return f"{int(seconds // 3600)} h {int(seconds % 3600 // 60):02d} min"
    if seconds >= 60:
        return f"{int(seconds // 60)} min {int(seconds % 60):02d} s"
    return f"{seconds:.1f} s" if math.isfinite(seconds) else "?"
