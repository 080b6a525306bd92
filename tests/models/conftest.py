"""Fixtures for the model tests: the real ci models, provisioned on first use, and espeak-ng speech."""

from __future__ import annotations

import io
import shutil
import subprocess
import wave
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import numpy.typing as npt
import pytest

from models.paths import default_models_dir
from models.provision import provision
from models.registry import ModelSet, load_models

SPOKEN_TEXT = "Please turn on the kitchen lights."
"""A sentence whisper tiny.en transcribes exactly from espeak-ng's voice (checked at several rates)."""


def espeak(text: str, *, rate: int | None = None) -> tuple[npt.NDArray[np.float32], int]:
    """``text`` spoken by espeak-ng: mono float32 samples and their sample rate (22.05 kHz)."""
    if shutil.which("espeak-ng") is None:
        pytest.skip("espeak-ng is not installed (apt-get install espeak-ng)")
    args = ["espeak-ng", "--stdout"] + (["-s", str(rate)] if rate else []) + [text]
    raw = subprocess.run(args, capture_output=True, check=True).stdout
    with wave.open(io.BytesIO(raw)) as wav:
        rate_hz = wav.getframerate()
        pcm = np.frombuffer(wav.readframes(wav.getnframes()), dtype=np.int16)
    return (pcm.astype(np.float32) / 32768.0), rate_hz


def resample(audio: npt.NDArray[np.float32], src: int, dst: int) -> npt.NDArray[np.float32]:
    """Linear-interpolation resampling; good enough for speech going into VAD/ASR in tests."""
    positions = np.arange(0, len(audio) * dst / src) * src / dst
    return np.interp(positions, np.arange(len(audio)), audio).astype(np.float32)


def espeak_16k(text: str, *, rate: int | None = None) -> npt.NDArray[np.float32]:
    """``text`` spoken by espeak-ng at 16 kHz."""
    audio, rate_hz = espeak(text, rate=rate)
    return resample(audio, rate_hz, 16_000)


@pytest.fixture(scope="session")
def models_dir() -> Path:
    """The shared models directory with the ci profile provisioned (a no-op when it already is)."""
    directory = default_models_dir()
    provision("ci", directory, progress=False)
    return directory


@pytest.fixture(scope="session")
def ci_models(models_dir: Path) -> Iterator[ModelSet]:
    """Every loadable ci model, loaded once for the session."""
    models = load_models(models_dir, "ci")
    yield models
    models.close()


@pytest.fixture(scope="session")
def speech_16k() -> npt.NDArray[np.float32]:
    """:data:`SPOKEN_TEXT` spoken by espeak-ng, 16 kHz mono float32."""
    return espeak_16k(SPOKEN_TEXT)
