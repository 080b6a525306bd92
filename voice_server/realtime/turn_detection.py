"""``turn_detection`` of a Realtime session: parsed from ``session.update``, echoed as it is in force, and
mapped onto the pipeline's own turn-taking.

Soma ends a turn adaptively: the silence it waits for depends on what the words say (a finished sentence
ends after ~80 ms, words that give no cue after ~350 ms, a sentence trailing off after ~1.1 s;
`pipeline.turn.TurnConfig`). OpenAI's two modes map onto that one mechanism, so both keep the adaptive
behaviour and both are honoured:

- ``server_vad``: ``silence_duration_ms`` is the wait when the words give no cue (Soma's default: 350); the
  other two waits scale with it. ``threshold`` is the VAD's speech probability threshold, and
  ``prefix_padding_ms`` the audio kept from before the detected start of speech (default 300, as OpenAI's).
- ``semantic_vad``: ``eagerness`` scales all three waits (``high`` halves them, ``low`` doubles them,
  ``medium``/``auto`` keep Soma's defaults).

With ``server_vad``, ``idle_timeout_ms`` (5,000–30,000) makes the avatar speak up when the caller stays
silent that long after its answer finished playing (`IdleTimer`; OpenAI's semantics, and what a phone call
wants). ``create_response``/``interrupt_response`` ``false`` are refused: the avatar always answers and can
always be interrupted.
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal, cast

from pipeline.turn import TurnConfig
from pipeline.vad import VadConfig

DEFAULT_SILENCE_MS = 350  # TurnConfig().unsure_wait_s: the wait the other waits scale around
DEFAULT_PREFIX_MS = 300  # pipeline.asr.PREROLL_S
EAGERNESS_SCALE = {"low": 2.0, "medium": 1.0, "auto": 1.0, "high": 0.5}
PARAM = "session.audio.input.turn_detection"

Mode = Literal["server_vad", "semantic_vad"]
Eagerness = Literal["low", "medium", "high", "auto"]


class TurnDetectionError(ValueError):
    """An invalid or unsupported ``turn_detection``; ``code`` and ``param`` are for the client's error event."""

    def __init__(self, code: str, message: str, param: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.param = param


@dataclass(frozen=True, slots=True)
class TurnDetection:
    """Turn detection in force; fields a client did not set hold Soma's defaults."""

    type: Mode = "server_vad"
    threshold: float = 0.5
    prefix_padding_ms: int = DEFAULT_PREFIX_MS
    silence_duration_ms: int = DEFAULT_SILENCE_MS
    eagerness: Eagerness = "auto"
    idle_timeout_ms: int | None = None

    @property
    def wait_scale(self) -> float:
        """Factor on Soma's end-of-turn waits."""
        if self.type == "semantic_vad":
            return EAGERNESS_SCALE[self.eagerness]
        return self.silence_duration_ms / DEFAULT_SILENCE_MS

    def as_dict(self) -> dict[str, Any]:
        """The ``turn_detection`` object of ``session.created``/``session.updated``."""
        common = {"create_response": True, "interrupt_response": True}
        if self.type == "semantic_vad":
            return {"type": "semantic_vad", "eagerness": self.eagerness, **common}
        return {"type": "server_vad", "threshold": self.threshold, "prefix_padding_ms": self.prefix_padding_ms,
                "silence_duration_ms": self.silence_duration_ms, "idle_timeout_ms": self.idle_timeout_ms, **common}

    def turn_config(self, base: TurnConfig) -> TurnConfig:
        """``base`` (the session's own timings) with the end-of-turn waits scaled."""
        k = self.wait_scale
        return dataclasses.replace(
            base,
            finished_wait_s=base.finished_wait_s * k,
            unsure_wait_s=base.unsure_wait_s * k,
            unfinished_wait_s=base.unfinished_wait_s * k,
        )

    def vad_config(self, base: VadConfig) -> VadConfig:
        """``base`` with this speech threshold (semantic mode keeps the session's own)."""
        return base if self.type == "semantic_vad" else dataclasses.replace(base, threshold=self.threshold)

    @property
    def preroll_s(self) -> float:
        return self.prefix_padding_ms / 1000 if self.type == "server_vad" else DEFAULT_PREFIX_MS / 1000


def parse_turn_detection(value: Any) -> TurnDetection | None:
    """A client's ``turn_detection`` (``None``: the client commits audio itself). Fields it leaves out take
    Soma's defaults, as a new object replaces the old one.

    Raises:
        TurnDetectionError: Not an object, an unknown type, a value out of range, or an unsupported setting.
    """
    if value is None:
        return None
    if not isinstance(value, dict):
        raise TurnDetectionError("invalid_value", "turn_detection must be an object or null", PARAM)
    kind = value.get("type")
    if kind not in ("server_vad", "semantic_vad"):
        raise TurnDetectionError("invalid_value", "turn_detection.type must be server_vad or semantic_vad (or "
                                 "turn_detection null)", f"{PARAM}.type")
    for flag in ("create_response", "interrupt_response"):
        if value.get(flag, True) is not True:
            raise TurnDetectionError("unsupported_parameter", f"{flag}: false is not supported; the avatar always "
                                     "answers and can always be interrupted", f"{PARAM}.{flag}")
    if kind == "semantic_vad":
        if value.get("idle_timeout_ms") is not None:
            raise TurnDetectionError("unsupported_parameter", "idle_timeout_ms needs server_vad",
                                     f"{PARAM}.idle_timeout_ms")
        eagerness = value.get("eagerness", "auto")
        if not isinstance(eagerness, str) or eagerness not in EAGERNESS_SCALE:
            raise TurnDetectionError("invalid_value", "eagerness must be low, medium, high or auto",
                                     f"{PARAM}.eagerness")
        return TurnDetection(type="semantic_vad", eagerness=cast(Eagerness, eagerness))
    threshold = _number(value, "threshold", 0.5, 0.01, 0.99)
    prefix = int(_number(value, "prefix_padding_ms", DEFAULT_PREFIX_MS, 0, 1000, integer=True))
    silence = int(_number(value, "silence_duration_ms", DEFAULT_SILENCE_MS, 50, 5000, integer=True))
    idle = value.get("idle_timeout_ms")
    idle_ms = None if idle is None else int(_number(value, "idle_timeout_ms", 0, 5000, 30000, integer=True))
    return TurnDetection(threshold=threshold, prefix_padding_ms=prefix, silence_duration_ms=silence,
                         idle_timeout_ms=idle_ms)


def _number(
    value: dict[str, Any], key: str, default: float, low: float, high: float, *, integer: bool = False
) -> float:
    got = value.get(key)
    if got is None:
        return default
    kind_ok = isinstance(got, int) if integer else isinstance(got, int | float)
    if isinstance(got, bool) or not kind_ok or not low <= got <= high:
        what = "an integer" if integer else "a number"
        raise TurnDetectionError("invalid_value", f"{key} must be {what} from {low:g} to {high:g}", f"{PARAM}.{key}")
    return float(got)


class IdleTimer:
    """``idle_timeout_ms``: calls ``on_idle`` with the time it was armed, once, unless disarmed first.

    The connection arms it when the avatar goes back to listening after an answer and disarms it when the
    user starts speaking or another answer starts. A loop timer, not a task: nothing to own but the handle,
    which `disarm` cancels.
    """

    def __init__(self, on_idle: Callable[[float], None]) -> None:
        self._on_idle = on_idle
        self._handle: asyncio.TimerHandle | None = None

    def arm(self, timeout_ms: int | None, now: float) -> None:
        """(Re)start the countdown; ``timeout_ms`` ``None`` only disarms."""
        self.disarm()
        if timeout_ms is not None:
            self._handle = asyncio.get_running_loop().call_later(timeout_ms / 1000, self._fire, now)

    def disarm(self) -> None:
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None

    def _fire(self, armed_at: float) -> None:
        self._handle = None
        self._on_idle(armed_at)
