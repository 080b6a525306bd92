"""What a recording of the person's voice becomes: decoded, checked, measured; and the profile built from them.

An enrollment clip is one sentence the person read in the web page; an import clip is the start of one of
their own imported recordings. Each is decoded to 16 kHz mono, its quality measured (`models.speaker.
clip_quality`: level, clipping, background noise, speech ratio) — an unusable clip is refused with the reasons,
so the page can ask for a retake — and then measured with both speaker encoders and for pitch and rate. Only the
measurements are kept (sealed); the enrollment audio itself is not stored.

The profile is the clips together: each encoder's embeddings averaged, weighted by seconds of speech, and the
pitch range and rate across clips. It is ready for a voice match from `READY_SPEECH_S` of speech (VOICE.md
measured the search with ≈ 27 s of enrollment).
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from dataclasses import asdict
from typing import Any

import numpy as np
import numpy.typing as npt

from models.speaker import ClipQuality, Embeddings, SpeakerEncoders, clip_quality, mean_embedding, voice_traits
from voice_server.avatar.importers import ImportFormatError, recordings
from voice_server.avatar.voice.store import StoredClip

FloatArray = npt.NDArray[np.float32]

READY_SPEECH_S = 20.0
MAX_CLIP_S = 30.0  # an enrollment sentence is ~4 s; a longer upload is cut here
MAX_CLIP_BYTES = 8 * 1024 * 1024
IMPORT_CLIP_S = 60.0  # of an imported recording, the first minute is measured

SENTENCES: tuple[str, ...] = (
    "The morning light came through the kitchen window while the kettle started to sing.",
    "I never thought a short walk by the river could change the whole shape of my day.",
    "Could you remind me to call my sister on Sunday, before the football starts?",
    "We packed the car with blankets, sandwiches and far too many books for one weekend.",
    "Honestly, the best part of the trip was getting lost and finding that little bakery.",
    "When it rains like this, I like to sit by the fire and listen to old records.",
    "My grandmother always said that a good story needs a beginning, a middle and a surprise.",
    "Let's meet at half past six, and if I'm late, please order the soup for me.",
)
"""What the enrollment page asks the person to read: ordinary sentences with varied sounds and intonation
(a question, a list, an exclamation), each about four seconds aloud."""


class ClipUnusableError(ValueError):
    """A clip that cannot go into the profile: ``quality.problems`` says why."""

    def __init__(self, quality: ClipQuality) -> None:
        super().__init__(", ".join(quality.problems))
        self.quality = quality


def decode_clip(body: bytes, *, max_s: float = MAX_CLIP_S) -> FloatArray:
    """Decode an uploaded recording (WAV from the page, or any audio FFmpeg reads) to 16 kHz mono float32, at
    most ``max_s`` seconds of it. Blocking: call on a worker thread.

    Raises:
        ImportFormatError: Not audio, damaged or empty (the message says which).
    """
    kind = recordings.sniff("clip", body[:64])
    if kind is None:
        raise ImportFormatError("the recording is not a readable audio file")
    f = io.BytesIO(body)
    recordings.probe(f, "the recording", "audio")
    parts: list[FloatArray] = []
    held = 0
    limit = int(max_s * recordings.SAMPLE_RATE)
    for window in recordings.speech_windows(f):
        parts.append(window.samples[: limit - held])
        held += len(parts[-1])
        if held >= limit:
            break
    if not parts:
        raise ImportFormatError("the recording holds no audio")
    return np.concatenate(parts).astype(np.float32, copy=False)


def quality_json(quality: ClipQuality) -> dict[str, Any]:
    """A clip's quality as the API reports it."""
    out = {k: (round(v, 3) if isinstance(v, float) else v) for k, v in asdict(quality).items()}
    out["problems"] = list(quality.problems)
    out["ok"] = quality.ok
    return out


def measure(
    encoders: SpeakerEncoders, audio: FloatArray, *, words: int | None = None
) -> tuple[ClipQuality, dict[str, Any]]:
    """Check and measure one clip (blocking: on the encoders' lane). Returns its quality and its features.

    Raises:
        ClipUnusableError: The clip has problems (nothing is measured).
    """
    quality = clip_quality(audio)
    if not quality.ok:
        raise ClipUnusableError(quality)
    try:
        emb = encoders.embed(audio)
    except ValueError:  # the encoders found too little voiced audio although the energy gate passed
        raise ClipUnusableError(_with_problem(quality, "too_little_speech")) from None
    traits = voice_traits(audio, words=words)
    return quality, {"quality": quality_json(quality), "r": _vector(emb.r), "d": _vector(emb.d),
                     "traits": asdict(traits)}


def _with_problem(quality: ClipQuality, problem: str) -> ClipQuality:
    fields_ = asdict(quality)
    fields_["problems"] = (*quality.problems, problem)
    return ClipQuality(**fields_)


def _vector(v: FloatArray) -> list[float]:
    return [round(float(x), 7) for x in v]


def target(clips: Sequence[StoredClip]) -> Embeddings | None:
    """The profile's embeddings: each encoder's clip embeddings averaged by seconds of speech (``None``
    without clips)."""
    if not clips:
        return None
    weights = [max(c.speech_s, 0.1) for c in clips]
    r = mean_embedding([np.asarray(c.features["r"], dtype=np.float32) for c in clips], weights)
    d = mean_embedding([np.asarray(c.features["d"], dtype=np.float32) for c in clips], weights)
    return Embeddings(r=r, d=d)


def _median(values: list[float]) -> float | None:
    return round(float(np.median(values)), 2) if values else None


def traits_of(clips: Sequence[StoredClip]) -> dict[str, float | None]:
    """The profile's pitch and rate: medians of the clips' medians, the lowest low and the highest high."""
    def each(name: str) -> list[float]:
        return [float(v) for c in clips if (v := c.features.get("traits", {}).get(name)) is not None]

    lows, highs = each("pitch_low_hz"), each("pitch_high_hz")
    return {
        "pitch_median_hz": _median(each("pitch_median_hz")),
        "pitch_low_hz": round(min(lows), 2) if lows else None,
        "pitch_high_hz": round(max(highs), 2) if highs else None,
        "speaking_rate": _median(each("speaking_rate")),
    }


def clip_json(clip: StoredClip) -> dict[str, Any]:
    """A clip as the API shows it (no embeddings: they are the person's voiceprint and stay on the server,
    except in their own data export)."""
    return {"id": str(clip.id), "source": clip.source, "sentence": clip.sentence, "seconds": round(clip.seconds, 2),
            "speech_s": round(clip.speech_s, 2), "quality": clip.features.get("quality"),
            "created_at": clip.created_at.isoformat()}


def profile_json(clips: Sequence[StoredClip]) -> dict[str, Any] | None:
    """The profile as the API shows it (``None`` without clips)."""
    if not clips:
        return None
    speech = sum(c.speech_s for c in clips)
    return {
        "clips": [clip_json(c) for c in clips],
        "speech_s": round(speech, 2),
        "ready": speech >= READY_SPEECH_S,
        "traits": traits_of(clips),
        "updated_at": max(c.created_at for c in clips).isoformat(),
    }
