"""Audio, video and WhatsApp-with-media imports on a real server (ci Whisper model, embedded Postgres):
transcribed with progress, sealed at rest, dated, remembered, idempotent by content, keyframes kept as
media, damaged files refused with nothing written, and the CLI."""

from __future__ import annotations

import io
import json
import re
import subprocess
import uuid
import zipfile
from collections.abc import Iterator
from typing import Any

import pytest

from tests.avatar import media_fixtures as mf
from tests.conftest import REPO, SOMA, ServerProcess, new_user, soma_env, start_server
from tests.server.test_imports import follow, stored, user_id_of
from tests.server.test_privacy import admin_db, files_containing, flush_to_disk
from tests.server_api import api

pytestmark = [pytest.mark.timeout(600), pytest.mark.models]
ME = "Me Myself"
HIKING = "I love hiking in the mountains."
KITCHEN = "Please turn on the kitchen lights."
SARDINES = "My favourite food is grilled sardines."


@pytest.fixture(scope="module")
def srv(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """A server of its own (its data dir is scanned for the spoken words), ci models."""
    server = start_server(tmp_path_factory.mktemp("media-imports"), models=True, SOMA_SIGNUP="open", timeout=180)
    yield server
    server.stop()


@pytest.fixture(scope="module")
def voice_note() -> bytes:
    return mf.encode_audio(mf.speech(HIKING, KITCHEN), "ogg")


def upload(srv: ServerProcess, token: str, body: bytes, name: str, **params: str) -> dict[str, Any]:
    r = api(srv, "POST", "/v1/imports", token, params={"me": ME, "name": name, **params}, content=body)
    assert r.status_code == 202, r.text
    row: dict[str, Any] = r.json()
    return row


def run(srv: ServerProcess, token: str, body: bytes, name: str, **params: str) -> tuple[list[Any], str, Any]:
    return follow(srv, token, upload(srv, token, body, name, **params)["id"])


def exported(srv: ServerProcess, token: str) -> tuple[dict[str, Any], list[dict[str, Any]], list[dict[str, Any]]]:
    """(manifest, imported messages, import_media rows) of the user's export."""
    archive = zipfile.ZipFile(io.BytesIO(api(srv, "GET", "/v1/me/export", token).content))
    messages = [json.loads(line) for line in archive.read("imported_messages.jsonl").splitlines()]
    links = [json.loads(line) for line in archive.read("import_media.jsonl").splitlines()]
    return json.loads(archive.read("manifest.json")), messages, links


def media_count(srv: ServerProcess, user_id: uuid.UUID) -> int:
    with admin_db(srv) as db:
        row = db.execute("SELECT count(*) AS n FROM media WHERE user_id = %s", (user_id,)).fetchone()
    assert row is not None
    return int(row["n"])


def test_a_voice_note_is_transcribed_dated_remembered_and_sealed(srv: ServerProcess, voice_note: bytes) -> None:
    """An Opus voice note named like WhatsApp's becomes one message of the user's holding the spoken words,
    dated from its name, with progress in seconds of audio, a memory from what the user said, the recording
    kept as sealed media (downloadable byte for byte), and no spoken word in clear on disk."""
    _, token = new_user(srv, "voice")
    progress, kind, final = run(srv, token, voice_note, "PTT-20240312-WA0004.opus")
    assert kind == "done", final
    assert final["format"] == "audio" and final["read"] == 1 and final["created"] == 1 and final["memories"] >= 1
    assert any(p.get("audio_total_s", 0) > 0 and p.get("audio_s", 0) > 0 for p in progress), progress
    (entry,) = final["media"]
    assert entry["status"] == "transcribed" and entry["kind"] == "voice" and entry["messages"] == 1
    assert final["audio_seconds"] == pytest.approx(entry["seconds"], abs=0.01) and 5 < entry["seconds"] < 10
    r = api(srv, "GET", f"/v1/media/{entry['media_id']}/content", token)
    assert r.status_code == 200 and r.content == voice_note and r.headers["content-type"] == "audio/ogg"

    manifest, messages, links = exported(srv, token)
    (message,) = messages
    text = message["text"].lower()
    assert "hiking in the mountains" in text and "kitchen lights" in text, message["text"]
    assert message["is_user"] and message["sender"] == "me" and message["source"] == "audio"
    assert message["attachment"] == "voice" and message["at"].startswith("2024-03-12")
    assert [link["kind"] for link in links] == ["source"] and manifest["tables"]["import_media"] == 1
    found = api(srv, "GET", "/v1/memories/search", token, params={"q": "what do I love doing"}).json()["data"]
    assert any("hiking" in m["text"].lower() and m["source"] == "import" for m in found), found

    flush_to_disk(srv)
    assert files_containing(srv.data_dir, [b"hiking in the mountains", b"kitchen lights", b"PTT-20240312"]) == {}


def test_the_same_recording_again_is_not_transcribed_twice(srv: ServerProcess) -> None:
    """Re-importing an M4A adds no message and keeps no second copy; the report says it was imported before.
    Someone else speaking (``speaker``) makes the transcript not the user's."""
    _, token = new_user(srv, "again")
    m4a = mf.encode_audio(mf.speech(SARDINES), "m4a")
    _, kind, first = run(srv, token, m4a, "Recording_20230102_030405.m4a", speaker="Ana Souza")
    assert kind == "done" and first["created"] == 1 and first["media"][0]["status"] == "transcribed", first
    user_id = user_id_of(srv, token)
    _, kind, second = run(srv, token, m4a, "copy.m4a")
    assert kind == "done" and second["created"] == 0 and second["read"] == 0, second
    assert second["skip_reasons"] == {"media_already_imported": 1} and second["audio_seconds"] == 0
    assert second["media"][0]["status"] == "already_imported"
    assert stored(srv, user_id) == 1 and media_count(srv, user_id) == 1
    _, messages, _ = exported(srv, token)
    assert not messages[0]["is_user"] and messages[0]["sender"] == "Ana Souza"
    assert messages[0]["at"].startswith("2023-01-02T03:04:05") and "sardines" in messages[0]["text"].lower()
    # Someone else's words are never the user's memories: what is kept of them is kept as theirs (issue 20).
    kept = [m["text"] for m in api(srv, "GET", "/v1/memories", token).json()["data"]]
    assert len(kept) == first["memories"] and all(t.startswith("Ana Souza said: ") for t in kept), kept


def test_a_video_gives_its_transcript_and_keyframes_as_sealed_media(srv: ServerProcess) -> None:
    """An MP4 with speech and two scene cuts: its words become a message, the video and three keyframes
    (opening, each cut) are the user's media linked to the import, JPEGs in time order."""
    _, token = new_user(srv, "video")
    video = mf.make_video(mf.speech(KITCHEN, HIKING), 8.0, [3.0, 6.0])
    _, kind, final = run(srv, token, video, "VID_20240501_120000.mp4")
    assert kind == "done", final
    (entry,) = final["media"]
    assert entry["kind"] == "video" and entry["status"] == "transcribed" and len(entry["keyframes"]) == 3
    source = api(srv, "GET", f"/v1/media/{entry['media_id']}/content", token)
    assert source.content == video and source.headers["content-type"] == "video/mp4"
    for frame_id in entry["keyframes"]:
        frame = api(srv, "GET", f"/v1/media/{frame_id}/content", token)
        assert frame.headers["content-type"] == "image/jpeg" and frame.content[:2] == b"\xff\xd8"
    _, messages, links = exported(srv, token)
    assert "kitchen lights" in messages[0]["text"].lower() and messages[0]["attachment"] == "video"
    assert messages[0]["at"].startswith("2024-05-01T12:00:00")
    frames = [link for link in links if link["kind"] == "keyframe"]
    assert [link["offset_s"] for link in frames] == [0.0, 3.0, 6.0]
    assert {link["source_id"] for link in frames} == {entry["media_id"]}
    assert {link["import_id"] for link in links} == {final["id"]}


def test_a_whatsapp_export_with_media_transcribes_its_voice_notes(srv: ServerProcess, voice_note: bytes) -> None:
    """A "WhatsApp Chat with …" ZIP: the chat is imported, each voice note it holds is transcribed into a
    message of its sender at the line's time; a note the archive lacks and a damaged one are reported per
    file, and the chat is still imported. Importing the archive again adds nothing."""
    _, token = new_user(srv, "zip")
    theirs = mf.encode_audio(mf.speech(SARDINES), "ogg")
    chat = (
        f"12/03/2024, 10:00 - {ME}: morning!\n"
        f"12/03/2024, 10:01 - {ME}: PTT-20240312-WA0004.opus (file attached)\n"
        "12/03/2024, 10:02 - Ana Souza: <attached: 00000013-AUDIO-2024-03-12-10-02-00.opus>\n"
        "12/03/2024, 10:03 - Ana Souza: PTT-20240312-WA0009.opus (file attached)\n"
        "12/03/2024, 10:04 - Ana Souza: PTT-20240312-WA0010.opus (file attached)\n"
        f"12/03/2024, 10:05 - {ME}: see you later\n"
    )
    files = {
        "PTT-20240312-WA0004.opus": voice_note,
        "00000013-AUDIO-2024-03-12-10-02-00.opus": theirs,
        "PTT-20240312-WA0010.opus": voice_note[: len(voice_note) // 2],
        "IMG-20240312-WA0001.jpg": b"\xff\xd8",
    }
    archive = mf.whatsapp_zip(chat, files)
    _, kind, final = run(srv, token, archive, "WhatsApp Chat with Ana Souza.zip")
    assert kind == "done", final
    assert final["format"] == "whatsapp_zip" and final["read"] == 8 and final["created"] == 8, final
    assert final["skip_reasons"] == {"media_damaged": 1, "media_missing": 1}
    report = {e["name"]: e for e in final["media"]}
    assert report["PTT-20240312-WA0009.opus"]["status"] == "missing"
    assert report["PTT-20240312-WA0010.opus"]["status"] == "damaged"
    assert "cut short" in report["PTT-20240312-WA0010.opus"]["error"]
    assert {report[n]["status"] for n in ("PTT-20240312-WA0004.opus", "00000013-AUDIO-2024-03-12-10-02-00.opus")} == {
        "transcribed"
    }
    _, messages, _ = exported(srv, token)
    spoken = [m for m in messages if m["text"] and m["attachment"] == "voice"]
    assert len(spoken) == 2, messages
    mine = next(m for m in spoken if m["is_user"])
    assert "hiking" in mine["text"].lower() and mine["at"].startswith("2024-03-12T10:01")
    assert mine["conversation"] == "Ana Souza" and mine["source"] == "whatsapp"
    ana = next(m for m in spoken if not m["is_user"])
    assert ana["sender"] == "Ana Souza" and "sardines" in ana["text"].lower()
    assert ana["at"].startswith("2024-03-12T10:02")

    _, kind, again = run(srv, token, archive, "WhatsApp Chat with Ana Souza.zip")
    assert kind == "done" and again["created"] == 0 and again["audio_seconds"] == 0, again
    assert again["skip_reasons"]["media_already_imported"] == 2
    assert media_count(srv, user_id_of(srv, token)) == 2


@pytest.mark.parametrize(
    ("name", "body", "message"),
    [("voice.m4a", "cut-m4a", "not a readable"), ("voice.ogg", "text", "named like audio"),
     ("clip.mp4", "junk-mp4", "not a readable"), ("chat.zip", "no-chat", "no WhatsApp chat")],
)
def test_damaged_media_fails_clearly_and_keeps_nothing(srv: ServerProcess, name: str, body: str, message: str) -> None:
    """A cut M4A, text named .ogg, a truncated MP4 or an archive without a chat: the import fails saying why,
    and no message, media row or staged file is left."""
    _, token = new_user(srv, "bad")
    pcm = mf.speech(KITCHEN)
    data = {
        "cut-m4a": mf.encode_audio(pcm, "m4a")[:9000],
        "text": b"hello, this is not a voice note\n",
        "junk-mp4": mf.make_video(pcm, 3.0)[:4000],
        "no-chat": mf.whatsapp_zip("x", {"a.opus": b"x"}, chat_name="notes/readme.md"),
    }[body]
    _, kind, final = run(srv, token, data, name)
    assert kind == "failed" and message in final["error"], final
    assert final["created"] == 0 and final["media"] == []
    user_id = user_id_of(srv, token)
    assert stored(srv, user_id) == 0 and media_count(srv, user_id) == 0
    assert not list((srv.data_dir / "media" / str(user_id)).rglob("*.sealed"))


def test_cli_transcribes_a_voice_note_and_skips_it_the_second_time(srv: ServerProcess, voice_note: bytes,
                                                                   tmp_path: Any) -> None:
    """``soma import voice.opus --me NAME --user U`` transcribes with a progress bar in seconds of audio;
    the second run finds the recording already imported."""
    name, token = new_user(srv, "cli")
    path = tmp_path / "00000012-AUDIO-2024-03-12-10-01-02.opus"
    path.write_bytes(voice_note)
    env = soma_env(srv.data_dir, **srv.env)
    args = [*SOMA, "import", str(path), "--me", ME, "--user", name]
    first = subprocess.run(args, env=env, cwd=REPO, capture_output=True, text=True, timeout=300)
    assert first.returncode == 0, first.stderr
    assert "audio: 1 messages read, 1 new" in first.stderr and "of audio transcribed" in first.stderr
    second = subprocess.run(args, env=env, cwd=REPO, capture_output=True, text=True, timeout=300)
    assert second.returncode == 0 and "0 new" in second.stderr and "already_imported" in second.stderr, second.stderr
    _, messages, _ = exported(srv, token)
    assert len(messages) == 1 and messages[0]["at"].startswith("2024-03-12T10:01:02")
    assert "kitchen lights" in messages[0]["text"].lower()


def test_without_a_speech_model_audio_fails_saying_so(server: ServerProcess, voice_note: bytes) -> None:
    """A server started without models refuses to pretend: the import fails naming the missing model."""
    _, token = new_user(server, "nomodel")
    r = api(server, "POST", "/v1/imports", token, params={"me": ME, "name": "v.opus"}, content=voice_note)
    assert r.status_code == 202
    _, kind, final = follow(server, token, r.json()["id"])
    assert kind == "failed" and "speech model" in final["error"], final


def test_long_audio_is_split_into_windows_and_every_part_is_heard(srv: ServerProcess) -> None:
    """Over two minutes of speech (past the one-message limit): one message per window, together holding
    what was said from the first sentence to the last, and progress reported along the way."""
    _, token = new_user(srv, "long")
    pcm = mf.speech(*mf.SENTENCES, gap_s=1.2)
    assert len(pcm) / 16_000 > 125
    progress, kind, final = run(srv, token, mf.encode_audio(pcm, "ogg"), "Recording_20240401_090000.ogg")
    assert kind == "done", final
    assert len({round(p["audio_s"]) for p in progress if "audio_s" in p}) >= 3, progress
    _, messages, _ = exported(srv, token)
    assert len(messages) >= 5 and all(m["text"] for m in messages) and final["media"][0]["messages"] == len(messages)
    heard = set(re.sub(r"[^a-z ]", " ", " ".join(m["text"] for m in messages).lower()).split())
    spoken = [set(re.sub(r"[^a-z ]", " ", s.lower()).split()) for s in mf.SENTENCES]
    recall = sum(len(words & heard) for words in spoken) / sum(len(words) for words in spoken)
    assert recall > 0.8, (recall, messages)
    assert {"kitchen", "lights"} <= heard and {"flowers", "wonderful"} <= heard  # the first and the last
    times = sorted(m["at"] for m in messages)
    assert times[0].startswith("2024-04-01T09:00:00") and len(set(times)) == len(messages)  # each at its offset
