"""Speech fixtures made on the spot with espeak-ng (no files committed, nothing downloaded)."""

from __future__ import annotations

import functools
import io
import shutil
import subprocess
import wave

import numpy as np
import numpy.typing as npt

from pipeline.audio import resample, to_int16


@functools.lru_cache(maxsize=64)
def spoken(text: str, rate: int = 16_000, words_per_minute: int = 160) -> npt.NDArray[np.int16]:
    """``text`` spoken by espeak-ng, as mono int16 at ``rate``."""
    exe = shutil.which("espeak-ng")
    if exe is None:
        raise RuntimeError("espeak-ng is not installed (make install provides it)")
    wav = subprocess.run([exe, "-s", str(words_per_minute), "--stdout", text], capture_output=True, check=True).stdout
    with wave.open(io.BytesIO(wav)) as w:
        src_rate = w.getframerate()
        pcm = np.frombuffer(w.readframes(w.getnframes()), np.int16)
    out = to_int16(resample(pcm.astype(np.float32) / 32768, src_rate, rate))
    out.setflags(write=False)
    return out
