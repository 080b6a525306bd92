"""Audio between aiortc tracks and a realtime connection: the avatar's voice out, the microphone in.

Out: `BotAudioTrack` is paced by its consumer (aiortc's sender calls `recv` for each 20 ms packet); it sends
the frames the connection reads from the session's playout (`push`), Opus-encoded here, or a cached silent
packet between them. Its queue holds at most `MAX_QUEUED` frames, so after a barge-in at most that much
already-read audio still plays.

In: `pump_microphone` turns the decoded frames of the caller's track (Opus → 48 kHz, s16, usually stereo even
for a mono microphone) into mono 48 kHz pcm16 for the connection.
"""

from __future__ import annotations

import asyncio
import collections
import time
from collections.abc import Callable
from fractions import Fraction
from typing import Any

import av
import numpy as np
from aiortc import MediaStreamTrack
from aiortc.mediastreams import MediaStreamError

from pipeline.frames import Pcm

FRAME_S = 0.02
MAX_QUEUED = 2  # 40 ms: what can still play after the session stops reading the playout
OPUS_RATE = 48_000


class OpusFrames:
    """Encodes the avatar's mono pcm16 into 20 ms Opus packets (48 kHz stereo, as negotiated for Opus).

    The track hands aiortc finished packets rather than frames: aiortc would otherwise encode every frame of
    every call on its thread pool, silence included. Here silence costs nothing (one cached packet, reused) and
    speech is encoded inline (~0.15 ms a frame, resampling included).
    """

    def __init__(self, rate: int) -> None:
        self._codec = av.CodecContext.create("libopus", "w")
        self._codec.sample_rate = OPUS_RATE
        self._codec.layout = "stereo"
        self._codec.format = "s16"
        self._codec.bit_rate = 64_000
        self._codec.options = {"application": "voip"}
        self._codec.open()
        self._resampler = av.AudioResampler(format="s16", layout="stereo", rate=OPUS_RATE)
        self._rate = rate
        self.silence = self._encode_silence()

    def encode(self, pcm: Pcm) -> list[bytes]:
        """Opus payloads for ``pcm`` (the encoder's lookahead can make it 0 or 2 for one 20 ms frame)."""
        frame = av.AudioFrame.from_ndarray(pcm.reshape(1, -1), format="s16", layout="mono")
        frame.sample_rate = self._rate
        payloads: list[bytes] = []
        for resampled in self._resampler.resample(frame):
            payloads += [bytes(packet) for packet in self._codec.encode(resampled)]
        return payloads

    def _encode_silence(self) -> bytes:
        zeros = np.zeros(int(self._rate * FRAME_S), dtype=np.int16)
        for _ in range(10):  # past the encoder's lookahead
            payloads = self.encode(zeros)
        return payloads[-1]


class BotAudioTrack(MediaStreamTrack):
    """The avatar's outgoing audio: ``rate`` Hz mono pcm in (`push`), one Opus packet out per 20 ms."""

    kind = "audio"

    def __init__(self, rate: int) -> None:
        super().__init__()
        self.rate = rate
        self._samples = int(rate * FRAME_S)
        self._opus = OpusFrames(rate)
        self._queue: collections.deque[Pcm] = collections.deque(maxlen=MAX_QUEUED)
        self._encoded: collections.deque[bytes] = collections.deque(maxlen=MAX_QUEUED)
        self._pending = np.zeros(0, dtype=np.int16)
        self._start: float | None = None
        self._index = 0  # 20 ms packets sent
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
        self._encoded.clear()
        self._pending = np.zeros(0, dtype=np.int16)

    async def recv(self) -> av.Packet[Any]:
        """The next 20 ms Opus packet, no earlier than its time (the first one at once)."""
        if self.readyState != "live":
            raise MediaStreamError
        if self._start is None:
            self._start = time.monotonic()
        else:
            delay = self._start + self._index * FRAME_S - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
        if self._queue:
            self._encoded.extend(self._opus.encode(self._queue.popleft()))
        payload = self._encoded.popleft() if self._encoded else self._opus.silence
        packet = av.Packet(payload)
        packet.pts = self._index * int(OPUS_RATE * FRAME_S)
        packet.time_base = Fraction(1, OPUS_RATE)
        self._index += 1
        self.frames_sent += 1
        return packet


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
