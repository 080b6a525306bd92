"""An in-process transport: plays scripted audio into a session at real time and records what comes out.

It behaves like a phone call with a perfect network: every 20 ms it sends one microphone frame (the scripted
clips mixed at their start times, silence otherwise) and reads one frame of the bot's audio from the
playout, exactly as a WebRTC track or RTP sender would. Used by the integration tests and the voice-loop
benchmark; also handy for trying the pipeline from a script.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import numpy as np

from pipeline.frames import AudioIn, InputFrame, OutputEvent, Pcm, ReplyDone, TextIn
from pipeline.playout import Playout

FRAME_S = 0.02


@dataclass(slots=True)
class _Clip:
    start: float
    pcm: Pcm  # at the transport's input rate


@dataclass(slots=True)
class OutputFrame:
    """One 20 ms frame the bot sent: when it was read and how loud it was."""

    t: float
    peak: int


@dataclass
class LocalTransport:
    """Scripted microphone in, recorded speaker out.

    Args:
        audio_in_rate: Rate of the scripted clips and the frames sent to the session.
        audio_out_rate: Rate at which the bot's audio is read.
        duration_s: How long the call lasts (from the first frame); inputs end after it.

    After the session ends: ``output`` holds the bot's audio, ``frames`` one `OutputFrame` per 20 ms,
    ``events`` every event the session sent, and ``t0`` the session-clock time of the first frame
    (script times are relative to it).
    """

    audio_in_rate: int | None = 16_000
    audio_out_rate: int | None = 24_000
    duration_s: float = 10.0
    events: list[tuple[float, OutputEvent]] = field(default_factory=list)
    frames: list[OutputFrame] = field(default_factory=list)
    t0: float = 0.0
    _clips: list[_Clip] = field(default_factory=list)
    _injected: list[tuple[float, InputFrame]] = field(default_factory=list)
    _on_bot_audio: list[tuple[float, Pcm]] = field(default_factory=list)
    _out: list[Pcm] = field(default_factory=list)
    _playout: Playout | None = None
    _turns: list[Pcm | str] = field(default_factory=list)
    _turn_gap_s: float | None = None  # set by take_turns
    closed: asyncio.Event = field(default_factory=asyncio.Event)

    def play(self, start_s: float, pcm: Pcm) -> None:
        """Schedule ``pcm`` (int16 at ``audio_in_rate``) to be spoken ``start_s`` seconds into the call."""
        self._clips.append(_Clip(start_s, pcm))

    def play_after_bot_starts(self, delay_s: float, pcm: Pcm) -> None:
        """Speak ``pcm`` ``delay_s`` after the bot's audio next becomes audible (a scripted barge-in)."""
        self._on_bot_audio.append((delay_s, pcm))

    def take_turns(self, turns: list[Pcm | str], *, first_at_s: float = 0.5, gap_s: float = 0.8) -> None:
        """Say the first turn at ``first_at_s``, and each next one ``gap_s`` after the bot's answer to the
        previous one ended; the call then ends ``gap_s`` after the last answer (or at ``duration_s``,
        whichever comes first — a turn that gets no answer does not hang the call). A turn is a clip to
        speak (int16 at ``audio_in_rate``) or a message to type."""
        if not turns:
            return
        self._turns = list(turns[1:])
        self._turn_gap_s = gap_s
        self._say(first_at_s, turns[0])

    def _say(self, at_s: float, turn: Pcm | str) -> None:
        if isinstance(turn, str):
            self.type_text(at_s, turn)
        else:
            self.play(at_s, turn)

    def type_text(self, at_s: float, text: str) -> None:
        """Schedule a typed message."""
        self.inject(at_s, TextIn(text))

    def inject(self, at_s: float, frame: InputFrame) -> None:
        """Schedule any input frame (a typed message, DTMF, or a malformed audio frame in tests)."""
        self._injected.append((at_s, frame))
        self._injected.sort(key=lambda item: item[0])

    def attach_playout(self, playout: Playout | None) -> None:
        self._playout = playout

    async def send(self, event: OutputEvent) -> None:
        now = asyncio.get_running_loop().time() - self.t0
        self.events.append((now, event))
        if isinstance(event, ReplyDone) and not event.interrupted and self._turn_gap_s is not None:
            if self._turns:
                self._say(now + self._turn_gap_s, self._turns.pop(0))
            else:
                self.duration_s = min(self.duration_s, now + self._turn_gap_s)

    @property
    def output(self) -> Pcm:
        """Everything the bot played, concatenated (silence included)."""
        return np.concatenate(self._out) if self._out else np.zeros(0, np.int16)

    async def inputs(self) -> AsyncIterator[InputFrame]:
        loop = asyncio.get_running_loop()
        self.t0 = loop.time()
        n_in = int(self.audio_in_rate * FRAME_S) if self.audio_in_rate else 0
        n_out = int(self.audio_out_rate * FRAME_S) if self.audio_out_rate else 0
        frame = 0
        try:
            while (t := frame * FRAME_S) < self.duration_s:
                # Absolute schedule: sleeping "20 ms" each time would drift by the work done in between.
                await asyncio.sleep(max(0.0, self.t0 + t - loop.time()))
                while self._injected and self._injected[0][0] <= t:
                    yield self._injected.pop(0)[1]
                if self.audio_in_rate:
                    yield AudioIn(self._mix(frame * n_in, n_in), self.audio_in_rate)
                if self._playout is not None and n_out:
                    out = self._playout.read(n_out)
                    self._out.append(out)
                    peak = int(np.abs(out).max(initial=0))
                    self.frames.append(OutputFrame(loop.time() - self.t0, peak))
                    if peak > 300 and self._on_bot_audio:
                        delay, pcm = self._on_bot_audio.pop(0)
                        self.play(t + FRAME_S + delay, pcm)
                frame += 1
        finally:
            self.closed.set()

    def _mix(self, start: int, n: int) -> Pcm:
        assert self.audio_in_rate is not None
        mixed = np.zeros(n, np.int32)
        for clip in self._clips:
            offset = start - int(clip.start * self.audio_in_rate)
            if offset + n <= 0 or offset >= len(clip.pcm):
                continue
            lo, hi = max(0, offset), min(len(clip.pcm), offset + n)
            mixed[lo - offset : hi - offset] += clip.pcm[lo:hi]
        out: Pcm = np.clip(mixed, -32768, 32767).astype(np.int16)
        return out

    def audible_after(self, t: float, threshold: int = 300) -> float | None:
        """Time of the first output frame louder than ``threshold`` at or after ``t``."""
        for f in self.frames:
            if f.t >= t and f.peak > threshold:
                return f.t
        return None

    def silent_after(self, t: float, threshold: int = 300) -> float | None:
        """Time of the first quiet output frame at or after ``t``."""
        for f in self.frames:
            if f.t >= t and f.peak <= threshold:
                return f.t
        return None
