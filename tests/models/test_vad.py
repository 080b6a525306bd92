"""Silero VAD on real audio."""

from __future__ import annotations

import numpy as np
import numpy.typing as npt
import pytest

from models.registry import ModelSet
from models.vad import FRAME_SAMPLES

pytestmark = pytest.mark.models


def test_finds_speech_in_spoken_sentence(ci_models: ModelSet, speech_16k: npt.NDArray[np.float32]) -> None:
    """Most frames of an espeak sentence are speech, with near-certain peaks."""
    assert ci_models.vad is not None
    probs = ci_models.vad.speech_prob(speech_16k)
    assert len(probs) == -(-len(speech_16k) // FRAME_SAMPLES)
    assert probs.max() > 0.9
    assert (probs > 0.5).mean() > 0.5


def test_no_speech_in_silence_or_faint_noise(ci_models: ModelSet) -> None:
    """Digital silence and faint white noise stay below the speech threshold."""
    assert ci_models.vad is not None
    silence = np.zeros(16_000 * 2, dtype=np.float32)
    noise = (np.random.default_rng(0).standard_normal(16_000 * 2) * 0.003).astype(np.float32)
    assert ci_models.vad.speech_prob(silence).max() < 0.2
    assert ci_models.vad.speech_prob(noise).max() < 0.2


def test_streams_keep_separate_state(ci_models: ModelSet, speech_16k: npt.NDArray[np.float32]) -> None:
    """Interleaving two streams on the shared session gives each the same result as running it alone."""
    vad = ci_models.vad
    assert vad is not None
    frames = [speech_16k[i : i + FRAME_SAMPLES] for i in range(0, len(speech_16k) - FRAME_SAMPLES, FRAME_SAMPLES)]
    silent = np.zeros(FRAME_SAMPLES, dtype=np.float32)
    alone = vad.new_stream()
    expected = [alone.prob(frame) for frame in frames]
    speech_stream, silence_stream = vad.new_stream(), vad.new_stream()
    interleaved = []
    for frame in frames:
        interleaved.append(speech_stream.prob(frame))
        silence_stream.prob(silent)
    np.testing.assert_allclose(interleaved, expected, atol=1e-6)


def test_rejects_wrong_frame_size(ci_models: ModelSet) -> None:
    """Frames must be exactly 512 samples; anything else is a caller bug, reported clearly."""
    assert ci_models.vad is not None
    with pytest.raises(ValueError, match="512"):
        ci_models.vad.new_stream().prob(np.zeros(480, dtype=np.float32))


async def test_async_prob_matches_sync(ci_models: ModelSet, speech_16k: npt.NDArray[np.float32]) -> None:
    """The async frame API (run on the VAD worker) returns what the sync one does."""
    vad = ci_models.vad
    assert vad is not None
    frame = speech_16k[FRAME_SAMPLES * 10 : FRAME_SAMPLES * 11]
    sync_prob = vad.new_stream().prob(frame)
    assert await vad.new_stream().aprob(frame) == pytest.approx(sync_prob, abs=1e-6)
