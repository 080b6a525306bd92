"""Silero VAD on onnxruntime: one shared session, per-stream recurrent state."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import numpy.typing as npt
import onnxruntime as ort

from models.catalog import Role
from models.executors import ComputeLane
from models.locate import locate

SAMPLE_RATE = 16_000
FRAME_SAMPLES = 512  # 32 ms at 16 kHz: the only frame size the 16 kHz model accepts
CONTEXT_SAMPLES = 64  # the tail of the previous frame the model expects in front of each frame
_MODEL_FILE = "silero_vad.onnx"

FloatArray = npt.NDArray[np.float32]


class VadStream:
    """Speech probability of consecutive 32 ms frames of one audio stream.

    Holds only the recurrent state and the 64-sample context; the ONNX session is shared, so any number
    of streams (one per call) can exist. A stream is not thread-safe: feed it from one place at a time.
    """

    def __init__(self, vad: SileroVad) -> None:
        self._vad = vad
        self._state = np.zeros((2, 1, 128), dtype=np.float32)
        self._context = np.zeros(CONTEXT_SAMPLES, dtype=np.float32)

    def reset(self) -> None:
        """Forget the stream's history (e.g. after a long gap in the audio)."""
        self._state = np.zeros((2, 1, 128), dtype=np.float32)
        self._context = np.zeros(CONTEXT_SAMPLES, dtype=np.float32)

    def prob(self, frame: FloatArray) -> float:
        """Speech probability in [0, 1] for the next frame.

        Args:
            frame: Exactly 512 float32 samples at 16 kHz in [-1, 1], following the previous frame.
        """
        samples = np.asarray(frame, dtype=np.float32).reshape(-1)
        if samples.shape[0] != FRAME_SAMPLES:
            raise ValueError(f"VAD frames are {FRAME_SAMPLES} samples at 16 kHz, got {samples.shape[0]}")
        window = np.concatenate((self._context, samples))[np.newaxis, :]
        prob, self._state = self._vad.run_window(window, self._state)
        self._context = samples[-CONTEXT_SAMPLES:].copy()
        return prob

    async def aprob(self, frame: FloatArray) -> float:
        """:meth:`prob` on the VAD's worker thread."""
        return await self._vad.lane.run(self.prob, frame)


class SileroVad:
    """A loaded Silero VAD model.

    Args:
        model_dir: Directory holding ``silero_vad.onnx``.
        intra_threads: onnxruntime intra-op threads; one is plenty for a 0.1 ms model.
    """

    def __init__(self, model_dir: Path, *, intra_threads: int = 1) -> None:
        options = ort.SessionOptions()
        options.intra_op_num_threads = intra_threads
        options.inter_op_num_threads = 1
        self._session = ort.InferenceSession(
            str(model_dir / _MODEL_FILE), sess_options=options, providers=["CPUExecutionProvider"]
        )
        self._sr = np.array(SAMPLE_RATE, dtype=np.int64)
        self.lane = ComputeLane("vad")

    def new_stream(self) -> VadStream:
        """A fresh stream with zeroed state; create one per audio source."""
        self.lane.check_open()
        return VadStream(self)

    def run_window(self, window: FloatArray, state: FloatArray) -> tuple[float, FloatArray]:
        """One model step: ``(1, 576)`` context+frame window and ``(2, 1, 128)`` state in, prob and state out.

        Low level; :class:`VadStream` keeps the bookkeeping. onnxruntime sessions are safe to run from
        several threads at once.
        """
        self.lane.check_open()
        out, new_state = self._session.run(None, {"input": window, "state": state, "sr": self._sr})
        return float(out[0, 0]), np.asarray(new_state, dtype=np.float32)

    def speech_prob(self, audio: FloatArray) -> FloatArray:
        """Per-frame speech probabilities of a whole 16 kHz utterance, from a fresh stream.

        The last partial frame is zero-padded. Returns one float32 per 32 ms frame.
        """
        samples = np.asarray(audio, dtype=np.float32).reshape(-1)
        padded = np.pad(samples, (0, -len(samples) % FRAME_SAMPLES))
        stream = self.new_stream()
        return np.array(
            [stream.prob(padded[i : i + FRAME_SAMPLES]) for i in range(0, len(padded), FRAME_SAMPLES)],
            dtype=np.float32,
        )

    async def aspeech_prob(self, audio: FloatArray) -> FloatArray:
        """:meth:`speech_prob` on the VAD's worker thread."""
        return await self.lane.run(self.speech_prob, audio)

    def close(self, timeout: float | None = None) -> bool:
        """Stop the worker thread (waiting at most ``timeout`` s); the handle and its streams are unusable
        afterwards. Returns False when a call was still running."""
        return True if self.lane.closed else self.lane.close(timeout)

    def __enter__(self) -> SileroVad:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


def load_vad(models_dir: Path | None, which: str | Path, *, intra_threads: int = 1) -> SileroVad:
    """Load the VAD of profile/model/directory ``which`` (see :func:`models.locate.locate`).

    Raises:
        ModelMissingError: Not provisioned.
    """
    _, model_dir = locate(models_dir, Role.VAD, which)
    return SileroVad(model_dir, intra_threads=intra_threads)
