"""The bot's outgoing audio: a bounded buffer that the transport drains at real-time pace.

The real-time consumer sets the pace: the transport calls `Playout.read` every 20 ms (aiortc's track
``recv()``, the RTP sender, or a test clock) and always gets exactly the samples it asked for (silence when
there is nothing to play). Producers ``await write()`` and wait for room, so at most ``max_buffered_s`` of
audio is ever ahead of the listener — which is what lets a barge-in stop the bot within one read.

The buffer also knows *what was heard*: each chunk carries the text it speaks, and `heard_text` maps the
samples actually read back to words, so only words the user heard enter the conversation history.
"""

from __future__ import annotations

import asyncio
import collections
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np

from pipeline.frames import Pcm

FADE_S = 0.004  # a 4 ms ramp at pause/stop/resume edges avoids an audible click


@dataclass(slots=True)
class _Segment:
    """One written chunk: its samples (consumed from the front) and the text it speaks."""

    reply_id: int
    pcm: Pcm
    text: str
    offset: int = 0  # samples of pcm already read


@dataclass(slots=True)
class _ReplyAudio:
    """Per-reply accounting for heard-text alignment and playout events."""

    spans: list[tuple[int, int, str]] = field(default_factory=list)  # (start, end, text) in reply samples
    written: int = 0
    played: int = 0
    ended: bool = False  # the producer wrote everything
    started: bool = False  # first sample was read


class Playout:
    """Bounded, pausable, clearable audio queue with heard-text accounting.

    Args:
        sample_rate: Rate of the samples written and read (the transport's output rate).
        max_buffered_s: High-water mark: ``write`` waits while more than this is queued.
        on_first_audio: Called with the reply id when its first sample is read (i.e. becomes audible).
        on_drained: Called with the reply id when its last sample has been read after `end_reply`.

    Not thread-safe: use it from the event loop only.
    """

    def __init__(
        self,
        sample_rate: int,
        *,
        max_buffered_s: float = 1.0,
        on_first_audio: Callable[[int], None] | None = None,
        on_drained: Callable[[int], None] | None = None,
    ) -> None:
        self.sample_rate = sample_rate
        self._high_water = int(max_buffered_s * sample_rate)
        self._queue: collections.deque[_Segment] = collections.deque()
        self._buffered = 0
        self._replies: dict[int, _ReplyAudio] = {}
        self._room = asyncio.Event()
        self._room.set()
        self._paused = False
        self._pausing = False
        self._fade = int(FADE_S * sample_rate)
        self._fade_in_pending = False
        self._on_first_audio = on_first_audio
        self._on_drained = on_drained
        self._starved = False
        self.underruns = 0  # times a reply ran dry mid-way (its next clause was not synthesised in time)
        self.underrun_s = 0.0  # silence those gaps added

    # ------------------------------------------------------------------------------------------ producer

    async def write(self, reply_id: int, pcm: Pcm, text: str = "") -> bool:
        """Queue ``pcm`` for ``reply_id``; wait while the buffer is above its high-water mark.

        Returns:
            False if the reply was cleared (interrupted) meanwhile; the audio was dropped and the producer
            should stop.
        """
        reply = self._replies.setdefault(reply_id, _ReplyAudio())
        while self._buffered > self._high_water:
            self._room.clear()
            await self._room.wait()
            if reply_id not in self._replies:
                return False
        if reply_id not in self._replies or len(pcm) == 0:
            return reply_id in self._replies
        reply.spans.append((reply.written, reply.written + len(pcm), text))
        reply.written += len(pcm)
        self._queue.append(_Segment(reply_id, pcm, text))
        self._buffered += len(pcm)
        return True

    def end_reply(self, reply_id: int) -> None:
        """No more audio will be written for ``reply_id``; `on_drained` fires once it has all been read."""
        reply = self._replies.get(reply_id)
        if reply is None:
            return
        reply.ended = True
        self._check_drained(reply_id, reply)

    # ------------------------------------------------------------------------------------------ consumer

    def read(self, n: int) -> Pcm:
        """Return exactly ``n`` samples: queued audio, then silence. Never blocks."""
        out = np.zeros(n, np.int16)
        if self._paused:
            return out
        if self._pausing:
            # Play a few ms more, ramped down, so the stop does not click; then hold.
            filled = self._take(out, min(n, self._fade))
            out[:filled] = (out[:filled] * np.linspace(1.0, 0.0, filled)).astype(np.int16)
            self._pausing = False
            self._paused = True
            return out
        filled = self._take(out, n)
        if filled < n and any(r.started and not r.ended for r in self._replies.values()):
            self.underruns += not self._starved
            self._starved = True
            self.underrun_s += (n - filled) / self.sample_rate
        else:
            self._starved = False
        if self._fade_in_pending and filled:
            self._fade_in_pending = False
            ramp = min(self._fade, filled)
            out[:ramp] = (out[:ramp] * np.linspace(0.0, 1.0, ramp)).astype(np.int16)
        return out

    def _take(self, out: Pcm, n: int) -> int:
        """Move up to ``n`` queued samples into ``out``; return how many."""
        filled = 0
        while filled < n and self._queue:
            seg = self._queue[0]
            take = min(n - filled, len(seg.pcm) - seg.offset)
            out[filled : filled + take] = seg.pcm[seg.offset : seg.offset + take]
            seg.offset += take
            filled += take
            self._buffered -= take
            reply = self._replies.get(seg.reply_id)
            if reply is not None:
                if not reply.started:
                    reply.started = True
                    if self._on_first_audio is not None:
                        self._on_first_audio(seg.reply_id)
                reply.played += take
            if seg.offset >= len(seg.pcm):
                self._queue.popleft()
                if reply is not None:
                    self._check_drained(seg.reply_id, reply)
        if self._buffered <= self._high_water:
            self._room.set()
        return filled

    # --------------------------------------------------------------------------------------------- control

    def pause(self) -> None:
        """Stop playing at the next read (after a 4 ms fade-out), keeping the queue."""
        if not self._paused:
            self._pausing = True

    def resume(self) -> None:
        """Continue from where `pause` stopped (with a short fade-in)."""
        if self._paused or self._pausing:
            self._paused = self._pausing = False
            self._fade_in_pending = True

    def clear(self, reply_id: int) -> None:
        """Drop everything queued for ``reply_id`` and forget it; writers waiting for room are released.

        The next read fades out over 4 ms what was playing instead of cutting it mid-wave — unless playback
        was already paused (faded out): then a fade would be a click of audio nobody was hearing.
        """
        kept = collections.deque(seg for seg in self._queue if seg.reply_id != reply_id)
        head = self._queue[0] if self._queue else None
        if head is not None and head.reply_id == reply_id and head.offset < len(head.pcm) and not self._paused:
            tail = head.pcm[head.offset : head.offset + self._fade]
            ramp = (tail * np.linspace(1.0, 0.0, len(tail))).astype(np.int16)
            kept.appendleft(_Segment(-1, ramp, ""))
        self._queue = kept
        self._buffered = sum(len(seg.pcm) - seg.offset for seg in kept)
        self._replies.pop(reply_id, None)
        self._paused = self._pausing = False
        self._room.set()

    @property
    def paused(self) -> bool:
        return self._paused or self._pausing

    @property
    def buffered_s(self) -> float:
        """Seconds of audio queued and not yet read."""
        return self._buffered / self.sample_rate

    def played_s(self, reply_id: int) -> float:
        """Seconds of ``reply_id`` read so far (0 for an unknown reply)."""
        reply = self._replies.get(reply_id)
        return reply.played / self.sample_rate if reply else 0.0

    def spans_s(self, reply_id: int) -> tuple[tuple[float, float, str], ...]:
        """The chunks written for ``reply_id`` as (start s, end s, text) in the reply's own audio time."""
        reply = self._replies.get(reply_id)
        if reply is None:
            return ()
        rate = self.sample_rate
        return tuple((start / rate, end / rate, text) for start, end, text in reply.spans)

    def heard_text(self, reply_id: int) -> str:
        """The text of ``reply_id`` covered by the samples read so far.

        Whole chunks that were read count fully; in a partly read chunk, the share of its words equal to the
        share of its samples read (rounded down: a word half-heard was not heard).
        """
        reply = self._replies.get(reply_id)
        return heard_text(reply.spans, reply.played) if reply else ""

    # ------------------------------------------------------------------------------------------- private

    def _check_drained(self, reply_id: int, reply: _ReplyAudio) -> None:
        if reply.ended and reply.played >= reply.written and self._on_drained is not None:
            self._on_drained(reply_id)


def heard_text(spans: Sequence[tuple[float, float, str]], played: float) -> str:
    """Words of ``spans`` (ranges of samples, or seconds, with their text) covered by the first ``played``
    (in the same unit)."""
    words: list[str] = []
    for start, end, text in spans:
        if played >= end:
            words += text.split()
        elif played > start:
            chunk_words = text.split()
            share = (played - start) / (end - start)
            words += chunk_words[: int(len(chunk_words) * share)]
            break
        else:
            break
    return " ".join(words)
