"""Text to speech: Piper (fast, 22.05 kHz) and Kokoro-82M (quality, 24 kHz) behind one interface."""

from __future__ import annotations

import json
import re
import threading
from collections.abc import AsyncIterator, Generator, Iterator, Mapping
from pathlib import Path
from typing import Protocol, runtime_checkable

import numpy as np
import numpy.typing as npt
import onnxruntime as ort
from kokoro_onnx import Kokoro
from piper import PiperConfig, PiperVoice, SynthesisConfig

from models.catalog import KOKORO_ONNX, KOKORO_VOICES, PIPER_ONNX, Role
from models.executors import ComputeLane
from models.locate import locate

FloatArray = npt.NDArray[np.float32]
VoiceStyle = str | Mapping[str, float] | FloatArray
"""A Kokoro voice: a style name, a ``{name: weight}`` blend, or a ready style array."""

_SENTENCE_END = re.compile(r"(?<=[.!?;…])\s+|\n+")
_CLAUSE_END = re.compile(r"(?<=[,:—–])\s+")
_SPEAKABLE = re.compile(r"\w")


def speech_chunks(text: str, *, max_chars: int = 160) -> list[str]:
    """Split ``text`` into sentences, and sentences longer than ``max_chars`` at clause punctuation.

    Each chunk is synthesised on its own, so the first chunk's audio is ready after one sentence's
    compute instead of the whole reply's. Chunks without a letter or digit are dropped (nothing to say).
    """
    chunks: list[str] = []
    for sentence in _SENTENCE_END.split(text.strip()):
        pieces = [sentence] if len(sentence) <= max_chars else _CLAUSE_END.split(sentence)
        chunks.extend(piece.strip() for piece in pieces if _SPEAKABLE.search(piece))
    return chunks


@runtime_checkable
class TtsVoice(Protocol):
    """What the pipeline needs from a TTS engine.

    Sync methods block (call them on a worker thread); async ones run on the voice's own worker.
    Audio is mono float32 in [-1, 1] at :attr:`sample_rate`.
    """

    name: str
    sample_rate: int

    def synthesize(self, text: str) -> FloatArray: ...

    def stream(self, text: str) -> Iterator[FloatArray]: ...

    async def asynthesize(self, text: str) -> FloatArray: ...

    def astream(self, text: str) -> AsyncIterator[FloatArray]: ...

    def close(self, timeout: float | None = None) -> bool: ...


class _ChunkedVoice:
    """Shared plumbing: chunked streaming, a worker lane, async wrappers. Subclasses synthesise one chunk."""

    name: str
    sample_rate: int

    def __init__(self, lane_name: str) -> None:
        self.lane = ComputeLane(lane_name)

    def _chunk_audio(self, chunk: str) -> FloatArray:
        raise NotImplementedError

    def stream(self, text: str, *, stop_event: threading.Event | None = None) -> Generator[FloatArray, None, None]:
        """Audio for ``text`` one sentence (or clause of a long sentence) at a time. Blocking."""
        self.lane.check_open()
        for chunk in speech_chunks(text):
            if stop_event is not None and stop_event.is_set():
                return
            audio = self._chunk_audio(chunk)
            if audio.size:
                yield audio

    def synthesize(self, text: str) -> FloatArray:
        """All audio for ``text`` as one array (empty when there is nothing to say). Blocking."""
        parts = list(self.stream(text))
        return np.concatenate(parts) if parts else np.zeros(0, dtype=np.float32)

    async def asynthesize(self, text: str) -> FloatArray:
        """:meth:`synthesize` on the voice's worker thread."""
        return await self.lane.run(self.synthesize, text)

    def astream(self, text: str, *, buffer: int = 2) -> AsyncIterator[FloatArray]:
        """:meth:`stream` on the voice's worker, chunks delivered to the event loop as they are made.

        At most ``buffer`` chunks are synthesised ahead of the consumer; closing or cancelling the
        consumer stops synthesis after the chunk in progress.
        """
        return self.lane.stream(lambda stop: self.stream(text, stop_event=stop), maxsize=buffer)

    def close(self, timeout: float | None = None) -> bool:
        """Wait for the chunk in progress (at most ``timeout`` s) and stop the worker. Idempotent.
        Returns False when a chunk was still being synthesised."""
        return True if self.lane.closed else self.lane.close(timeout)

    def __enter__(self) -> _ChunkedVoice:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


def _session(path: Path, intra_threads: int) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.intra_op_num_threads = intra_threads
    options.inter_op_num_threads = 1
    return ort.InferenceSession(str(path), sess_options=options, providers=["CPUExecutionProvider"])


class PiperTts(_ChunkedVoice):
    """A Piper voice (any Piper ``.onnx`` + ``.onnx.json`` pair).

    Args:
        model_dir: Directory with the voice; ``onnx_name`` selects the file when there are several.
        intra_threads: onnxruntime intra-op threads.
        length_scale: >1 speaks slower, <1 faster; ``None`` keeps the voice's own setting.
    """

    def __init__(
        self,
        model_dir: Path,
        *,
        onnx_name: str | None = None,
        intra_threads: int = 2,
        length_scale: float | None = None,
    ) -> None:
        onnx = model_dir / onnx_name if onnx_name else _only(model_dir, "*.onnx")
        config = json.loads(Path(f"{onnx}.json").read_text(encoding="utf-8"))
        self._voice = PiperVoice(session=_session(onnx, intra_threads), config=PiperConfig.from_dict(config))
        self._synthesis = SynthesisConfig(length_scale=length_scale)
        self.name = onnx.stem
        self.sample_rate = int(self._voice.config.sample_rate)
        super().__init__("tts-piper")

    def _chunk_audio(self, chunk: str) -> FloatArray:
        parts = [c.audio_float_array for c in self._voice.synthesize(chunk, syn_config=self._synthesis)]
        return np.concatenate(parts).astype(np.float32, copy=False) if parts else np.zeros(0, np.float32)


class KokoroTts(_ChunkedVoice):
    """Kokoro-82M speaking English (espeak-ng phonemes) with a selectable or blended style vector.

    Args:
        model_dir: Directory with ``kokoro-v1.0.int8.onnx``, ``voices.npz`` and ``vocab.json``.
        voice: Default style (name, blend or array); see :attr:`voices` for names.
        speed: 0.5-2.0.
        lang: espeak language code used for phonemisation.
        intra_threads: onnxruntime intra-op threads.
    """

    sample_rate = 24_000

    def __init__(
        self,
        model_dir: Path,
        *,
        voice: VoiceStyle = "jf_alpha",
        speed: float = 1.0,
        lang: str = "en-us",
        intra_threads: int = 2,
    ) -> None:
        session = _session(model_dir / KOKORO_ONNX, intra_threads)
        vocab = model_dir / "vocab.json"
        self._kokoro = Kokoro.from_session(
            session, str(model_dir / KOKORO_VOICES), vocab_config=str(vocab) if vocab.is_file() else None
        )
        with np.load(model_dir / KOKORO_VOICES) as npz:
            self._styles: dict[str, FloatArray] = {k: np.asarray(npz[k], dtype=np.float32) for k in npz.files}
        self.speed = speed
        self.lang = lang
        self._style = self.style(voice)
        self.name = voice if isinstance(voice, str) else "blend"
        super().__init__("tts-kokoro")

    @property
    def voices(self) -> tuple[str, ...]:
        """Names of the bundled style vectors."""
        return tuple(self._styles)

    def blend(self, weights: Mapping[str, float]) -> FloatArray:
        """A style that is the weighted mean of named styles, e.g. ``{"jf_alpha": 0.7, "jm_kumo": 0.3}``.

        Raises:
            KeyError: Unknown style name.
            ValueError: Weights do not sum to a positive number.
        """
        total = float(sum(weights.values()))
        if total <= 0:
            raise ValueError("blend weights must sum to a positive number")
        return np.asarray(sum(self._styles[name] * (w / total) for name, w in weights.items()), dtype=np.float32)

    def style(self, voice: VoiceStyle) -> FloatArray:
        """Resolve a name, blend or array to a style array."""
        if isinstance(voice, str):
            return self._styles[voice]
        if isinstance(voice, Mapping):
            return self.blend(voice)
        return np.asarray(voice, dtype=np.float32)

    def set_voice(self, voice: VoiceStyle) -> None:
        """Change the default style used by later calls."""
        self._style = self.style(voice)
        self.name = voice if isinstance(voice, str) else "blend"

    def _chunk_audio(self, chunk: str) -> FloatArray:
        audio, _ = self._kokoro.create(chunk, voice=self._style, speed=self.speed, lang=self.lang)
        return np.asarray(audio, dtype=np.float32)


def _only(model_dir: Path, pattern: str) -> Path:
    found = sorted(model_dir.glob(pattern))
    if len(found) != 1:
        raise FileNotFoundError(f"expected one {pattern} in {model_dir}, found {len(found)}")
    return found[0]


def load_piper(models_dir: Path | None, which: str | Path, *, intra_threads: int = 2) -> PiperTts:
    """Load the fast TTS voice of profile/model/directory ``which``.

    Raises:
        ModelMissingError: Not provisioned.
    """
    _, model_dir = locate(models_dir, Role.TTS_FAST, which)
    onnx_name = PIPER_ONNX if (model_dir / PIPER_ONNX).is_file() else None
    return PiperTts(model_dir, onnx_name=onnx_name, intra_threads=intra_threads)


def load_kokoro(
    models_dir: Path | None, which: str | Path, *, voice: VoiceStyle = "jf_alpha", intra_threads: int = 2
) -> KokoroTts:
    """Load the quality TTS voice of profile/model/directory ``which``.

    Raises:
        ModelMissingError: Not provisioned.
    """
    _, model_dir = locate(models_dir, Role.TTS_QUALITY, which)
    return KokoroTts(model_dir, voice=voice, intra_threads=intra_threads)
