"""The person's voice over HTTP, end to end on a real server with the ci models and a real Postgres: enrollment
clips checked and measured, the profile, stock and matched voices with samples, the choice, the background
search (quick plan), a brought Piper voice, a call that speaks with the chosen voice, another user's ids, and
what export and erasure do with it all.

Speech comes from the real Kokoro and Piper voices (the ci models), never from fixtures of numbers.
"""

from __future__ import annotations

import asyncio
import io
import json
import time
import uuid
import wave
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
import soxr
from aiortc import RTCSessionDescription

from models.speaker import SpeakerEncoders, load_speaker_encoders, similarity
from models.tts import KokoroTts, load_kokoro
from pipeline.audio import to_int16, wav_bytes
from tests.conftest import ServerProcess, new_user, start_server
from tests.server.test_privacy import admin_db
from tests.server.test_webrtc_calls import RATE, Caller, Microphone, place, typed_turn
from tests.server_api import auth

SENTENCES_SAID = (
    "I walked down to the harbour early, when the boats were still asleep.",
    "There is nothing like fresh bread on a cold and windy afternoon.",
    "My brother called last night to tell me about his new job in the city.",
    "We should plant tomatoes this spring, and maybe a few sunflowers too.",
    "The train was late again, so I read half a novel on the platform.",
    "Tell me honestly, do you think the blue door looks better than the green one?",
    "After dinner we played cards until nobody could keep their eyes open.",
)


def wav(audio: np.ndarray, rate: int) -> bytes:
    """Float mono audio as a 16-bit WAV, as the enrollment page sends it."""
    return wav_bytes(to_int16(audio), rate)


def read_wav(data: bytes) -> tuple[np.ndarray, int]:
    with wave.open(io.BytesIO(data)) as w:
        pcm = np.frombuffer(w.readframes(w.getnframes()), dtype="<i2")
        return pcm.astype(np.float32) / 32768.0, w.getframerate()


def to16k(audio: np.ndarray, rate: int) -> np.ndarray:
    return np.asarray(soxr.resample(audio.astype(np.float32), rate, 16_000), dtype=np.float32)


@pytest.fixture(scope="module")
def voice_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """A server with the ci models and the quick search plan (a search in well under a minute)."""
    srv = start_server(tmp_path_factory.mktemp("voice-server"), models=True, SOMA_SIGNUP="open",
                       SOMA_VOICE_MATCH_PLAN="quick", timeout=180)
    yield srv
    srv.stop()


@pytest.fixture(scope="module")
def kokoro() -> Iterator[KokoroTts]:
    with load_kokoro(None, "ci") as tts:
        yield tts


@pytest.fixture(scope="module")
def encoders() -> Iterator[SpeakerEncoders]:
    with load_speaker_encoders(None, "ci") as enc:
        yield enc


def said(kokoro: KokoroTts, text: str, pack: str = "jf_nezumi") -> bytes:
    """``text`` read by a Kokoro voice that stands for the person, as a 24 kHz WAV."""
    return wav(kokoro.synthesize_with(text, kokoro.styles[pack], 1.0), kokoro.sample_rate)


def client(server: ServerProcess, token: str) -> httpx.Client:
    return httpx.Client(base_url=server.base_url, headers=auth(token), timeout=120)


def enroll(c: httpx.Client, kokoro: KokoroTts, count: int = 6) -> dict[str, Any]:
    profile: dict[str, Any] = {}
    for i, text in enumerate(SENTENCES_SAID[:count]):
        r = c.post("/v1/voice/clips", params={"sentence": i}, content=said(kokoro, text),
                   headers={"Content-Type": "audio/wav"})
        assert r.status_code == 201, r.text
        profile = r.json()["profile"]
    return profile


def test_enrollment_clips_are_checked_measured_and_retaken(voice_server: ServerProcess, kokoro: KokoroTts) -> None:
    _, token = new_user(voice_server, "enrol")
    with client(voice_server, token) as c:
        assert httpx.get(voice_server.base_url + "/v1/voice/profile").status_code == 401
        sentences = c.get("/v1/voice/sentences").json()["sentences"]
        assert len(sentences) == 8 and all(len(s.split()) >= 8 for s in sentences)
        assert c.get("/v1/voice/profile").json() == {"profile": None}

        r = c.post("/v1/voice/clips", params={"sentence": 0}, content=said(kokoro, SENTENCES_SAID[0]))
        assert r.status_code == 201, r.text
        clip, profile = r.json()["clip"], r.json()["profile"]
        assert clip["source"] == "enrollment" and clip["sentence"] == 0
        assert clip["quality"]["ok"] and clip["quality"]["problems"] == []
        assert 2.0 < clip["speech_s"] <= clip["seconds"] < 8.0
        assert not {"r", "d", "features"} & (set(clip) | set(clip["quality"]))  # the voiceprint stays on the server
        assert profile["ready"] is False and len(profile["clips"]) == 1
        assert profile["traits"]["pitch_median_hz"] is not None

        # A retake of the same sentence replaces it.
        r = c.post("/v1/voice/clips", params={"sentence": 0}, content=said(kokoro, SENTENCES_SAID[1]))
        assert r.status_code == 201
        assert [x["sentence"] for x in r.json()["profile"]["clips"]] == [0]
        assert r.json()["clip"]["id"] != clip["id"]

        # Silence: refused with what was measured, so the page can say why; nothing is kept.
        r = c.post("/v1/voice/clips", params={"sentence": 1}, content=wav(np.zeros(24_000 * 3), 24_000))
        assert r.status_code == 422 and r.json()["error"]["code"] == "clip_unusable"
        assert "too_little_speech" in r.json()["quality"]["problems"] and r.json()["quality"]["ok"] is False
        # Clipping: the same speech driven far past full scale.
        loud, rate = read_wav(said(kokoro, SENTENCES_SAID[2]))
        r = c.post("/v1/voice/clips", params={"sentence": 1}, content=wav(np.clip(loud * 40, -1, 1), rate))
        assert r.status_code == 422 and "clipping" in r.json()["quality"]["problems"]
        # Not audio, empty, out of range, too large.
        assert c.post("/v1/voice/clips", params={"sentence": 1}, content=b"hello" * 100).json()["error"]["code"] \
            == "invalid_audio"
        assert c.post("/v1/voice/clips", params={"sentence": 1}, content=b"").status_code == 400
        assert c.post("/v1/voice/clips", params={"sentence": 99}, content=said(kokoro, "Hi.")).status_code == 400
        big = b"RIFF" + b"\0" * (9 * 1024 * 1024)
        assert c.post("/v1/voice/clips", params={"sentence": 1}, content=big).status_code == 413
        assert len(c.get("/v1/voice/profile").json()["profile"]["clips"]) == 1

        clip_id = c.get("/v1/voice/profile").json()["profile"]["clips"][0]["id"]
        assert c.delete(f"/v1/voice/clips/{clip_id}").status_code == 204
        assert c.delete(f"/v1/voice/clips/{clip_id}").status_code == 404
        assert c.get("/v1/voice/profile").json() == {"profile": None}


def test_stock_voices_samples_and_the_choice(voice_server: ServerProcess) -> None:
    _, token = new_user(voice_server, "choose")
    with client(voice_server, token) as c:
        listed = c.get("/v1/voice/voices").json()
        ids = [v["id"] for v in listed["voices"]]
        assert ids[0] == "stock-piper" and "stock-kokoro-jf_alpha" in ids and "stock-kokoro-jm_kumo" in ids
        assert listed["chosen"] == "stock-piper"  # before any choice: the fast stock voice
        assert all(v["kind"] == "stock" and v["similarity"] is None and v["license"] for v in listed["voices"])

        r = c.get("/v1/voice/voices/stock-kokoro-jm_kumo/sample", params={"text": "Good morning to you."})
        assert r.status_code == 200 and r.headers["content-type"] == "audio/wav"
        audio, rate = read_wav(r.content)
        assert rate == 24_000 and len(audio) > rate * 0.5 and np.abs(audio).max() > 0.05
        assert c.get("/v1/voice/voices/stock-kokoro-nobody/sample").status_code == 404
        assert c.get("/v1/voice/voices/stock-piper/sample", params={"text": "x" * 201}).status_code == 400

        assert c.put("/v1/voice/choice", json={"voice_id": "stock-kokoro-jm_kumo"}).json() == {
            "chosen": "stock-kokoro-jm_kumo"}
        assert c.get("/v1/voice/voices").json()["chosen"] == "stock-kokoro-jm_kumo"
        r = c.put("/v1/voice/choice", json={"voice_id": "voice_" + "0" * 32})
        assert r.status_code == 404 and r.json()["error"]["code"] == "voice_not_found"
        assert c.put("/v1/voice/choice", json={"voice": "stock-piper"}).status_code == 400


def test_a_search_finds_a_closer_voice_which_the_calls_speak_with(
    voice_server: ServerProcess, kokoro: KokoroTts, encoders: SpeakerEncoders
) -> None:
    _, token = new_user(voice_server, "match")
    with client(voice_server, token) as c:
        profile = enroll(c, kokoro, 3)
        assert not profile["ready"]
        r = c.post("/v1/voice/match")
        assert r.status_code == 409 and r.json()["error"]["code"] == "profile_not_ready"
        profile = enroll(c, kokoro, 7)
        assert profile["ready"] and profile["speech_s"] >= 20

        job = c.post("/v1/voice/match").json()["job"]
        assert job["state"] in ("queued", "running") and job["total"] > 0
        assert c.post("/v1/voice/match").json()["error"]["code"] == "match_running"
        started, seen = time.monotonic(), set()
        while job["state"] in ("queued", "running"):
            assert time.monotonic() - started < 300, job
            time.sleep(1)
            job = c.get(f"/v1/voice/match/{job['id']}").json()["job"]
            seen.add(job["done"])
        assert job["state"] == "done", job
        assert len(seen) > 2  # progress moved while it ran
        assert job["voice_id"] and job["voice_id"].startswith("voice_")
        listed = c.get("/v1/voice/voices").json()
        (matched,) = [v for v in listed["voices"] if v["kind"] == "matched"]
        default = job["default_similarity"]
        assert matched["similarity"]["r"] > default["r"] and matched["similarity"]["d"] > default["d"]
        assert listed["chosen"] == matched["id"]  # no voice was chosen before: the match becomes the avatar's

        match_sample, rate = read_wav(c.get(f"/v1/voice/voices/{matched['id']}/sample").content)
        piper_sample, piper_rate = read_wav(c.get("/v1/voice/voices/stock-piper/sample").content)
    asyncio.run(_call_speaks_with(voice_server, token, encoders, to16k(match_sample, rate),
                                  to16k(piper_sample, piper_rate)))


async def _call_speaks_with(
    server: ServerProcess, token: str, encoders: SpeakerEncoders, chosen: np.ndarray, default: np.ndarray
) -> None:
    """A WebRTC call's received audio embeds closer to the chosen voice than to the default one."""
    caller = Caller(Microphone(np.zeros(RATE, np.int16)))  # a silent microphone: the turns are typed
    async with httpx.AsyncClient(timeout=30) as http:
        r = await place(http, server, token, await caller.offer())
        assert r.status_code == 201, r.text
        await caller.pc.setRemoteDescription(RTCSessionDescription(r.text, "answer"))
        created = await caller.wait_for("session.created", 15)
        assert created["session"]["audio"]["output"]["voice"] == "avatar"
        for text in ("Tell me a short story about a fox.", "And what happened next?"):
            done = await typed_turn(caller, text)
            assert done["response"]["status"] == "completed"
        await asyncio.sleep(1.0)
    await caller.close()
    heard = np.concatenate(caller.heard).astype(np.float32) / 32768.0
    heard16 = to16k(heard, RATE)
    got = encoders.embed(heard16)
    want, other = encoders.embed(chosen), encoders.embed(default)
    assert similarity(got.r, want.r) > similarity(got.r, other.r) + 0.1
    assert similarity(got.d, want.d) > similarity(got.d, other.d)


def test_a_search_can_be_cancelled(voice_server: ServerProcess, kokoro: KokoroTts) -> None:
    _, token = new_user(voice_server, "cancel")
    with client(voice_server, token) as c:
        enroll(c, kokoro, 7)
        job = c.post("/v1/voice/match").json()["job"]
        cancelled = c.delete(f"/v1/voice/match/{job['id']}").json()["job"]
        assert cancelled["state"] == "cancelled"
        time.sleep(2)
        assert c.get(f"/v1/voice/match/{job['id']}").json()["job"]["state"] == "cancelled"
        assert not [v for v in c.get("/v1/voice/voices").json()["voices"] if v["kind"] == "matched"]
        # A new search may start once the cancelled one is over.
        r = c.post("/v1/voice/match")
        assert r.status_code == 202, r.text
        c.delete(f"/v1/voice/match/{r.json()['job']['id']}")


def test_a_piper_voice_brought_from_elsewhere(voice_server: ServerProcess) -> None:
    _, token = new_user(voice_server, "piper")
    voice_dir = Path.home() / ".cache" / "soma" / "models" / "tts-piper-joe"
    onnx = (voice_dir / "en_US-joe-medium.onnx").read_bytes()
    config = (voice_dir / "en_US-joe-medium.onnx.json").read_bytes()
    with client(voice_server, token) as c:
        r = c.post("/v1/voice/voices/piper", params={"name": "My trained voice"},
                   files={"onnx": ("me.onnx", onnx), "config": ("me.onnx.json", config)})
        assert r.status_code == 201, r.text
        voice = r.json()["voice"]
        assert voice["kind"] == "piper" and voice["name"] == "My trained voice"
        assert c.put("/v1/voice/choice", json={"voice_id": voice["id"]}).status_code == 200
        audio, rate = read_wav(c.get(f"/v1/voice/voices/{voice['id']}/sample").content)
        assert rate == 22_050 and np.abs(audio).max() > 0.05

        bad = c.post("/v1/voice/voices/piper", params={"name": "broken"},
                     files={"onnx": ("x.onnx", b"not a model"), "config": ("x.json", config)})
        assert bad.status_code == 400 and bad.json()["error"]["code"] == "invalid_voice"
        bad = c.post("/v1/voice/voices/piper", params={"name": "broken"},
                     files={"onnx": ("x.onnx", onnx), "config": ("x.json", b"{}")})
        assert bad.status_code == 400
        assert c.post("/v1/voice/voices/piper", params={"name": "x"}, files={"onnx": ("x", onnx)}).status_code == 400

        assert c.delete(f"/v1/voice/voices/{voice['id']}").status_code == 204
        assert c.get("/v1/voice/voices").json()["chosen"] == "stock-piper"
        assert c.get(f"/v1/voice/voices/{voice['id']}/sample").status_code == 404


def test_another_users_voice_data_is_not_found_and_erasure_removes_it(
    voice_server: ServerProcess, kokoro: KokoroTts
) -> None:
    owner_name, owner = new_user(voice_server, "owner")
    _, stranger = new_user(voice_server, "stranger")
    with client(voice_server, owner) as c:
        user_id = uuid.UUID(c.get("/v1/me").json()["id"])
        enroll(c, kokoro, 1)
        clip_id = c.get("/v1/voice/profile").json()["profile"]["clips"][0]["id"]
        c.put("/v1/voice/choice", json={"voice_id": "stock-kokoro-jf_tebukuro"})
        exported = c.get("/v1/me/export")
        assert exported.status_code == 200
        archive = zipfile.ZipFile(io.BytesIO(exported.content))
        clips = [json.loads(line) for line in archive.read("voice_clips.jsonl").splitlines()]
        assert len(clips) == 1 and len(clips[0]["features"]["r"]) == 256 and len(clips[0]["features"]["d"]) == 256
        assert json.loads(archive.read("voice_choice.jsonl"))["voice"] == "stock-kokoro-jf_tebukuro"
        manifest = json.loads(archive.read("manifest.json"))
        assert manifest["tables"]["voice_clips"] == 1
    with client(voice_server, stranger) as s:
        assert s.delete(f"/v1/voice/clips/{clip_id}").status_code == 404
        assert s.get("/v1/voice/profile").json() == {"profile": None}
        assert s.get("/v1/voice/voices").json()["chosen"] == "stock-piper"
    with client(voice_server, owner) as c:
        assert c.delete("/v1/me", params={"confirm": owner_name}).status_code == 204
    with client(voice_server, stranger) as s:
        assert s.get("/v1/voice/profile").json() == {"profile": None}
    with admin_db(voice_server) as db:
        for table in ("voice_clips", "voices", "voice_choices", "voice_jobs"):
            row = db.execute(f"SELECT count(*) AS n FROM {table} WHERE user_id = %s", (user_id,)).fetchone()  # noqa: S608
            assert row is not None and row["n"] == 0, table
