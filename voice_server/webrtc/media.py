"""Audio between aiortc tracks and a realtime connection: the avatar's voice out, the microphone in.

Out: `BotAudioTrack` is paced by its consumer (aiortc's sender calls `recv` for each 20 ms frame); it plays
the frames the connection reads from the session's playout (`push`), or silence between them. Its queue holds
at most `MAX_QUEUED` frames, so after a barge-in at most that much already-read audio still plays.

In: `pump_microphone` turns the decoded frames of the caller's track (Opus → 48 kHz, s16, usually stereo even
for a mono microphone) into mono 48 kHz pcm16 for the connection.
"""

from __future__ import annotations

import asyncio
import collections
import time
from collections.abc import Callable
from fractions import Fraction

import av
import numpy as np
from aiortc import MediaStreamTrack
from aiortc.mediastreams import MediaStreamError

from pipeline.frames import Pcm

FRAME_S = 0.02
MAX_QUEUED = 2  # 40 ms: what can still play after the session stops reading the playout


class BotAudioTrack(MediaStreamTrack):
    """The avatar's outgoing audio track at ``rate`` Hz mono (aiortc's encoder resamples for Opus)."""

    kind = "audio"

    def __init__(self, rate: int) -> None:
        super().__init__()
        self.rate = rate
        self._samples = int(rate * FRAME_S)
        self._queue: collections.deque[Pcm] = collections.deque(maxlen=MAX_QUEUED)
        self._pending = np.zeros(0, dtype=np.int16)
        self._start: float | None = None
        self._pts = 0
        self.frames_sent = 0

    def push(self, pcm: Pcm) -> None:
        """Queue the avatar's audio (any length; cut into 20 ms frames, the oldest dropped beyond the bound)."""
        data = np.concatenate([self._pending, pcm]) if len(self._pending) else pcm
        whole = len(data) // self._samples * self._samples
        for i in range(0, whole, self._samples):
            self._queue.append(data[i : i + self._samples])
        self._pending = data[whole:]

    def clear(self) -> None:
        """Drop queued audio (the reply was interrupted)."""
        self._queue.clear()
        self._pending = np.zeros(0, dtype=np.int16)

    async def recv(self) -> av.AudioFrame:
        """The next 20 ms frame, no earlier than its time (the first one at once)."""
        if self.readyState != "live":
            raise MediaStreamError
        if self._start is None:
            self._start = time.monotonic()
        else:
            delay = self._start + self._pts / self.rate - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
        pcm = self._queue.popleft() if self._queue else np.zeros(self._samples, dtype=np.int16)
        frame = av.AudioFrame.from_ndarray(pcm.reshape(1, -1), format="s16", layout="mono")
        frame.sample_rate = self.rate
        frame.pts = self._pts
        frame.time_base = Fraction(1, self.rate)
        self._pts += self._samples
        self.frames_sent += 1
        return frame


def to_mono(frame: av.AudioFrame) -> Pcm:
    """Mono pcm16 of a decoded packed-s16 frame (channels averaged)."""
    data = frame.to_ndarray().reshape(-1)
    channels = len(frame.layout.channels)
    if channels > 1:
        data = data.reshape(-1, channels).astype(np.int32).mean(axis=1)
    mono: Pcm = data.astype(np.int16)
    return mono


async def pump_microphone(track: MediaStreamTrack, feed: Callable[[Pcm], None], rate: int) -> None:
    """Feed the caller's audio to ``feed`` until the track ends. Frames at another rate are skipped (Opus
    always decodes to 48 kHz; anything else would be a broken peer)."""
    while True:
        try:
            frame = await track.recv()
        except MediaStreamError:
            return
        if isinstance(frame, av.AudioFrame) and frame.sample_rate == rate and frame.format.name == "s16":
            feed(to_mono(frame))
