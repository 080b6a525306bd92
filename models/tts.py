"""Text to speech: Piper (fast, 22.05 kHz) and Kokoro-82M (quality, 24 kHz) behind one interface."""

from __future__ import annotations

import io
import json
import re
import threading
from collections.abc import AsyncIterator, Generator, Iterator, Mapping
from pathlib import Path
from types import MappingProxyType
from typing import Any, Protocol, Self, runtime_checkable

import numpy as np
import numpy.typing as npt
import onnxruntime as ort
from kokoro_onnx import Kokoro
from piper import PiperConfig, PiperVoice, SynthesisConfig

from models.catalog import KOKORO_ONNX, KOKORO_VOICES, PIPER_ONNX, Role
from models.executors import ComputeLane, ModelClosedError
from models.locate import locate

FloatArray = npt.NDArray[np.float32]
VoiceStyle = str | Mapping[str, float] | FloatArray
"""A Kokoro voice: a style name, a ``{name: weight}`` blend, or a ready style array."""

STYLE_SHAPE = (510, 1, 256)
"""A Kokoro style pack: one 256-d style per phoneme count (up to 510), float32."""

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

    def __init__(self, lane_name: str, *, lane: ComputeLane | None = None) -> None:
        self.lane = lane or ComputeLane(lane_name)

    def _chunk_audio(self, chunk: str) -> FloatArray:
        raise NotImplementedError

    def check_open(self) -> None:
        """Raise :class:`ModelClosedError` once the voice is closed."""
        self.lane.check_open()

    def stream(self, text: str, *, stop_event: threading.Event | None = None) -> Generator[FloatArray, None, None]:
        """Audio for ``text`` one sentence (or clause of a long sentence) at a time. Blocking."""
        self.check_open()
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

    def __enter__(self) -> Self:
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
        self._setup(_session(onnx, intra_threads), config, onnx.stem, length_scale)

    def _setup(
        self, session: ort.InferenceSession, config: Mapping[str, Any], name: str, length_scale: float | None
    ) -> None:
        self._voice = PiperVoice(session=session, config=PiperConfig.from_dict(dict(config)))
        self._synthesis = SynthesisConfig(length_scale=length_scale)
        self.name = name
        self.sample_rate = int(self._voice.config.sample_rate)
        super().__init__("tts-piper")

    @classmethod
    def from_bytes(
        cls,
        onnx: bytes,
        config: Mapping[str, Any],
        *,
        name: str,
        intra_threads: int = 2,
        length_scale: float | None = None,
    ) -> PiperTts:
        """A Piper voice from its model bytes and parsed config (see :func:`piper_config`), e.g. a voice a user
        uploaded and that is kept sealed at rest: it never touches the disk in the clear.

        Raises:
            ValueError: The config is not a usable Piper config, or onnxruntime cannot load the model.
        """
        checked = _check_piper_config(config)
        options = ort.SessionOptions()
        options.intra_op_num_threads = intra_threads
        options.inter_op_num_threads = 1
        try:
            session = ort.InferenceSession(onnx, sess_options=options, providers=["CPUExecutionProvider"])
        except Exception as exc:  # onnxruntime raises its own Fail/InvalidGraph/... types
            raise ValueError(f"not a loadable ONNX model: {exc}") from exc
        voice = cls.__new__(cls)
        voice._setup(session, checked, name, length_scale)
        return voice

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
        for array in self._styles.values():
            array.flags.writeable = False  # shared with every KokoroVoice and handed out by `styles`
        self.speed = speed
        self.lang = lang
        self._style = self.style(voice)
        self.name = voice if isinstance(voice, str) else "blend"
        super().__init__("tts-kokoro")

    @property
    def voices(self) -> tuple[str, ...]:
        """Names of the bundled style vectors."""
        return tuple(self._styles)

    @property
    def styles(self) -> Mapping[str, FloatArray]:
        """The bundled style packs by name (read-only mapping of read-only arrays)."""
        return MappingProxyType(self._styles)

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
        return self._speak(chunk, self._style, self.speed)

    def _speak(self, chunk: str, style: FloatArray, speed: float) -> FloatArray:
        audio, _ = self._kokoro.create(chunk, voice=style, speed=speed, lang=self.lang)
        return trim_silence(np.asarray(audio, dtype=np.float32), self.sample_rate)

    def synthesize_with(self, text: str, style: FloatArray, speed: float = 1.0) -> FloatArray:
        """All audio (24 kHz) for ``text`` spoken with ``style`` at ``speed``, leaving the default voice alone.
        Blocking; safe from any thread (the voice search calls it on its own worker).

        Raises:
            ValueError: ``style`` is not a finite float32 ``[510, 1, 256]`` pack, or ``speed`` is outside 0.5-2.0.
            ModelClosedError: After :meth:`close`.
        """
        checked, speed = _check_style(style), _check_speed(speed)
        self.check_open()
        parts = [audio for chunk in speech_chunks(text) if (audio := self._speak(chunk, checked, speed)).size]
        return np.concatenate(parts) if parts else np.zeros(0, dtype=np.float32)

    def voice(self, style: VoiceStyle, *, speed: float = 1.0, name: str = "kokoro") -> KokoroVoice:
        """A :class:`TtsVoice` speaking with ``style`` at ``speed`` on this engine (no second model in memory).

        Raises:
            KeyError: Unknown style name.
            ValueError: Bad style array or blend, or ``speed`` outside 0.5-2.0.
        """
        return KokoroVoice(self, _check_style(self.style(style)), speed=_check_speed(speed), name=name)


class KokoroVoice(_ChunkedVoice):
    """A style and speed on a shared :class:`KokoroTts` engine: a matched voice costs one 0.5 MB pack, not a model.

    Its calls queue on the engine's lane, in order with the engine's own. :meth:`close` only retires this voice
    (later calls raise :class:`ModelClosedError`); the engine keeps serving other voices and is closed by its owner.
    """

    sample_rate = KokoroTts.sample_rate

    def __init__(self, engine: KokoroTts, style: FloatArray, *, speed: float = 1.0, name: str = "kokoro") -> None:
        self.engine = engine
        self.style = _check_style(style)
        self.speed = _check_speed(speed)
        self.name = name
        self._closed = False
        super().__init__("tts-kokoro", lane=engine.lane)

    def check_open(self) -> None:
        if self._closed:
            raise ModelClosedError(f"voice {self.name} is closed")
        self.lane.check_open()

    def _chunk_audio(self, chunk: str) -> FloatArray:
        return self.engine._speak(chunk, self.style, self.speed)

    async def asynthesize(self, text: str) -> FloatArray:
        self.check_open()
        return await super().asynthesize(text)

    def close(self, timeout: float | None = None) -> bool:
        """Retire this voice; the engine and its lane stay open. Idempotent; always True (nothing to wait for:
        a chunk in progress belongs to the engine's lane)."""
        self._closed = True
        return True


SILENCE_LEVEL = 0.01  # |sample| below this (-40 dBFS) is silence at the edges of a chunk
KEEP_LEAD_S = 0.03  # before the first sound: a soft onset is never cut
KEEP_TAIL_S = 0.15  # after the last sound: with the next chunk's lead, a natural pause between clauses


def trim_silence(audio: FloatArray, rate: int) -> FloatArray:
    """``audio`` with the silence at its start cut to `KEEP_LEAD_S` and at its end to `KEEP_TAIL_S`.

    Kokoro pads every chunk with ~150-200 ms of silence before the speech and ~250-450 ms after it (measured on
    first clauses; Piper: ~50 and ~200 ms). The lead delays the first sound of every reply by that much, and
    between two clauses the pads add up to a half-second gap. All-silent audio is returned as it is.
    """
    loud = np.flatnonzero(np.abs(audio) > SILENCE_LEVEL)
    if loud.size == 0:
        return audio
    start = max(0, int(loud[0]) - int(KEEP_LEAD_S * rate))
    end = min(len(audio), int(loud[-1]) + 1 + int(KEEP_TAIL_S * rate))
    return audio[start:end]


def _check_speed(speed: float) -> float:
    if not 0.5 <= speed <= 2.0:  # kokoro-onnx's own range
        raise ValueError(f"speed must be within 0.5-2.0, got {speed}")
    return float(speed)


def _check_style(style: Any) -> FloatArray:
    array = np.asarray(style)
    if array.dtype != np.float32 or array.shape != STYLE_SHAPE:
        raise ValueError(f"a Kokoro style is float32 {list(STYLE_SHAPE)}, got {array.dtype} {list(array.shape)}")
    if not np.isfinite(array).all():
        raise ValueError("a Kokoro style must be finite (found NaN or infinity)")
    return array


def pack_to_bytes(style: FloatArray) -> bytes:
    """``style`` as ``.npy`` bytes (exact: :func:`pack_from_bytes` gives back the same bits).

    Raises:
        ValueError: Not a finite float32 ``[510, 1, 256]`` pack.
    """
    buffer = io.BytesIO()
    np.save(buffer, _check_style(style), allow_pickle=False)
    return buffer.getvalue()


def pack_from_bytes(data: bytes) -> FloatArray:
    """The style pack stored by :func:`pack_to_bytes` (a fresh, writable array).

    Raises:
        ValueError: Not ``.npy`` bytes of a finite float32 ``[510, 1, 256]`` array (never unpickles anything).
    """
    try:
        array = np.load(io.BytesIO(data), allow_pickle=False)
    except (ValueError, OSError, EOFError) as exc:
        raise ValueError(f"not a stored style pack: {exc}") from exc
    if not isinstance(array, np.ndarray):
        raise ValueError("not a stored style pack: expected one .npy array")
    return _check_style(array)


def piper_config(raw: bytes) -> dict[str, Any]:
    """Parse and check a Piper voice's ``.onnx.json``: what loading and speaking with it will need.

    Raises:
        ValueError: Not UTF-8 JSON, or missing/invalid ``audio.sample_rate`` (8-48 kHz), ``phoneme_id_map``
            (phoneme -> list of ids), ``num_symbols``, or ``espeak.voice`` (for espeak-phonemised voices); the
            message names the field.
    """
    try:
        config = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ValueError(f"Piper config is not UTF-8 JSON: {exc}") from exc
    return _check_piper_config(config)


def _check_piper_config(config: Any) -> dict[str, Any]:
    if not isinstance(config, Mapping):
        raise ValueError("Piper config must be a JSON object")
    audio = config.get("audio")
    rate = audio.get("sample_rate") if isinstance(audio, Mapping) else None
    if not isinstance(rate, int) or isinstance(rate, bool) or not 8_000 <= rate <= 48_000:
        raise ValueError(f"Piper config: audio.sample_rate must be an integer 8000-48000, got {rate!r}")
    ids = config.get("phoneme_id_map")
    if not isinstance(ids, Mapping) or not ids:
        raise ValueError("Piper config: phoneme_id_map must be a non-empty object")
    for phoneme, values in ids.items():
        if not isinstance(values, list) or not values or not all(isinstance(v, int) and v >= 0 for v in values):
            raise ValueError(f"Piper config: phoneme_id_map[{phoneme!r}] must be a list of ids, got {values!r}")
    symbols = config.get("num_symbols")
    if not isinstance(symbols, int) or symbols <= max(v for values in ids.values() for v in values):
        raise ValueError(f"Piper config: num_symbols must be an integer above every phoneme id, got {symbols!r}")
    if config.get("phoneme_type", "espeak") == "espeak":
        espeak = config.get("espeak")
        voice = espeak.get("voice") if isinstance(espeak, Mapping) else None
        if not isinstance(voice, str) or not voice.strip():
            raise ValueError('Piper config: espeak.voice must name an espeak-ng voice (e.g. "en-us")')
    result = dict(config)
    result.setdefault("num_speakers", 1)
    try:
        PiperConfig.from_dict(result)
    except (KeyError, TypeError, ValueError) as exc:
        raise ValueError(f"Piper config: {exc!r}") from exc
    return result


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
