"""Turn-taking core: sans-I/O, no ``await``, no clock reads.

The session feeds it what happened (VAD speech start/end, transcripts, bot audio starting/stopping, timer
ticks), each with an explicit ``now``; it returns what to do. The driver asks `next_deadline` when it must call
`tick` again, so there is no polling. Because time is a parameter, every behaviour is testable with plain
calls on virtual time.

Policies:

* **End of user turn** — after VAD reports the end of speech, wait an *adaptive* silence: short when the
  latest transcript reads as finished ("…the trip?"), long when it trails off ("I was thinking about…",
  "and", "um"), medium when unsure. The final transcript of the whole utterance is required before the turn
  ends; an empty one (noise, a cough) discards the utterance.
* **Barge-in** — user speech while the bot is audible *pauses* the bot at once (so the user is never talked
  over for more than a chunk). It becomes a real interruption when the speech lasts ``min_interrupt_s`` or
  its transcript has real words; a short blip with no words or only a backchannel ("mm-hm") resumes the bot
  where it stopped (false-interruption recovery).
* **Premature endpoint** — if the user starts speaking again while the reply is still being prepared (not yet
  audible), the reply is cancelled and the user's turn continues, keeping what they already said.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from enum import Enum

# ----------------------------------------------------------------------------------------------- inputs


@dataclass(frozen=True, slots=True)
class SpeechStart:
    """VAD: speech began at ``t`` (start of the first voiced window)."""

    t: float


@dataclass(frozen=True, slots=True)
class SpeechEnd:
    """VAD: speech ended at ``t`` (end of the last voiced window)."""

    t: float


@dataclass(frozen=True, slots=True)
class Transcript:
    """ASR text of the current utterance. ``segment`` is set when this is the final decode requested by a
    `RequestFinal` with that id (it covers all audio up to the speech end); partials leave it ``None``."""

    text: str
    segment: int | None = None


@dataclass(frozen=True, slots=True)
class BotAudible:
    """Playout: the bot's audio became audible (``True``) or finished/stopped (``False``)."""

    audible: bool


TurnInput = SpeechStart | SpeechEnd | Transcript | BotAudible

# ---------------------------------------------------------------------------------------------- outputs


@dataclass(frozen=True, slots=True)
class RequestFinal:
    """Decode the utterance so far as final; answer with ``Transcript(text, segment=segment)``."""

    segment: int


@dataclass(frozen=True, slots=True)
class EndOfTurn:
    """The user finished: reply to ``text``. ``speech_end`` is when they stopped speaking."""

    text: str
    speech_end: float


@dataclass(frozen=True, slots=True)
class PauseBot:
    """Silence the bot's audio now (suspected barge-in); keep the reply alive."""


@dataclass(frozen=True, slots=True)
class ResumeBot:
    """It was not an interruption: resume the paused audio where it stopped."""


@dataclass(frozen=True, slots=True)
class InterruptBot:
    """Cancel the current reply; only what was heard enters history. ``reason``: ``barge_in`` or
    ``user_continued`` (speech resumed before the reply was audible)."""

    reason: str


@dataclass(frozen=True, slots=True)
class DiscardUtterance:
    """The utterance had no words (noise); forget it."""


Decision = RequestFinal | EndOfTurn | PauseBot | ResumeBot | InterruptBot | DiscardUtterance


# ----------------------------------------------------------------------------------------------- policy


@dataclass(frozen=True, slots=True)
class TurnConfig:
    """Timing policy, in seconds. Defaults are tuned for conversational English.

    Attributes:
        finished_wait_s: Silence after speech end when the transcript reads as a finished sentence.
        unsure_wait_s: Silence when the transcript gives no signal either way.
        unfinished_wait_s: Silence when the transcript trails off (conjunction, preposition, filler, "…").
        min_interrupt_s: Speech while the bot is audible must last this long (or carry real words) to interrupt.
        vad_end_delay_s: How late the VAD reports the end of speech; speech is only known to have lasted
            ``min_interrupt_s`` once this much longer has passed without a SpeechEnd.
        false_interrupt_window_s: After a short blip ended, how long to wait for its words before resuming.
        backchannels: Utterances that acknowledge without taking the turn.
    """

    finished_wait_s: float = 0.08
    unsure_wait_s: float = 0.35
    unfinished_wait_s: float = 1.1
    min_interrupt_s: float = 0.35
    vad_end_delay_s: float = 0.1
    false_interrupt_window_s: float = 0.6
    backchannels: frozenset[str] = field(
        default_factory=lambda: frozenset(
            {"mm", "mmm", "mhm", "mm-hm", "mm hm", "uh-huh", "uh huh", "hmm", "yeah", "yep", "yes", "right", "ok",
             "okay", "sure", "uh", "um", "ah", "oh", "i see", "got it", "cool", "nice", "wow"}
        )
    )


_WORD_RE = re.compile(r"[a-z0-9']+(?:-[a-z0-9']+)*")
# Words after which an English sentence is almost never over, even when the ASR put a full stop after them
# (Whisper often does on a pause).
_STRONG_CONTINUATION = frozenset(
    """a an the and or but so because if when while about of to for with from in on at by as than that my your
    his her their our um uh er like""".split()
)
# Without punctuation these also suggest more is coming; with a "?" or "." they often end a sentence
# ("What is it?").
_WEAK_CONTINUATION = _STRONG_CONTINUATION | frozenset(
    "this these those is are was were am be been i'm i'd i'll we're you're just really very more some any".split()
)


class Completeness(Enum):
    """How finished a transcript reads."""

    FINISHED = "finished"
    UNSURE = "unsure"
    UNFINISHED = "unfinished"


def completeness(text: str) -> Completeness:
    """Classify a transcript by its ending. Whisper punctuates, which is the strongest signal we have."""
    stripped = text.strip()
    if not stripped:
        return Completeness.UNSURE
    if stripped.endswith(("...", "…", ",", "-", "—", ";", ":")):
        return Completeness.UNFINISHED
    words = _WORD_RE.findall(stripped.lower())
    last = words[-1] if words else ""
    if stripped[-1] == "?":
        return Completeness.FINISHED
    if stripped[-1] in ".!":
        return Completeness.UNFINISHED if last in _STRONG_CONTINUATION else Completeness.FINISHED
    return Completeness.UNFINISHED if last in _WEAK_CONTINUATION else Completeness.UNSURE


def normalise_words(text: str) -> str:
    """Lower-case words joined by single spaces, punctuation dropped."""
    return " ".join(_WORD_RE.findall(text.lower()))


class _Bot(Enum):
    IDLE = "idle"  # no reply in flight
    PREPARING = "preparing"  # reply started, nothing audible yet
    AUDIBLE = "audible"
    PAUSED = "paused"  # audible reply held while we decide whether the user is interrupting


class TurnCore:
    """The turn-taking state machine. Feed it inputs in time order; act on the decisions it returns.

    Call order: for every input call `feed(event, now)`; whenever `next_deadline()` is not ``None`` arrange to
    call `tick(now)` at (or just after) that time. After acting on `EndOfTurn` the driver starts a reply and
    must report `BotAudible(True)` when its first audio is heard and `BotAudible(False)` when playout ends;
    after `InterruptBot` the reply is gone (no `BotAudible(False)` is needed). Call `reply_finished()` when a
    reply ends without audio (e.g. an LLM error) so the core stops waiting for it.
    """

    def __init__(self, config: TurnConfig | None = None) -> None:
        self.config = config or TurnConfig()
        self._user_speaking = False
        self._speech_start = 0.0
        self._speech_end: float | None = None  # set while waiting for the endpoint
        self._segment = 0
        self._final_for: int | None = None  # segment id whose final transcript has arrived
        self._text = ""  # transcript of the utterance in progress
        self._kept_text = ""  # words already said this turn before a premature endpoint was cancelled
        self._bot = _Bot.IDLE
        self._pause_at: float | None = None
        self._blip_end: float | None = None  # a short speech during a pause ended here; awaiting its words

    # -------------------------------------------------------------------------------------------- queries

    @property
    def user_speaking(self) -> bool:
        """True between SpeechStart and SpeechEnd."""
        return self._user_speaking

    @property
    def bot_state(self) -> str:
        """``idle``, ``preparing``, ``audible`` or ``paused``."""
        return self._bot.value

    def next_deadline(self) -> float | None:
        """The earliest time at which `tick` may change something, or ``None``."""
        candidates: list[float] = []
        if self._bot is _Bot.PAUSED and self._pause_at is not None:
            if self._user_speaking:
                candidates.append(self._pause_at + self.config.min_interrupt_s + self.config.vad_end_delay_s)
            elif self._blip_end is not None:
                candidates.append(self._blip_end + self.config.false_interrupt_window_s)
        elif self._speech_end is not None and not self._user_speaking and self._final_for == self._segment:
            candidates.append(self._speech_end + self._wait_for(self._text))
        return min(candidates) if candidates else None

    # -------------------------------------------------------------------------------------------- inputs

    def feed(self, event: TurnInput, now: float) -> list[Decision]:
        """Apply one input observed at ``now``; return the decisions to act on, in order."""
        match event:
            case SpeechStart(t):
                return self._on_speech_start(t)
            case SpeechEnd(t):
                return self._on_speech_end(t, now)
            case Transcript(text, segment):
                out = self._on_transcript(text, segment, now)
                if out and isinstance(out[-1], InterruptBot):
                    out += self.tick(now)
                return out
            case BotAudible(audible):
                return self._on_bot_audible(audible)
        raise TypeError(f"unknown turn input {event!r}")  # pragma: no cover

    def tick(self, now: float) -> list[Decision]:
        """Advance timers to ``now``."""
        out: list[Decision] = []
        cfg = self.config
        if self._bot is _Bot.PAUSED and self._pause_at is not None:
            if self._user_speaking and now >= self._pause_at + cfg.min_interrupt_s + cfg.vad_end_delay_s:
                out += self._interrupt("barge_in")
            elif (
                not self._user_speaking
                and self._blip_end is not None
                and now >= self._blip_end + cfg.false_interrupt_window_s
            ):
                out += self._resume()
            return out
        if self._speech_end is not None and not self._user_speaking and self._final_for == self._segment:
            if now >= self._speech_end + self._wait_for(self._text):
                out += self._end_turn()
        return out

    def reply_finished(self) -> None:
        """The reply ended without (more) audio; the bot is idle again."""
        self._bot = _Bot.IDLE
        self._pause_at = self._blip_end = None
        self._kept_text = ""

    # ------------------------------------------------------------------------------------------ handlers

    def _on_speech_start(self, t: float) -> list[Decision]:
        out: list[Decision] = []
        self._user_speaking = True
        self._speech_start = t
        self._blip_end = None
        if self._speech_end is not None:
            # The user went on talking before the endpoint fired: same turn, keep collecting.
            self._speech_end = None
        if self._bot is _Bot.AUDIBLE:
            self._bot = _Bot.PAUSED
            self._pause_at = t
            out.append(PauseBot())
        elif self._bot is _Bot.PREPARING:
            # Premature endpoint: the reply nobody heard is dropped and the turn continues.
            out += self._interrupt("user_continued")
        return out

    def _on_speech_end(self, t: float, now: float) -> list[Decision]:
        self._user_speaking = False
        self._segment += 1
        out: list[Decision] = [RequestFinal(self._segment)]
        if self._bot is _Bot.PAUSED:
            self._blip_end = t
            return out
        self._speech_end = t
        out += self.tick(now)
        return out

    def _on_transcript(self, text: str, segment: int | None, now: float) -> list[Decision]:
        out: list[Decision] = []
        if segment is not None and segment != self._segment:
            return out  # a final for an older segment: the user spoke again since; a newer one is coming
        self._text = text.strip()
        if segment is not None:
            self._final_for = segment
        if self._bot is _Bot.PAUSED:
            words = normalise_words(self._text)
            if words and words not in self.config.backchannels:
                out += self._interrupt("barge_in")
            elif segment is not None and not self._user_speaking:
                # The blip's final transcript is empty or a backchannel: it was not a turn.
                out += self._resume()
            return out
        out += self.tick(now)
        return out

    def _on_bot_audible(self, audible: bool) -> list[Decision]:
        if audible:
            if self._bot in (_Bot.PREPARING, _Bot.IDLE):
                self._bot = _Bot.AUDIBLE
                self._kept_text = ""  # the reply is being heard: a later utterance is a new turn
        elif self._bot is not _Bot.PAUSED:
            self.reply_finished()
        return []

    # --------------------------------------------------------------------------------------- transitions

    def _wait_for(self, text: str) -> float:
        full = f"{self._kept_text} {text}".strip()
        match completeness(full):
            case Completeness.FINISHED:
                return self.config.finished_wait_s
            case Completeness.UNFINISHED:
                return self.config.unfinished_wait_s
        return self.config.unsure_wait_s

    def _end_turn(self) -> list[Decision]:
        assert self._speech_end is not None
        full = f"{self._kept_text} {self._text}".strip()
        end = self._speech_end
        self._reset_utterance()
        if not normalise_words(full):
            return [DiscardUtterance()]
        self._bot = _Bot.PREPARING
        self._kept_text = full  # kept in case the user continues before the reply is audible
        return [EndOfTurn(full, end)]

    def _interrupt(self, reason: str) -> list[Decision]:
        was_preparing = self._bot is _Bot.PREPARING
        blip_end = self._blip_end
        self._bot = _Bot.IDLE
        self._pause_at = self._blip_end = None
        if not was_preparing:
            self._kept_text = ""  # a new turn starts with the interrupting speech
        if blip_end is not None and not self._user_speaking:
            # The interrupting speech already ended ("Stop."): it is the user's turn, endpoint it normally.
            self._speech_end = blip_end
        return [InterruptBot(reason)]

    def _resume(self) -> list[Decision]:
        self._bot = _Bot.AUDIBLE
        self._pause_at = self._blip_end = None
        self._reset_utterance()
        return [ResumeBot()]

    def _reset_utterance(self) -> None:
        self._speech_end = None
        self._text = ""
        self._final_for = None
