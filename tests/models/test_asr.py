"""Whisper transcription on real audio."""

from __future__ import annotations

import re
import threading
from typing import Any

import numpy as np
import numpy.typing as npt
import pytest

from models.registry import ModelSet

from .conftest import SPOKEN_TEXT

pytestmark = pytest.mark.models


def _words(text: str) -> list[str]:
    return re.findall(r"[a-z']+", text.lower())


def test_transcribes_spoken_sentence(ci_models: ModelSet, speech_16k: npt.NDArray[np.float32]) -> None:
    """tiny.en turns espeak's rendering of the test sentence back into exactly its words."""
    assert ci_models.asr is not None
    transcript = ci_models.asr.transcribe(speech_16k)
    assert _words(transcript.text) == _words(SPOKEN_TEXT)
    assert transcript.duration == pytest.approx(len(speech_16k) / 16_000)
    assert transcript.segments and transcript.segments[0].start >= 0.0


def test_silence_gives_no_words_of_the_sentence(ci_models: ModelSet) -> None:
    """Silence does not produce the test sentence (guards against a cached or stale result)."""
    assert ci_models.asr is not None
    transcript = ci_models.asr.transcribe(np.zeros(16_000, dtype=np.float32))
    assert "kitchen" not in transcript.text.lower()


async def test_async_transcribe_runs_on_worker(
    ci_models: ModelSet, speech_16k: npt.NDArray[np.float32], monkeypatch: pytest.MonkeyPatch
) -> None:
    """atranscribe decodes on the ASR worker thread, not the event loop, and gives the sync result."""
    asr = ci_models.asr
    assert asr is not None
    threads: list[str] = []
    original = asr.transcribe

    def spy(*args: Any, **kwargs: Any) -> Any:
        threads.append(threading.current_thread().name)
        return original(*args, **kwargs)

    monkeypatch.setattr(asr, "transcribe", spy)
    transcript = await asr.atranscribe(speech_16k)
    assert _words(transcript.text) == _words(SPOKEN_TEXT)
    assert threads and threads[0].startswith("soma-asr")


def test_short_window_decode_gives_the_words(ci_models: ModelSet, speech_16k: npt.NDArray[np.float32]) -> None:
    """transcribe_utterance (encoder window sized to the audio) gives the same words as the 30 s window."""
    assert ci_models.asr is not None
    transcript = ci_models.asr.transcribe_utterance(speech_16k)
    assert _words(transcript.text) == _words(SPOKEN_TEXT)
    assert ci_models.asr.transcribe_utterance(np.zeros(16_000, dtype=np.float32)).text == ""


@pytest.mark.parametrize(
    ("text", "duration", "expected"),
    [
        ("Why is the sky blue? Why is the sky blue? Why is", 2.0, "Why is the sky blue?"),
        ("Hello Hello Hello Hello Hello Hello Hello", 0.8, "Hello"),
        ("Stop. Stop. Stop. Stop", 0.75, "Stop."),
        ("No, no, no.", 1.5, "No, no, no."),  # said slowly enough to be real speech
        ("I said I said hello", None, "I said I said hello"),
    ],
)
def test_drop_repetition(text: str, duration: float | None, expected: str) -> None:
    """A decode that loops is cut to its first pass; real repeated words said at a human pace are kept."""
    from models.asr import drop_repetition

    assert drop_repetition(text, duration) == expected
