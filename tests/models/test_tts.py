"""Both TTS voices (Piper and Kokoro) on real text."""

from __future__ import annotations

import io
import json
import pickle
import re
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pytest

from models.catalog import PIPER_ONNX
from models.executors import ModelClosedError
from models.registry import ModelSet
from models.tts import (
    KEEP_LEAD_S,
    KEEP_TAIL_S,
    STYLE_SHAPE,
    KokoroTts,
    KokoroVoice,
    PiperTts,
    TtsVoice,
    pack_from_bytes,
    pack_to_bytes,
    piper_config,
    speech_chunks,
    trim_silence,
)

from .conftest import espeak

pytestmark = pytest.mark.models

SENTENCE = "This is a short test of the speech system."


def _voices(models: ModelSet) -> list[TtsVoice]:
    assert models.tts_fast is not None and models.tts_quality is not None
    return [models.tts_fast, models.tts_quality]


def _rms(audio: np.ndarray) -> float:
    return float(np.sqrt(np.mean(np.square(audio, dtype=np.float64))))


@pytest.mark.parametrize("role", ["tts_fast", "tts_quality"])
def test_voice_speaks_audibly_with_plausible_length(ci_models: ModelSet, role: str) -> None:
    """Each voice turns a sentence into audible float32 audio lasting about as long as espeak takes."""
    voice: TtsVoice = getattr(ci_models, role)
    audio = voice.synthesize(SENTENCE)
    reference, reference_rate = espeak(SENTENCE)
    seconds = len(audio) / voice.sample_rate
    assert audio.dtype == np.float32 and audio.ndim == 1
    assert _rms(audio) > 0.02
    assert np.abs(audio).max() <= 1.0
    assert 0.5 * len(reference) / reference_rate < seconds < 2.0 * len(reference) / reference_rate
    assert 0.03 * len(SENTENCE) < seconds < 0.2 * len(SENTENCE)


def test_sample_rates_are_the_voices_own(ci_models: ModelSet) -> None:
    """Piper's joe voice runs at 22.05 kHz and Kokoro at 24 kHz."""
    assert [voice.sample_rate for voice in _voices(ci_models)] == [22_050, 24_000]


@pytest.mark.parametrize("role", ["tts_fast", "tts_quality"])
def test_stream_yields_one_chunk_per_sentence(ci_models: ModelSet, role: str) -> None:
    """stream() produces audible audio sentence by sentence, so playback can start after the first."""
    voice: TtsVoice = getattr(ci_models, role)
    chunks = list(voice.stream("Hello there. How are you today? I am fine."))
    assert len(chunks) == 3
    assert all(_rms(chunk) > 0.02 for chunk in chunks)


async def test_async_stream_delivers_chunks(ci_models: ModelSet) -> None:
    """astream() hands the chunks to the event loop in order, from the voice's worker."""
    assert ci_models.tts_fast is not None
    chunks = [chunk async for chunk in ci_models.tts_fast.astream("One sentence. And another one.")]
    assert len(chunks) == 2 and all(chunk.size for chunk in chunks)


def test_kokoro_blend_is_a_weighted_style(ci_models: ModelSet) -> None:
    """A blend of styles is their weighted mean and is accepted as a voice."""
    kokoro = ci_models.tts_quality
    assert isinstance(kokoro, KokoroTts)
    assert {"jf_alpha", "jm_kumo"} <= set(kokoro.voices)
    mixed = kokoro.blend({"jf_alpha": 3.0, "jm_kumo": 1.0})
    expected = 0.75 * kokoro.style("jf_alpha") + 0.25 * kokoro.style("jm_kumo")
    np.testing.assert_allclose(mixed, expected, rtol=1e-6)
    previous = kokoro.name
    try:
        kokoro.set_voice({"jf_alpha": 0.5, "jm_kumo": 0.5})
        assert _rms(kokoro.synthesize("Blended voice.")) > 0.02
    finally:
        kokoro.set_voice(previous)


def test_speech_chunks_split_sentences_and_long_clauses() -> None:
    """Text splits at sentence ends, long sentences also at commas, and unspeakable bits are dropped."""
    assert speech_chunks("Hi there. How are you?  Fine!") == ["Hi there.", "How are you?", "Fine!"]
    long = "This sentence is long, " * 10 + "and it ends here."
    assert all(len(chunk) <= 160 for chunk in speech_chunks(long))
    assert speech_chunks("... !") == []
    assert speech_chunks("") == []


# --- voices on a shared Kokoro engine, stored packs, Piper voices from bytes ---------------------------------


def test_kokoro_voice_shares_the_engine(ci_models: ModelSet) -> None:
    """A KokoroVoice is a TtsVoice on the engine's lane with its own style and speed; closing it leaves the
    engine working, and it speaks exactly what synthesize_with makes with the same style and speed."""
    kokoro = ci_models.tts_quality
    assert isinstance(kokoro, KokoroTts)
    style = kokoro.blend({"jf_alpha": 0.5, "jm_kumo": 0.5})
    voice = kokoro.voice(style, speed=1.2, name="mine")
    assert isinstance(voice, TtsVoice) and isinstance(voice, KokoroVoice)
    assert voice.lane is kokoro.lane and voice.name == "mine" and voice.sample_rate == 24_000
    audio = voice.synthesize("Shared engine.")
    np.testing.assert_array_equal(audio, kokoro.synthesize_with("Shared engine.", style, speed=1.2))
    slower = kokoro.synthesize_with("Shared engine.", style, speed=0.8)
    assert len(slower) > 1.2 * len(audio)  # speed is applied
    assert voice.close() and voice.close()
    with pytest.raises(ModelClosedError):
        voice.synthesize("Closed.")
    assert not kokoro.lane.closed and _rms(kokoro.synthesize("Still here.")) > 0.02


def test_kokoro_styles_are_read_only(ci_models: ModelSet) -> None:
    """styles exposes the stock packs without letting a caller change them."""
    kokoro = ci_models.tts_quality
    assert isinstance(kokoro, KokoroTts)
    assert set(kokoro.styles) == set(kokoro.voices)
    pack = kokoro.styles["jf_alpha"]
    assert pack.shape == STYLE_SHAPE and pack.dtype == np.float32
    with pytest.raises(ValueError):
        pack[0, 0, 0] = 1.0
    with pytest.raises(TypeError):
        kokoro.styles["x"] = pack  # type: ignore[index]


def test_kokoro_rejects_bad_styles_and_speeds(ci_models: ModelSet) -> None:
    """A style of the wrong shape, dtype or with NaN, and a speed outside 0.5-2.0, are refused before synthesis."""
    kokoro = ci_models.tts_quality
    assert isinstance(kokoro, KokoroTts)
    good = kokoro.styles["jf_alpha"]
    nan = np.where(np.arange(256) == 3, np.nan, good).astype(np.float32)
    bad_styles: list[npt.NDArray[Any]] = [good[:100], good.astype(np.float64), nan]
    for bad in bad_styles:
        with pytest.raises(ValueError, match="style"):
            kokoro.synthesize_with("No.", bad)
    with pytest.raises(ValueError, match="speed"):
        kokoro.voice("jf_alpha", speed=3.0)
    with pytest.raises(KeyError):
        kokoro.voice("no_such_pack")


def test_pack_round_trip_is_bit_exact(ci_models: ModelSet) -> None:
    """pack_to_bytes/pack_from_bytes give back the very same bits (including a blend's), as a writable array."""
    kokoro = ci_models.tts_quality
    assert isinstance(kokoro, KokoroTts)
    rng = np.random.default_rng(0)
    for style in (
        kokoro.styles["jm_kumo"],
        kokoro.blend({"jf_alpha": 0.3, "jm_kumo": 0.7}),
        rng.normal(size=STYLE_SHAPE).astype(np.float32),
    ):
        restored = pack_from_bytes(pack_to_bytes(style))
        assert restored.dtype == np.float32 and restored.tobytes() == style.tobytes()
        assert restored.flags.writeable


def test_pack_validation() -> None:
    """Anything but a finite float32 [510, 1, 256] .npy is refused with ValueError, pickles included."""
    good = np.zeros(STYLE_SHAPE, np.float32)
    bad_packs: list[npt.NDArray[Any]] = [
        np.zeros((510, 256), np.float32),
        good.astype(np.float16),
        np.full(STYLE_SHAPE, np.inf, np.float32),
    ]
    for bad in bad_packs:
        with pytest.raises(ValueError):
            pack_to_bytes(bad)
        buffer = io.BytesIO()
        np.save(buffer, bad)
        with pytest.raises(ValueError):
            pack_from_bytes(buffer.getvalue())
    pickled = io.BytesIO()
    np.save(pickled, np.array([{"a": 1}], dtype=object), allow_pickle=True)
    for data in (b"", b"not a pack", pickle.dumps(good), pickled.getvalue(), pack_to_bytes(good)[:-10]):
        with pytest.raises(ValueError):
            pack_from_bytes(data)


def _joe(models_dir: Path) -> tuple[bytes, bytes]:
    onnx = models_dir / "tts-piper-joe" / PIPER_ONNX
    return onnx.read_bytes(), Path(f"{onnx}.json").read_bytes()


def test_piper_from_bytes_speaks(models_dir: Path, ci_models: ModelSet) -> None:
    """The provisioned joe voice loaded from bytes (as an uploaded voice is) speaks like the one loaded from disk."""
    onnx, raw = _joe(models_dir)
    with PiperTts.from_bytes(onnx, piper_config(raw), name="joe-upload", intra_threads=1) as voice:
        assert voice.name == "joe-upload" and voice.sample_rate == 22_050
        audio = voice.synthesize(SENTENCE)
        assert _rms(audio) > 0.02
        assert ci_models.tts_fast is not None
        reference = ci_models.tts_fast.synthesize(SENTENCE)
        assert abs(len(audio) - len(reference)) < 0.2 * len(reference)  # Piper samples durations, so not equal
    with pytest.raises(ValueError, match="ONNX"):
        PiperTts.from_bytes(b"not a model", piper_config(raw), name="broken")


def test_piper_config_checks_what_synthesis_needs(models_dir: Path) -> None:
    """The real config passes; each missing or malformed required field is named in a ValueError."""
    _, raw = _joe(models_dir)
    config = piper_config(raw)
    assert config["audio"]["sample_rate"] == 22_050
    broken: list[tuple[object, str]] = [
        ({**config, "audio": {}}, "audio.sample_rate"),
        ({**config, "audio": {"sample_rate": "22050"}}, "audio.sample_rate"),
        ({**config, "phoneme_id_map": {}}, "phoneme_id_map"),
        ({**config, "phoneme_id_map": {"a": "1"}}, "phoneme_id_map"),
        ({**config, "num_symbols": 3}, "num_symbols"),
        ({**config, "espeak": {}}, "espeak.voice"),
        ([1, 2], "JSON object"),
    ]
    for bad, field in broken:
        with pytest.raises(ValueError, match=re.escape(field)):
            piper_config(json.dumps(bad).encode())
    with pytest.raises(ValueError, match="UTF-8 JSON"):
        piper_config(b"{not json")
    with pytest.raises(ValueError, match="UTF-8 JSON"):
        piper_config(b"\xff\xfe")


def test_trim_silence_keeps_a_short_lead_and_tail() -> None:
    """Silence at the edges is cut to the kept margins; speech and all-silent audio are left whole."""
    rate = 1000
    tone = np.full(500, 0.5, dtype=np.float32)
    padded = np.concatenate([np.zeros(300, np.float32), tone, np.zeros(400, np.float32)])
    trimmed = trim_silence(padded, rate)
    assert len(trimmed) == int(KEEP_LEAD_S * rate) + 500 + int(KEEP_TAIL_S * rate)
    assert np.array_equal(trimmed[int(KEEP_LEAD_S * rate) : int(KEEP_LEAD_S * rate) + 500], tone)
    silent = np.zeros(100, np.float32)
    assert trim_silence(silent, rate) is silent
    assert np.array_equal(trim_silence(tone, rate), tone)


def test_kokoro_chunks_start_with_sound(ci_models: ModelSet) -> None:
    """Kokoro's ~0.2 s lead-in pad is cut: a reply's first sound comes within 50 ms of its first sample."""
    kokoro = ci_models.tts_quality
    assert kokoro is not None
    for text in ("Hello there,", "Sure!"):
        audio = kokoro.synthesize(text)
        loud = np.flatnonzero(np.abs(audio) > 0.015)
        assert loud[0] / kokoro.sample_rate <= 0.05, text
        assert (len(audio) - loud[-1]) / kokoro.sample_rate <= KEEP_TAIL_S + 0.01, text
