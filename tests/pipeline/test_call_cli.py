"""`soma call`: a real user's first conversation — WAV files in, printed conversation and reply audio out."""

from __future__ import annotations

import shutil
import subprocess
import wave
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import REPO, SOMA

pytestmark = pytest.mark.models


def _espeak_wav(path: Path, text: str) -> Path:
    """espeak-ng's own output: 22.05 kHz mono 16-bit, a rate the call resamples to 16 kHz."""
    exe = shutil.which("espeak-ng")
    assert exe, "espeak-ng is installed by make"
    subprocess.run([exe, "-s", "160", "-w", str(path), text], check=True)
    return path


def _call(*args: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*SOMA, "call", *map(str, args)], cwd=REPO, capture_output=True, text=True, timeout=180, check=False
    )


def test_call_answers_a_spoken_then_a_typed_turn(tmp_path: Path) -> None:
    """A spoken question is heard and answered aloud, then a typed follow-up is answered in the same call;
    the avatar's audio is written as a WAV with speech in it."""
    question = _espeak_wav(tmp_path / "q.wav", "What is the capital of France?")
    out = tmp_path / "reply.wav"
    result = _call(question, "--say", "Thank you! And what about Spain?", "--profile", "ci", "--out", out)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    heard = [line for line in lines if line.startswith("you  [1]:")]
    assert heard and "france" in heard[0].lower(), result.stdout
    assert [line for line in lines if line.startswith("soma [1]:") and len(line) > len("soma [1]: ")]
    assert [line for line in lines if line.startswith("you  [2]:") and "Spain" in line], result.stdout
    assert [line for line in lines if line.startswith("soma [2]:")], result.stdout
    assert "voice-to-voice" in result.stdout
    with wave.open(str(out)) as w:
        assert w.getframerate() == 24_000
        audio = np.frombuffer(w.readframes(w.getnframes()), np.int16)
    assert np.abs(audio).max() > 1000


def test_call_rejects_bad_input_with_one_line(tmp_path: Path) -> None:
    """No turns, a missing file or a file that is not a WAV: one `soma: error:` line and a non-zero exit."""
    bogus = tmp_path / "notes.wav"
    bogus.write_text("not audio")
    for args, needle in [
        ((), "give at least one WAV file"),
        ((tmp_path / "missing.wav",), "no such file"),
        ((bogus,), "not a PCM WAV file"),
    ]:
        result = _call(*args, "--profile", "ci") if args else _call("--profile", "ci")
        assert result.returncode != 0 and needle in result.stderr, (args, result.stderr)
        assert "Traceback" not in result.stderr
