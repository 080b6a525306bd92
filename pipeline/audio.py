"""Audio at the edges: sample-format conversion and streaming resampling.

Everything inside the pipeline runs at 16 kHz mono int16 (VAD, ASR); the transport's rates are converted
here, once, on the way in and out. Resamplers are streaming (they keep filter state across chunks, so there
are no clicks at chunk boundaries).
"""

from __future__ import annotations

import io
import wave

import numpy as np
import numpy.typing as npt
import soxr

from pipeline.frames import Pcm

PIPELINE_RATE = 16_000
SUPPORTED_RATES = frozenset({8_000, 11_025, 12_000, 16_000, 22_050, 24_000, 32_000, 44_100, 48_000})


class AudioFormatError(ValueError):
    """Audio the pipeline cannot use (rate, shape or dtype); the message says what was wrong."""


def to_float(pcm: Pcm) -> npt.NDArray[np.float32]:
    """int16 → float32 in [-1, 1)."""
    return pcm.astype(np.float32) / 32768.0


def to_int16(samples: npt.NDArray[np.float32]) -> Pcm:
    """float32 in [-1, 1] → int16, clipping out-of-range values instead of wrapping around."""
    out: Pcm = np.clip(np.rint(samples * 32767.0), -32768, 32767).astype(np.int16)
    return out


def wav_bytes(pcm: Pcm, rate: int) -> bytes:
    """Mono int16 ``pcm`` as a 16-bit PCM WAV file."""
    out = io.BytesIO()
    with wave.open(out, "wb") as wav:
        wav.setnchannels(1)
        wav.setsampwidth(2)
        wav.setframerate(rate)
        wav.writeframes(np.asarray(pcm, dtype="<i2").tobytes())
    return out.getvalue()


def validate_pcm(pcm: npt.NDArray[np.generic], sample_rate: int) -> Pcm:
    """Check an input chunk and return it as 1-D int16.

    Raises:
        AudioFormatError: Unsupported rate, not 1-D/mono, or not integer PCM.
    """
    if sample_rate not in SUPPORTED_RATES:
        raise AudioFormatError(f"unsupported sample rate {sample_rate} Hz; use one of {sorted(SUPPORTED_RATES)}")
    if pcm.ndim != 1:
        raise AudioFormatError(f"audio must be mono 1-D PCM, got shape {pcm.shape}")
    if pcm.dtype != np.int16:
        raise AudioFormatError(f"audio must be 16-bit PCM, got {pcm.dtype}")
    return pcm.astype(np.int16, copy=False)


class StreamResampler:
    """Converts a stream of int16 chunks from one rate to another, keeping state between chunks.

    Downsampling uses soxr's low-quality preset (6 ms delay, with an anti-alias filter); upsampling the cubic
    "quick" preset (~0 ms delay): on the input path every millisecond of delay is added to barge-in and
    endpointing latency, and 16 kHz speech needs no more.
    """

    def __init__(self, in_rate: int, out_rate: int) -> None:
        self.in_rate = in_rate
        self.out_rate = out_rate
        self._quality = "LQ" if out_rate < in_rate else "QQ"
        self._stream = self._new_stream()

    def _new_stream(self) -> soxr.ResampleStream | None:
        if self.in_rate == self.out_rate:
            return None
        return soxr.ResampleStream(self.in_rate, self.out_rate, 1, dtype="int16", quality=self._quality)

    def process(self, pcm: Pcm) -> Pcm:
        """Resample one chunk (may return slightly more or fewer samples than the exact ratio)."""
        if self._stream is None:
            return pcm
        out: Pcm = self._stream.resample_chunk(pcm)
        return out

    def flush(self) -> Pcm:
        """Return what the filter still holds at the end of a stream, and reset it."""
        if self._stream is None:
            return np.zeros(0, np.int16)
        out: Pcm = self._stream.resample_chunk(np.zeros(0, np.int16), last=True)
        self._stream = self._new_stream()
        return out


def resample(samples: npt.NDArray[np.float32], in_rate: int, out_rate: int) -> npt.NDArray[np.float32]:
    """Resample a whole float32 signal (TTS output) with high quality; not for streaming."""
    if in_rate == out_rate:
        return samples
    out: npt.NDArray[np.float32] = soxr.resample(samples, in_rate, out_rate, quality="HQ")
    return out.astype(np.float32, copy=False)


def rms_dbfs(pcm: Pcm) -> float:
    """Loudness of a chunk in dBFS (−inf for digital silence)."""
    if len(pcm) == 0:
        return float("-inf")
    rms = float(np.sqrt(np.mean(np.square(pcm.astype(np.float64))))) / 32768.0
    return 20.0 * np.log10(rms) if rms > 0 else float("-inf")
