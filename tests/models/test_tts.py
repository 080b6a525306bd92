"""Both TTS voices (Piper and Kokoro) on real text."""

from __future__ import annotations

import numpy as np
import pytest

from models.registry import ModelSet
from models.tts import KokoroTts, TtsVoice, speech_chunks

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
