"""The pipeline `Transport` of a realtime WebSocket: client audio paced into the session, bot audio read out.

Clients send audio however suits them: a live microphone in small chunks, or a whole recording at once. The
session expects audio on its clock, like a phone call, so `RealtimeTransport.inputs` feeds it in 20 ms frames
no faster than real time (up to `LEAD_S` ahead, so live chunks pass without added delay). When a client
stops sending mid-stream, a short run of silence follows (after `JITTER_S` grace for a late packet), so the
VAD can end the turn instead of waiting forever for audio that will not come. Audio waiting to be fed is
bounded (`MAX_AHEAD_S`); beyond it `append_audio` refuses.

Out: while the avatar talks, `pump_output` reads the playout every 20 ms at real-time pace and hands each
non-silent frame to the connection, so "sent" means "heard" for the history, as in a call.
"""

from __future__ import annotations

import asyncio
import collections
from collections.abc import AsyncIterator, Callable

import numpy as np

from pipeline.frames import AudioIn, InputFrame, OutputEvent, Pcm, TextIn
from pipeline.playout import Playout

FRAME_S = 0.02
LEAD_S = 0.2  # feed at most this far ahead of real time
JITTER_S = 0.1  # a gap longer than this in a stream is treated as the client having stopped
PAD_S = 2.0  # silence fed after the client's audio stops (covers the longest end-of-turn wait)
MAX_AHEAD_S = 30.0  # audio buffered ahead of real time before appends are refused
MAX_TEXTS = 16  # typed messages waiting for the session
_EPS = 1e-6  # a wait shorter than this is no wait (float error must not turn into a spin)


class RealtimeTransport:
    """Adapts one realtime connection to `pipeline.ports.Transport`.

    Args:
        on_event: Receives every session event (synchronously, on the event loop).
        input_rate: Rate of appended audio (changeable with `set_input_rate`).
        output_rate: Rate at which the bot's audio is read.
    """

    def __init__(self, on_event: Callable[[OutputEvent], None], *, input_rate: int, output_rate: int) -> None:
        self._on_event = on_event
        self._rate = input_rate
        self._out_rate = output_rate
        self._audio: collections.deque[Pcm] = collections.deque()
        self._buffered = 0  # samples in _audio
        self._texts: collections.deque[TextIn] = collections.deque()
        self._wake = asyncio.Event()
        self._closed = False
        self._playout: Playout | None = None
        self._speaking = asyncio.Event()
        self.audio_t0: float | None = None  # loop time the first audio frame was fed

    # ---------------------------------------------------------------------------------- Transport protocol

    @property
    def audio_in_rate(self) -> int | None:
        return self._rate

    @property
    def audio_out_rate(self) -> int | None:
        return self._out_rate

    def attach_playout(self, playout: Playout | None) -> None:
        self._playout = playout

    async def send(self, event: OutputEvent) -> None:
        self._on_event(event)

    async def inputs(self) -> AsyncIterator[InputFrame]:
        """Typed messages as they come; audio in 20 ms frames at real-time pace (see the module docs)."""
        loop = asyncio.get_running_loop()
        due: float | None = None  # loop time at which the next audio frame is due
        last_real: float | None = None  # `due` just after the last real (non-padding) frame
        while not self._closed:
            while self._texts:
                yield self._texts.popleft()
            n = int(self._rate * FRAME_S)
            now = loop.time()
            if self._buffered >= n:
                if due is None or due < now - LEAD_S:
                    due = now  # idle before, or fell behind: restart the clock
                if self.audio_t0 is None:
                    self.audio_t0 = now
                if due > now + LEAD_S + _EPS:
                    await self._wait(due - now - LEAD_S)
                    continue
                yield AudioIn(self._take(n), self._rate)
                due += FRAME_S
                last_real = due
            elif due is not None and last_real is not None and due - last_real < PAD_S:
                if now + _EPS < due + JITTER_S:
                    await self._wait(due + JITTER_S - now)
                    continue
                yield AudioIn(np.zeros(n, np.int16), self._rate)
                due += FRAME_S
            else:
                await self._wait(None)

    # ------------------------------------------------------------------------------ connection-side API

    def append_audio(self, pcm: Pcm) -> bool:
        """Queue client audio at the current input rate; False (and nothing queued) when it would put more
        than `MAX_AHEAD_S` ahead of real time."""
        if self._buffered + len(pcm) > MAX_AHEAD_S * self._rate:
            return False
        if len(pcm):
            self._audio.append(pcm)
            self._buffered += len(pcm)
            self._wake.set()
        return True

    def clear_audio(self) -> None:
        """Drop client audio not yet fed to the session."""
        self._audio.clear()
        self._buffered = 0

    def set_input_rate(self, rate: int) -> None:
        """Later appends are at ``rate``; audio queued at the old rate is dropped."""
        if rate != self._rate:
            self.clear_audio()
            self._rate = rate

    def push_text(self, text: str, instructions: str | None = None) -> bool:
        """Queue a typed message for the session and ask for an answer (``instructions``: the persona for that
        answer only; an empty ``text``: answer the conversation as it stands); False when `MAX_TEXTS` are
        already waiting."""
        if len(self._texts) >= MAX_TEXTS:
            return False
        self._texts.append(TextIn(text, instructions, respond=True))
        self._wake.set()
        return True

    def close(self) -> None:
        """End the input stream (the session then shuts down)."""
        self._closed = True
        self._speaking.clear()
        self._wake.set()

    def set_speaking(self, active: bool) -> None:
        """Start or stop reading the bot's audio (only while a spoken reply is under way)."""
        if active and not self._closed:
            self._speaking.set()
        else:
            self._speaking.clear()

    async def pump_output(self, deliver: Callable[[Pcm], None]) -> None:
        """Read the playout at real-time pace while speaking; ``deliver`` each non-silent 20 ms frame.
        Runs until cancelled."""
        loop = asyncio.get_running_loop()
        n = int(self._out_rate * FRAME_S)
        while True:
            await self._speaking.wait()
            due = loop.time()
            while self._speaking.is_set() and self._playout is not None:
                pcm = self._playout.read(n)
                if pcm.any():
                    deliver(pcm)
                due += FRAME_S
                await asyncio.sleep(max(0.0, due - loop.time()))
            if self._playout is None:
                return

    # ------------------------------------------------------------------------------------------ private

    def _take(self, n: int) -> Pcm:
        out = np.empty(n, np.int16)
        filled = 0
        while filled < n:
            head = self._audio[0]
            k = min(n - filled, len(head))
            out[filled : filled + k] = head[:k]
            filled += k
            if k == len(head):
                self._audio.popleft()
            else:
                self._audio[0] = head[k:]
        self._buffered -= n
        return out

    async def _wait(self, delay: float | None) -> None:
        """Sleep until woken (audio, text, close) or ``delay`` seconds pass."""
        self._wake.clear()
        try:
            async with asyncio.timeout(delay):
                await self._wake.wait()
        except TimeoutError:
            pass
