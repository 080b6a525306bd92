"""Audio, video and WhatsApp-archive importers without a database: detection, the validating pass (damaged,
cut short, not media), decoding into windows, recording times, keyframes, archive safety, and transcription
with the real ci speech model."""

from __future__ import annotations

import asyncio
import io
import secrets
import struct
import uuid
import zipfile
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pytest

from tests.avatar import media_fixtures as mf
from voice_server.avatar.importers import (
    ImportedMessage,
    ImportFormatError,
    Me,
    detect,
    participants,
    recordings,
    whatsapp,
    whatsapp_zip,
)
from voice_server.avatar.importers import keyframes as kf
from voice_server.avatar.importers.recordings import SAMPLE_RATE, WindowCutter
from voice_server.avatar.imports import recordings_job as media_job
from voice_server.avatar.imports.recordings_plan import MediaPlan, Piece
from voice_server.security.keys import UserKey
from voice_server.user_files import MediaStore

SENTENCES = ("Please turn on the kitchen lights.", "I love hiking in the mountains.")


@pytest.fixture(scope="module")
def pcm() -> np.ndarray:
    return mf.speech(*SENTENCES)


@pytest.fixture(scope="module")
def encoded(pcm: np.ndarray) -> dict[str, bytes]:
    return {fmt: mf.encode_audio(pcm, fmt) for fmt in ("ogg", "m4a", "mp3", "wav", "flac")}


@pytest.mark.parametrize(
    ("name", "fmt"),
    [("PTT-20240312-WA0004.opus", "ogg"), ("voice.m4a", "m4a"), ("a.mp3", "mp3"), ("a.wav", "wav"),
     ("a.flac", "flac"), ("renamed.txt", "ogg")],
)
def test_audio_is_detected_by_content(encoded: dict[str, bytes], name: str, fmt: str) -> None:
    """Voice notes and audio files are "audio" whatever they are named (content wins over the name)."""
    assert detect(name, encoded[fmt][:8192]) == "audio"


def test_video_archive_and_wrong_names_are_told_apart(pcm: np.ndarray) -> None:
    """An MP4 is video (an M4A, the same container, audio); a ZIP is a WhatsApp archive; a chat named .opus
    is still a chat; junk or a note named like audio is refused by name."""
    video = mf.make_video(pcm[:16_000], 1.0)
    assert detect("clip.mp4", video[:8192]) == "video"
    assert detect("clip.m4a", video[:8192]) == "audio"
    assert detect("x.zip", mf.whatsapp_zip("01/01/2024, 10:00 - Ana: hi\n", {})[:8192]) == "whatsapp_zip"
    assert detect("chat.opus", b"01/01/2024, 10:00 - Ana: hi\n") == "whatsapp"
    with pytest.raises(ImportFormatError, match="named like audio or video but is not"):
        detect("voice.ogg", b"hello, this is a note\n")
    with pytest.raises(ImportFormatError, match="named like audio or video but is not"):
        detect("voice.mp3", bytes(range(256)) * 8)


@pytest.mark.parametrize("fmt", ["ogg", "m4a", "mp3", "wav", "flac"])
def test_probe_accepts_whole_files_and_hashes_them(encoded: dict[str, bytes], pcm: np.ndarray, fmt: str) -> None:
    """Every supported audio format probes to its length (within AAC priming) and a stable digest."""
    info = recordings.probe(io.BytesIO(encoded[fmt]), f"a.{fmt}")
    assert info.kind == "audio" and info.has_audio and info.size == len(encoded[fmt])
    assert abs(info.seconds - len(pcm) / SAMPLE_RATE) < 0.2
    assert info.sha256 == recordings.probe(io.BytesIO(encoded[fmt]), "b").sha256
    assert info.content_type.startswith("audio/")


@pytest.mark.parametrize(
    ("fmt", "message"),
    [("ogg", "cut short"), ("m4a", "not a readable"), ("mp3", "cut short"), ("wav", "cut short"), ("flac", "damaged")],
)
def test_a_cut_file_is_refused_with_a_clear_reason(encoded: dict[str, bytes], fmt: str, message: str) -> None:
    """A file cut in the middle (an incomplete copy) is refused, saying so, before anything is transcribed."""
    data = encoded[fmt]
    with pytest.raises(ImportFormatError, match=message):
        recordings.probe(io.BytesIO(data[: len(data) * 6 // 10]), f"voice.{fmt}")


def test_not_audio_and_empty_files_are_refused() -> None:
    """Text, random bytes and an empty file are refused by the validating pass."""
    for data, message in ((b"just some text\n" * 100, "not a readable"), (secrets.token_bytes(5000), "not a readable"),
                          (b"", "empty")):
        with pytest.raises(ImportFormatError, match=message):
            recordings.probe(io.BytesIO(data), "x.ogg")
    with pytest.raises(ImportFormatError, match="no audio track"):
        recordings.probe(io.BytesIO(mf.make_video(None, 1.0)), "silent.mp4", "audio")


def test_windows_are_bounded_contiguous_and_cut_in_pauses() -> None:
    """70 s of "speech" (tone bursts with 0.4 s pauses): windows of at most 28 s, covering every sample once,
    each ending inside a pause, never inside a burst."""
    burst, pause = 2.3, 0.4
    t = np.arange(int(burst * SAMPLE_RATE)) / SAMPLE_RATE
    tone = (0.3 * np.sin(2 * np.pi * 220 * t)).astype(np.float32)
    unit = np.concatenate([tone, np.zeros(int(pause * SAMPLE_RATE), np.float32)])
    signal = np.tile(unit, 26)[: 70 * SAMPLE_RATE]
    cutter = WindowCutter()
    windows = []
    for start in range(0, len(signal), 960):  # 60 ms blocks, as a decoder gives them
        windows += cutter.push(signal[start : start + 960])
    windows += cutter.finish()
    assert len(windows) == 3 and all(w.seconds <= 28.0 for w in windows)
    assert np.array_equal(np.concatenate([w.samples for w in windows]), signal)
    assert [w.start_s for w in windows][1:] == pytest.approx(np.cumsum([w.seconds for w in windows])[:-1].tolist())
    for w in windows[:-1]:
        end = (w.start_s + w.seconds) % (burst + pause)
        assert burst <= end <= burst + pause, f"cut inside a burst at {w.start_s + w.seconds:.2f} s"
    assert recordings.Window(0.0, np.zeros(16_000, np.float32)).silent and not windows[0].silent


def test_speech_windows_decode_to_16k_mono(encoded: dict[str, bytes], pcm: np.ndarray) -> None:
    """An Opus voice note decodes back to 16 kHz mono float32 samples of its length."""
    (window,) = recordings.speech_windows(io.BytesIO(encoded["ogg"]))
    assert window.samples.dtype == np.float32 and abs(len(window.samples) - len(pcm)) < 0.05 * SAMPLE_RATE


def test_recording_times_come_from_metadata_then_name_then_mtime() -> None:
    """WhatsApp's and recorders' file names date a recording; container metadata wins; a name with only a
    date takes the modification time's clock when it is the same day."""
    whatsapp_name = "00000012-AUDIO-2024-03-12-10-01-02.opus"
    assert recordings.date_from_name(whatsapp_name) == (datetime(2024, 3, 12, 10, 1, 2), True)
    assert recordings.date_from_name("PTT-20240312-WA0004.opus") == (datetime(2024, 3, 12), False)
    assert recordings.date_from_name("Recording_20240312_100102.m4a") == (datetime(2024, 3, 12, 10, 1, 2), True)
    assert recordings.date_from_name("2024-03-12 10.01.02.m4a") == (datetime(2024, 3, 12, 10, 1, 2), True)
    assert recordings.date_from_name("PTT-20241399-WA0004.opus") is None
    assert recordings.date_from_name("New Recording.m4a") is None
    created = datetime(2023, 1, 2, 3, 4, 5, tzinfo=UTC)
    assert recordings.recorded_at("PTT-20240312-WA0004.opus", created, None) == created
    same_day = datetime(2024, 3, 12, 18, 30)
    assert recordings.recorded_at("PTT-20240312-WA0004.opus", None, same_day) == same_day
    assert recordings.recorded_at("PTT-20240312-WA0004.opus", None, datetime(2025, 1, 1)) == datetime(2024, 3, 12)
    assert recordings.recorded_at("voice.m4a", None, same_day) == same_day


def test_container_creation_time_is_read(pcm: np.ndarray) -> None:
    """An M4A's creation_time tag (phones write it) is the recording's time."""
    data = mf.encode_audio(pcm[:16_000], "m4a", metadata={"creation_time": "2022-05-06T07:08:09.000000Z"})
    assert recordings.probe(io.BytesIO(data), "x.m4a").created == datetime(2022, 5, 6, 7, 8, 9, tzinfo=UTC)


def test_keyframes_are_the_opening_and_each_scene_change_capped() -> None:
    """A 12 s clip with cuts at 3, 6 and 9 s gives exactly the opening frame and the three cuts, as JPEGs in
    time order; a limit keeps the strongest; a clip recorded sideways comes out upright."""
    video = mf.make_video(None, 12.0, [3.0, 6.0, 9.0], fps=10, gop=10)
    frames = kf.keyframes(io.BytesIO(video))
    assert [f.offset_s for f in frames] == [0.0, 3.0, 6.0, 9.0]
    assert all(f.jpeg[:2] == b"\xff\xd8" and f.jpeg[-2:] == b"\xff\xd9" for f in frames)
    assert (frames[0].width, frames[0].height) == (320, 240)
    two = kf.keyframes(io.BytesIO(video), limit=2)
    assert len(two) == 2 and two[0].offset_s == 0.0
    sideways = kf.keyframes(io.BytesIO(mf.make_video(None, 1.0, rotation=90)))
    assert (sideways[0].width, sideways[0].height) == (240, 320)


CHAT = (
    "12/03/2024, 10:00 - Me Myself: morning!\n"
    "12/03/2024, 10:01 - Me Myself: PTT-20240312-WA0004.opus (file attached)\n"
    "12/03/2024, 10:02 - Ana Souza: <attached: 00000013-AUDIO-2024-03-12-10-02-00.opus>\n"
    "12/03/2024, 10:03 - Ana Souza: PTT-20240312-WA0009.opus (file attached)\n"
)


def test_archive_finds_its_chat_and_the_voice_notes_lines_name(encoded: dict[str, bytes]) -> None:
    """The chat and its attachments are found by base name; the chat's name comes from the text's name (or
    the archive's for iOS's _chat.txt); a line's attached file name is kept on the message; the archive's
    participants are its chat's ("which one is you?")."""
    data = mf.whatsapp_zip(CHAT, {"PTT-20240312-WA0004.opus": encoded["ogg"],
                                  "media/00000013-AUDIO-2024-03-12-10-02-00.opus": encoded["ogg"]})
    chat = whatsapp_zip.open_chat_zip(io.BytesIO(data), "WhatsApp Chat with Ana Souza.zip")
    try:
        assert chat.conversation == "Ana Souza" and chat.chat.filename.endswith(".txt")
        with chat.open_member(chat.chat) as f:
            messages = [r for r in whatsapp.parse(f, me=Me.of("Me Myself")) if isinstance(r, ImportedMessage)]
        found = [chat.attachment(m) for m in messages]
        names = [i.filename if i else None for i in found]
        assert names == [None, "PTT-20240312-WA0004.opus", "media/00000013-AUDIO-2024-03-12-10-02-00.opus", None]
        assert messages[3].attachment == "voice" and messages[3].attachment_name == "PTT-20240312-WA0009.opus"
    finally:
        chat.close()
    assert participants("whatsapp_zip", io.BytesIO(data), path="x.zip") == (("Ana Souza", 2), ("Me Myself", 2))
    ios = mf.whatsapp_zip(CHAT, {}, chat_name="_chat.txt")
    assert whatsapp_zip.open_chat_zip(io.BytesIO(ios), "WhatsApp Chat - Ana Souza.zip").conversation == "Ana Souza"


def test_archives_that_could_hurt_are_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    """A zip bomb member, too many entries, an encrypted member, no chat, or a damaged archive: refused with
    a reason, before any member is read."""
    bomb = mf.whatsapp_zip(CHAT, {"PTT-20240312-WA0004.opus": bytes(50 << 20)})
    with pytest.raises(ImportFormatError, match="ZIP bomb"):
        whatsapp_zip.open_chat_zip(io.BytesIO(bomb))
    monkeypatch.setattr(whatsapp_zip, "MAX_MEMBERS", 3)
    many = mf.whatsapp_zip(CHAT, {f"IMG-{i}.jpg": b"x" for i in range(5)})
    with pytest.raises(ImportFormatError, match="lists 6 files"):
        whatsapp_zip.open_chat_zip(io.BytesIO(many))
    monkeypatch.undo()
    with pytest.raises(ImportFormatError, match="no WhatsApp chat"):
        whatsapp_zip.open_chat_zip(io.BytesIO(mf.whatsapp_zip("x", {"notes.txt": b"y"}, chat_name="other.txt")))
    plain = mf.whatsapp_zip(CHAT, {})
    with pytest.raises(ImportFormatError, match="not a readable ZIP"):
        whatsapp_zip.open_chat_zip(io.BytesIO(plain[: len(plain) - 30]))
    with pytest.raises(ImportFormatError, match="encrypted"):
        whatsapp_zip.open_chat_zip(io.BytesIO(_mark_encrypted(plain)))


def _mark_encrypted(data: bytes) -> bytes:
    """The archive with every member's "encrypted" flag set (zipfile cannot write encrypted members)."""
    out = bytearray(data)
    for signature, offset in ((b"PK\x03\x04", 6), (b"PK\x01\x02", 8)):
        at = out.find(signature)
        while at >= 0:
            (flags,) = struct.unpack_from("<H", out, at + offset)
            struct.pack_into("<H", out, at + offset, flags | 0x1)
            at = out.find(signature, at + 4)
    return bytes(out)


def test_zip_sizes_come_from_the_end_record(monkeypatch: pytest.MonkeyPatch) -> None:
    """A member over its kind's limit is refused from its declared size (nothing is decompressed)."""
    monkeypatch.setattr(whatsapp_zip, "MAX_AUDIO_BYTES", 1000)
    data = mf.whatsapp_zip(CHAT, {"PTT-20240312-WA0004.opus": secrets.token_bytes(2000)})
    with pytest.raises(ImportFormatError, match="the limit is 1,000"):
        whatsapp_zip.open_chat_zip(io.BytesIO(data))
    assert zipfile.is_zipfile(io.BytesIO(data))


# ----------------------------------------------------------------------------- with the real speech model


@pytest.fixture(scope="module")
def asr():  # type: ignore[no-untyped-def]
    from models.asr import load_asr
    from models.paths import ModelMissingError

    try:
        model = load_asr(None, "ci")
    except ModelMissingError as exc:
        pytest.skip(f"the ci models are not provisioned: {exc}")
    yield model
    model.close()


@pytest.mark.models
def test_a_voice_note_transcribes_to_its_words_as_one_message(asr, encoded: dict[str, bytes], tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """The ci Whisper model hears the spoken sentences in an Opus voice note; they become one message of
    the user's, dated by the WhatsApp file name, identified by the audio (not the words)."""
    key = UserKey(uuid.uuid4(), secrets.token_bytes(32))
    plan = MediaPlan(MediaStore(None, None, tmp_path), key, uuid.uuid4(), 10**9)  # type: ignore[arg-type]
    done: list[float] = []

    async def run() -> list[Piece]:
        try:
            windows = recordings.speech_windows(io.BytesIO(encoded["ogg"]))
            return await media_job.transcribe(plan, asr, windows, done.append)
        finally:
            await plan.aclose(committed=False)

    pieces = asyncio.run(run())
    text = " ".join(p.text for p in pieces).lower()
    assert "kitchen lights" in text and "hiking in the mountains" in text
    assert sum(done) == pytest.approx(recordings.probe(io.BytesIO(encoded["ogg"])).seconds, abs=0.1)
    name = "PTT-20240312-WA0004.opus"
    (message,) = media_job.transcript_messages(
        pieces, seconds=sum(done), sha256="ab" * 32, source="audio", conversation=name, sender="me",
        at=recordings.recorded_at(name, None, None), is_user=True, attachment="voice",
    )
    assert message.is_user and message.at == datetime(2024, 3, 12) and message.attachment == "voice"
    renamed = ImportedMessage("audio", "other.opus", "me", None, "different words", True, "voice", 0,
                              transcribed_from=message.transcribed_from)
    assert renamed.fingerprint() == message.fingerprint()  # same recording, same message whatever was heard


def test_a_decoding_loop_is_collapsed_but_speech_that_repeats_once_is_kept() -> None:
    """A phrase said over and over in a row (a stuck decode) keeps one copy; ordinary repetition stays."""
    assert media_job.collapse_loops("Thank you. Thank you. Thank you. Thank you.") == "Thank you."
    assert media_job.collapse_loops("no no no no no") == "no"
    assert media_job.collapse_loops("I do not know, I do not know, I do not know, why") == "I do not know, why"
    kept = ["no no no", "I do not know, I do not know what to say", "Please turn on the kitchen lights.", ""]
    assert [media_job.collapse_loops(t) for t in kept] == kept


def test_long_recordings_become_one_message_per_window() -> None:
    """Past two minutes a recording is split into its windows, each timed at its offset (a short one with
    the same pieces is one message); nothing heard, no message."""
    pieces = [Piece(i * 28.0, f"part {i}") for i in range(6)]
    start = datetime(2024, 1, 1, 9, 0)
    messages = media_job.transcript_messages(pieces, seconds=170.0, sha256="cd" * 32, source="video",
                                             conversation="talk.mp4", sender="me", at=start, is_user=True,
                                             attachment="video")
    assert [m.text for m in messages] == [f"part {i}" for i in range(6)]
    assert messages[2].at == datetime(2024, 1, 1, 9, 0, 56) and len({m.fingerprint() for m in messages}) == 6
    short = media_job.transcript_messages(pieces[:3], seconds=84.0, sha256="cd" * 32, source="audio",
                                          conversation="n.opus", sender="me", at=start, is_user=True,
                                          attachment="voice")
    assert [(m.text, m.at) for m in short] == [("part 0 part 1 part 2", start)]
    nothing = media_job.transcript_messages([], seconds=3.0, sha256="x", source="audio", conversation="",
                                            sender="me", at=None, is_user=True, attachment="audio")
    assert nothing == []
