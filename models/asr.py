"""Whisper speech recognition with faster-whisper (CTranslate2, int8 on CPU)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt
from faster_whisper import WhisperModel

from models.catalog import Role
from models.executors import ComputeLane
from models.locate import locate

SAMPLE_RATE = 16_000


@dataclass(frozen=True, slots=True)
class Segment:
    """One decoded segment; times are seconds from the start of the audio."""

    start: float
    end: float
    text: str
    avg_logprob: float
    no_speech_prob: float


@dataclass(frozen=True, slots=True)
class Transcript:
    """Result of one transcription.

    Attributes:
        text: All segment texts joined and stripped.
        segments: The segments in order.
        duration: Length of the input audio in seconds.
        language: The language decoded (the one asked for, or the detected one).
    """

    text: str
    segments: tuple[Segment, ...]
    duration: float
    language: str


class WhisperAsr:
    """A loaded Whisper model (any CTranslate2 Whisper directory: tiny.en, base, a fine-tune...).

    Args:
        model_dir: CTranslate2 Whisper directory (``model.bin``, ``config.json``, tokenizer, vocabulary).
        cpu_threads: Intra-op threads; 2 fits the 2-core target.
        compute_type: CTranslate2 compute type; ``int8`` is the measured default.
    """

    def __init__(self, model_dir: Path, *, cpu_threads: int = 2, compute_type: str = "int8") -> None:
        self._model = WhisperModel(
            str(model_dir), device="cpu", compute_type=compute_type, cpu_threads=cpu_threads, num_workers=1
        )
        self.lane = ComputeLane("asr")

    def transcribe(
        self,
        audio: npt.NDArray[np.float32],
        *,
        language: str | None = "en",
        beam_size: int = 1,
        initial_prompt: str | None = None,
    ) -> Transcript:
        """Transcribe a whole utterance, blocking until decoding is finished.

        Args:
            audio: Mono float32 samples at 16 kHz in [-1, 1].
            language: ISO code, or ``None`` to detect (costs one extra pass).
            beam_size: 1 is greedy and fastest; larger is slightly more accurate.
            initial_prompt: Text that biases spelling/vocabulary (names, jargon).
        """
        self.lane.check_open()
        samples = np.asarray(audio, dtype=np.float32).reshape(-1)
        segments, info = self._model.transcribe(
            samples,
            language=language,
            beam_size=beam_size,
            initial_prompt=initial_prompt,
            # Utterances are short and already endpointed by our VAD; carrying text between 30 s windows
            # only matters for long-form audio and is a known source of repetition loops.
            condition_on_previous_text=False,
            vad_filter=False,
        )
        # faster-whisper decodes lazily while the generator is iterated: draining it here keeps all the
        # compute on this (worker) thread.
        decoded = tuple(Segment(s.start, s.end, s.text, s.avg_logprob, s.no_speech_prob) for s in list(segments))
        return Transcript(
            text=" ".join(s.text.strip() for s in decoded).strip(),
            segments=decoded,
            duration=len(samples) / SAMPLE_RATE,
            language=info.language,
        )

    async def atranscribe(
        self,
        audio: npt.NDArray[np.float32],
        *,
        language: str | None = "en",
        beam_size: int = 1,
        initial_prompt: str | None = None,
    ) -> Transcript:
        """:meth:`transcribe` on the ASR worker thread."""
        return await self.lane.run(
            self.transcribe, audio, language=language, beam_size=beam_size, initial_prompt=initial_prompt
        )

    def close(self) -> None:
        """Wait for a running transcription, stop the worker and release the model. Idempotent."""
        if not self.lane.closed:
            self.lane.close()
            del self._model

    def __enter__(self) -> WhisperAsr:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


def load_asr(
    models_dir: Path | None, which: str | Path, *, cpu_threads: int = 2, compute_type: str = "int8"
) -> WhisperAsr:
    """Load the ASR model of profile/model/directory ``which`` (see :func:`models.locate.locate`).

    Raises:
        ModelMissingError: Not provisioned.
    """
    _, model_dir = locate(models_dir, Role.ASR, which)
    return WhisperAsr(model_dir, cpu_threads=cpu_threads, compute_type=compute_type)
