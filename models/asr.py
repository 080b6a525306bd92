"""Whisper speech recognition with faster-whisper (CTranslate2, int8 on CPU)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

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
        self._tokenizer: Any = None  # faster_whisper Tokenizer, built on first use

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

    def transcribe_utterance(
        self,
        audio: npt.NDArray[np.float32],
        *,
        language: str = "en",
        pad_s: float = 1.5,
        no_repeat_ngram_size: int = 0,
    ) -> Transcript:
        """Decode one short utterance (up to ~28 s) with an encoder window sized to it. Blocking.

        faster-whisper always pads audio to Whisper's 30 s window, so the encoder costs the same for a 2 s
        question as for 30 s of speech (~250 ms tiny, ~500 ms base on 2 cores). CTranslate2 accepts a
        shorter mel window: encoding the utterance plus ``pad_s`` of silence costs a fraction of that and,
        on conversational utterances, gives the same words (``bench/models.py``: 149 ms instead of 497 ms
        for 3.5 s of speech with Whisper base; the tests check the words). Greedy, no timestamps; the
        no-speech probability guards against hallucinating words into noise.

        Args:
            audio: Mono float32 16 kHz samples in [-1, 1]; longer than 28 s falls back to `transcribe`.
            language: ISO code (ignored by English-only models).
            pad_s: Silence appended inside the window; Whisper was trained on padded windows.
        """
        import ctranslate2
        from faster_whisper.tokenizer import Tokenizer

        self.lane.check_open()
        samples = np.asarray(audio, dtype=np.float32).reshape(-1)
        duration = len(samples) / SAMPLE_RATE
        if duration > 28.0:
            return self.transcribe(samples, language=language)
        model = self._model
        features = model.feature_extractor(samples)  # (n_mels, frames), 100 frames per second
        frames = min(3000, features.shape[1] + int(pad_s * 100))
        frames += frames % 2  # the encoder's stride-2 convolution wants an even length
        window = np.zeros((1, features.shape[0], frames), dtype=np.float32)
        window[0, :, : min(frames, features.shape[1])] = features[:, :frames]
        if self._tokenizer is None:
            multilingual = model.model.is_multilingual
            self._tokenizer = Tokenizer(
                model.hf_tokenizer, multilingual, task="transcribe", language=language if multilingual else None
            )
        tok = self._tokenizer
        result = model.model.generate(
            ctranslate2.StorageView.from_array(window),
            [[*tok.sot_sequence, tok.no_timestamps]],
            beam_size=1,
            # Speech runs at ~3-4 tokens per second; a tight cap stops a decode that starts looping early.
            max_length=min(224, 10 + int(duration * 6)),
            return_scores=True,
            return_no_speech_prob=True,
            suppress_blank=True,
            no_repeat_ngram_size=no_repeat_ngram_size,
        )[0]
        ids = [t for t in result.sequences_ids[0] if t < tok.eot]
        text = drop_repetition(tok.decode(ids).strip(), duration)
        avg_logprob = float(result.scores[0]) if result.scores else 0.0
        no_speech = float(result.no_speech_prob)
        if no_speech > 0.6 and avg_logprob < -1.0:  # faster-whisper's own silence rule
            text = ""
        segment = Segment(0.0, duration, text, avg_logprob, no_speech)
        return Transcript(text=text, segments=(segment,) if text else (), duration=duration, language=language)

    async def atranscribe_utterance(self, audio: npt.NDArray[np.float32], *, language: str = "en") -> Transcript:
        """:meth:`transcribe_utterance` on the ASR worker thread."""
        return await self.lane.run(self.transcribe_utterance, audio, language=language)

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

    @property
    def backlog(self) -> int:
        """Decodes submitted to this model and not finished (queued or running)."""
        return self.lane.pending

    def close(self, timeout: float | None = None) -> bool:
        """Wait for a running transcription (at most ``timeout`` s), stop the worker and release the model.
        Idempotent. Returns False when a transcription was still running (it keeps its own model reference)."""
        if self.lane.closed:
            return True
        stopped = self.lane.close(timeout)
        del self._model
        return stopped

    def __enter__(self) -> WhisperAsr:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


# Shortest stretch of audio one repeated word takes: fast speech runs ~3-4 words per second, and the VAD adds
# padding around every utterance, so a real "no, no, no" always has more audio than this per word.
MIN_WORD_S = 0.3


def drop_repetition(text: str, duration: float | None = None) -> str:
    """Cut a decode that loops ("Why is the sky blue? Why is the sky blue? Why is") back to its first pass.

    Whisper on a short window sometimes restarts the utterance when it reaches the end of the audio; a
    repeated word sequence of three or more words that starts the text again is that, never speech. On a
    one-word utterance the loop repeats that word ("Stop. Stop. Stop."): a text that is one or two words
    said three or more times, faster than anyone can say them (``MIN_WORD_S`` each) in ``duration``
    seconds of audio, is cut to its first pass too. A real "no, no, no" takes long enough to be kept.
    """
    words = _first_pass(text.split())
    if duration is not None and len(words) >= 3 and len(words) * MIN_WORD_S > duration:
        bare = [w.strip(".,!?;:").lower() for w in words]
        for size in (1, 2):
            if len(bare) >= 3 * size and all(bare[i] == bare[i % size] for i in range(len(bare))):
                return " ".join(words[:size]).rstrip(",;:")
    return " ".join(words)


def _first_pass(words: list[str]) -> list[str]:
    """``words`` up to where a block of three or more words repeats, or where the text starts over."""
    n = len(words)
    for size in range(n - 3, 2, -1):  # restarted: "A B C D E. A B C" -> "A B C D E."
        if 2 * size > n and words[size : size + 3] == words[:3]:
            return words[:size]
    for size in range(n // 2, 2, -1):  # looped: "... A B C A B C ..." -> "... A B C"
        for start in range(0, n - 2 * size + 1):
            head = words[start : start + size]
            if words[start + size : start + 2 * size] == head:
                return words[: start + size]
    return words


def load_asr(
    models_dir: Path | None, which: str | Path, *, cpu_threads: int = 2, compute_type: str = "int8"
) -> WhisperAsr:
    """Load the ASR model of profile/model/directory ``which`` (see :func:`models.locate.locate`).

    Raises:
        ModelMissingError: Not provisioned.
    """
    _, model_dir = locate(models_dir, Role.ASR, which)
    return WhisperAsr(model_dir, cpu_threads=cpu_threads, compute_type=compute_type)
