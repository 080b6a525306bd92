"""The pipeline's closed set of frames and events.

Small, frozen, slotted dataclasses with a ``Union`` alias per direction, dispatched with ``match``. Audio is
mono int16 PCM in a numpy array with its sample rate; ``t`` fields are seconds on the session clock.

Inputs (transport → session): `AudioIn`, `TextIn`, `Dtmf`.
Outputs (session → transport): `UserSpeech`, `UserTranscript`, `ReplyText`, `ReplyDone`, `TurnState`,
`LatencyMark`, `ErrorEvent`. Bot audio does not travel as events: the transport pulls it from the session's
playout buffer at real-time pace.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import numpy as np
import numpy.typing as npt

Pcm = npt.NDArray[np.int16]

TurnStateName = Literal["listening", "thinking", "speaking"]
"""What the avatar is doing, for UIs (sent as these strings: ``soma.turn_state``, live session state)."""

MarkName = Literal[
    "speech_end",  # the VAD's end of the user's speech
    "transcript_final",  # the final transcript that starts the turn
    "llm_first_token",
    "tts_first_chunk",
    "first_audio_out",  # the transport pulled the reply's first audio
    "barge_in_onset",  # the user started speaking over the reply
    "interrupt_detected",
    "audio_stopped",  # the reply's audio stopped after a barge-in
]
"""A per-turn latency mark's name; the strings reach events, stored turns and the metrics' stage names."""


@dataclass(frozen=True, slots=True, eq=False)
class AudioIn:
    """Microphone audio from the transport, any common rate (8/16/24/48 kHz); resampled at the edge."""

    pcm: Pcm
    sample_rate: int


@dataclass(frozen=True, slots=True)
class TextIn:
    """A typed user message (text chat, or typed mid-call). ``instructions``, when set, replace the persona
    for the reply to this message only (a Realtime ``response.create`` with its own instructions). With
    ``respond`` an empty ``text`` is not an error: the avatar answers the conversation as it stands (it speaks
    first, or goes on)."""

    text: str
    instructions: str | None = None
    respond: bool = False


@dataclass(frozen=True, slots=True)
class Dtmf:
    """A keypad digit (RFC 4733 or SIP INFO): ``0-9``, ``*``, ``#``, ``A-D``."""

    digit: str


InputFrame = AudioIn | TextIn | Dtmf


@dataclass(frozen=True, slots=True)
class UserSpeech:
    """The VAD heard the user start (``speaking=True``) or stop talking, at session time ``t`` (the edge's
    audio time, not when it was detected). Not every start becomes a turn: coughs and backchannels do not."""

    speaking: bool
    t: float


@dataclass(frozen=True, slots=True)
class UserTranscript:
    """What the user said: partials while speaking (``final=False``), then the final text of the turn."""

    text: str
    final: bool
    turn_id: int


@dataclass(frozen=True, slots=True)
class ReplyText:
    """A piece of the bot's reply text as generated (text sessions show it; voice sessions caption it)."""

    reply_id: int
    delta: str


@dataclass(slots=True)
class TokenUsage:
    """Token counts of one generation, filled in by the LLM as it runs (``stats=``; `models.llm` calls it
    ``GenerationStats``); read it after the stream ends.

    Attributes:
        prompt_tokens: Tokens of the whole rendered prompt.
        cached_tokens: Of those, tokens served from the cached persona prefix (``static_prompt_tokens``).
        generated_tokens: Tokens decoded (end-of-turn token excluded).
        first_token_ms: Call to first decoded token, or ``None`` if none came.
        total_ms: Call to the end of generation.
        finish: ``"end"`` (model ended its turn), ``"length"`` (max_tokens), ``"stop"`` (a stop string)
            or ``"cancelled"`` (stop_event or the consumer closed the stream).
    """

    prompt_tokens: int = 0
    cached_tokens: int = 0
    generated_tokens: int = 0
    first_token_ms: float | None = None
    total_ms: float = 0.0
    finish: str = "cancelled"


Span = tuple[float, float, str]  # (start s, end s, text) of a spoken chunk, in the reply's own audio time


@dataclass(frozen=True, slots=True)
class ReplyDone:
    """A reply ended. ``heard_text`` is what the user actually heard (or was sent, for text) — the only part
    that enters the conversation history. ``interrupted`` is True when it was cut short.

    ``usage`` holds the generation's token counts (``None`` when no generation ran); ``spans`` the spoken
    chunks with their place in the reply's audio (empty for text replies), which lets a client that plays
    the audio itself say how much was heard (`pipeline.playout.heard_text`)."""

    reply_id: int
    text: str
    heard_text: str
    interrupted: bool
    played_s: float
    usage: TokenUsage | None = None
    spans: tuple[Span, ...] = ()


@dataclass(frozen=True, slots=True)
class TurnState:
    """The avatar's state for UIs: ``listening``, ``thinking`` or ``speaking``."""

    state: TurnStateName


@dataclass(frozen=True, slots=True)
class LatencyMark:
    """A per-turn timestamp (see `MarkName`)."""

    turn_id: int
    name: MarkName
    t: float


@dataclass(frozen=True, slots=True)
class ErrorEvent:
    """Something went wrong but the session continues (bad input, a model error)."""

    code: str
    message: str


OutputEvent = UserSpeech | UserTranscript | ReplyText | ReplyDone | TurnState | LatencyMark | ErrorEvent


def is_control(event: OutputEvent) -> bool:
    """Whether losing ``event`` would break a client's view of the conversation (`pipeline.outbound`: such
    events are never dropped). Control: a reply's end, turn states, errors, VAD edges, the final transcript
    that starts a turn and the empty partial that says an utterance was dropped. Bulk, dropped when the
    client is too slow: reply text deltas, the texts of partial transcripts and latency marks — later
    events (the final transcript, `ReplyDone`) carry the whole text again."""
    match event:
        case ReplyText() | LatencyMark():
            return False
        case UserTranscript(text=text, final=False):
            return not text
        case _:
            return True


@dataclass(slots=True)
class TurnMarks:
    """Latency marks of one turn, filled as they happen (seconds on the session clock)."""

    turn_id: int
    marks: dict[MarkName, float] = field(default_factory=dict)

    def gap_ms(self, start: MarkName, end: MarkName) -> float | None:
        """Milliseconds from mark ``start`` to mark ``end``, if both happened."""
        if start in self.marks and end in self.marks:
            return (self.marks[end] - self.marks[start]) * 1000.0
        return None
