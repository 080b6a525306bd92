"""Loading a profile's models together, checked up front, timed, and closed together.

Created once in the app's lifespan and passed down explicitly; nothing here is a global::

    models = load_models(settings.models_dir, "full")
    try:
        ...  # models.llm, models.asr, ...
    finally:
        models.close()
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from models.asr import WhisperAsr
from models.catalog import CATALOG, PROFILES, Role, profile_model
from models.embed import MiniLmEmbedder
from models.llm import CT2Llm
from models.locate import require_models
from models.paths import default_models_dir
from models.tts import KokoroTts, PiperTts
from models.vad import SileroVad

CLOSE_TIMEOUT_S = 3.0  # longest wait for model calls in flight at shutdown (within `soma serve`'s deadline)

LOADABLE_ROLES: tuple[Role, ...] = (
    Role.VAD,
    Role.ASR,
    Role.LLM,
    Role.TTS_FAST,
    Role.TTS_QUALITY,
    Role.EMBED,
)
"""Roles with a runtime loader. The speaker encoders (``SPEAKER``, ``SPEAKER_D``) are provisioned with the profile but
loaded together, only by the voice feature that needs them, with :func:`models.speaker.load_speaker_encoders`."""


@dataclass(frozen=True, slots=True)
class ThreadConfig:
    """Intra-op threads per model, and how many LLM generations may run at once. Defaults suit 2 cores: the
    models rarely run at the same instant (ASR, then LLM, then TTS), so each may use both cores; the tiny
    VAD runs on one.

    ``llm_workers``: one decoding step at batch size 1 leaves the cores partly idle, so parallel generations
    cost each other little. Measured on 2 cores with Qwen2.5-0.5B (4 replies started 100 ms apart): one
    worker, first tokens after 94/1700/1959/3443 ms and 23 tokens/s in all; four workers, 139/194/287/318 ms
    and 31 tokens/s; a lone generation is as fast either way (~95 ms to the first token). Each worker adds
    ~25 MB. ``llm_max_batch``: when every worker is busy, waiting generations are decoded together, up to
    this many in one batch (`models.llm_batch`). Ten requests arriving within 3 s: first token p95 2.2 s with
    4 workers × batches of 4, 1.3 s with 2 × 8 — but 4-6 requests then wait longer (p95 0.77-1.14 s against
    0.18-0.49 s), and a personal avatar mostly has few callers at once.
    """

    vad: int = 1
    asr: int = 2
    llm: int = 2
    tts: int = 2
    embed: int = 1
    llm_workers: int = 4
    llm_max_batch: int = 4


@dataclass(slots=True)
class ModelSet:
    """The loaded models of one profile; roles not asked for are ``None``.

    Attributes:
        profile: The profile the models came from.
        load_ms: Model name -> wall milliseconds its loader took (cold-start reporting).
        names: Role -> model name.
    """

    profile: str
    vad: SileroVad | None = None
    asr: WhisperAsr | None = None
    llm: CT2Llm | None = None
    tts_fast: PiperTts | None = None
    tts_quality: KokoroTts | None = None
    embed: MiniLmEmbedder | None = None
    load_ms: dict[str, float] = field(default_factory=dict)
    names: dict[Role, str] = field(default_factory=dict)

    def handles(self) -> list[Any]:
        """The loaded handles, in load order."""
        loaded = (self.vad, self.asr, self.llm, self.tts_fast, self.tts_quality, self.embed)
        return [handle for handle in loaded if handle is not None]

    def close(self, timeout: float | None = CLOSE_TIMEOUT_S) -> bool:
        """Close every loaded model, waiting for calls in flight at most ``timeout`` seconds in all (``None``:
        as long as they take). Idempotent.

        Returns:
            False when some model was still computing at the deadline: native compute cannot be interrupted, so
            that model is left to the process exit rather than holding up a shutdown.
        """
        started = time.monotonic()
        stopped = True
        for handle in reversed(self.handles()):
            left = None if timeout is None else max(0.0, timeout - (time.monotonic() - started))
            stopped = handle.close(left) and stopped
        return stopped

    def __enter__(self) -> ModelSet:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


def load_models(
    models_dir: Path | None,
    profile: str,
    *,
    roles: Iterable[Role | str] | None = None,
    threads: ThreadConfig | None = None,
) -> ModelSet:
    """Load the models ``profile`` uses for ``roles`` (default: every loadable role).

    All models are checked before any is loaded, so a missing one fails fast with one message.
    If a loader fails, the models already loaded are closed before the error propagates.

    Raises:
        ModelMissingError: Any requested model is not provisioned intact; names all of them.
        KeyError: Unknown profile or role, or a role without a runtime loader.
    """
    if profile not in PROFILES:
        raise KeyError(f"unknown profile {profile!r}; choose one of {', '.join(PROFILES)}")
    base = (models_dir or default_models_dir()).expanduser()
    wanted = LOADABLE_ROLES if roles is None else tuple(Role(role) for role in roles)
    for role in wanted:
        if role not in LOADABLE_ROLES:
            raise KeyError(f"role {role.value!r} has no runtime loader")
    threads = threads or ThreadConfig()
    names = {role: profile_model(profile, role) for role in wanted}
    require_models(base, names.values(), profile)

    loaders: dict[Role, tuple[str, Callable[[Path], Any]]] = {
        Role.VAD: ("vad", lambda d: SileroVad(d, intra_threads=threads.vad)),
        Role.ASR: ("asr", lambda d: WhisperAsr(d, cpu_threads=threads.asr)),
        Role.LLM: (
            "llm",
            lambda d: CT2Llm(
                d, intra_threads=threads.llm, workers=threads.llm_workers, max_batch=threads.llm_max_batch
            ),
        ),
        Role.TTS_FAST: ("tts_fast", lambda d: PiperTts(d, intra_threads=threads.tts)),
        Role.TTS_QUALITY: ("tts_quality", lambda d: KokoroTts(d, intra_threads=threads.tts)),
        Role.EMBED: ("embed", lambda d: MiniLmEmbedder(d, intra_threads=threads.embed)),
    }
    models = ModelSet(profile=profile, names=names)
    try:
        for role in LOADABLE_ROLES:
            if role not in names:
                continue
            attribute, load = loaders[role]
            started = time.perf_counter()
            setattr(models, attribute, load(base / names[role]))
            models.load_ms[names[role]] = (time.perf_counter() - started) * 1000
    except BaseException:
        models.close()
        raise
    return models


def describe(profile: str) -> dict[str, str]:
    """Role -> one-line description of the model ``profile`` uses (for reports)."""
    return {
        role.value: f"{name}: {CATALOG[name].description}"
        for role in Role
        for name in PROFILES[profile]
        if CATALOG[name].role is role
    }
