"""RTP media pieces for one call, no sockets: G.711, the jitter buffer, RFC 4733 DTMF, the outbound stream.

Packets are parsed and built with aiortc's `RtpPacket` and G.711 is coded with aiortc's codecs (libav's
``pcm_mulaw``/``pcm_alaw``), as the issue asks: maintained code, not a hand-rolled table. Everything here is
driven by explicit calls (``push``/``pop``/``next_packet``) so it is tested without a network or a clock.
"""

from __future__ import annotations

import collections
import random
from dataclasses import dataclass
from fractions import Fraction

import av
import numpy as np
from aiortc.codecs.g711 import PcmaDecoder, PcmaEncoder, PcmuDecoder, PcmuEncoder
from aiortc.jitterbuffer import JitterFrame
from aiortc.rtp import RtpPacket

from pipeline.frames import Pcm

RATE = 8000
FRAME_SAMPLES = 160  # 20 ms at 8 kHz
_TIME_BASE = Fraction(1, RATE)
DTMF_EVENTS = "0123456789*#ABCD"  # RFC 4733 §3.2 event codes 0-15


class G711:
    """One call's G.711 encoder and decoder (``PCMU`` or ``PCMA``), 20 ms frames of 8 kHz int16."""

    def __init__(self, codec: str) -> None:
        if codec not in ("PCMU", "PCMA"):
            raise ValueError(f"unsupported codec {codec}")
        self.codec = codec
        self._enc = PcmuEncoder() if codec == "PCMU" else PcmaEncoder()
        self._dec = PcmuDecoder() if codec == "PCMU" else PcmaDecoder()
        self._pts = 0
        self.silence = self.encode(np.zeros(FRAME_SAMPLES, np.int16))

    def encode(self, pcm: Pcm) -> bytes:
        """One 160-sample frame → 160 payload bytes."""
        frame = av.AudioFrame.from_ndarray(pcm.reshape(1, -1), format="s16", layout="mono")
        frame.sample_rate, frame.pts, frame.time_base = RATE, self._pts, _TIME_BASE
        self._pts += len(pcm)
        payloads, _ = self._enc.encode(frame)
        return b"".join(payloads)

    def decode(self, payload: bytes) -> Pcm:
        """A payload (any length) → int16 samples (one per byte)."""
        if not payload:
            return np.zeros(0, np.int16)
        frames = self._dec.decode(JitterFrame(payload, 0))
        arrays = [f.to_ndarray().reshape(-1) for f in frames if isinstance(f, av.AudioFrame)]
        pcm: Pcm = np.concatenate(arrays).astype(np.int16) if arrays else np.zeros(0, np.int16)
        return pcm


@dataclass(slots=True)
class JitterStats:
    """Counters of one jitter buffer (exported per call for tests and logs)."""

    received: int = 0
    duplicates: int = 0
    late: int = 0
    lost: int = 0
    concealed: int = 0
    overflow: int = 0
    jitter_ms: float = 0.0  # RFC 3550 §6.4.1 interarrival jitter estimate


class JitterBuffer:
    """A small adaptive jitter buffer for 20 ms G.711 packets.

    `push` stores packets by sequence number (reordering them; duplicates and packets older than what was
    already played are dropped). `pop`, called once per 20 ms by the receiver's clock, returns the next
    frame's payload, or ``None`` for a frame that is missing (the caller conceals it). Playback starts once
    `target` frames are buffered; the target follows the measured interarrival jitter (2× jitter, between
    `min_frames` and `max_frames`), so a clean loopback call adds 20-40 ms and a jittery trunk more. The buffer
    holds at most `capacity` frames; beyond that the oldest are dropped (a peer sending faster than real time
    cannot grow memory or delay).
    """

    def __init__(self, *, min_frames: int = 2, max_frames: int = 10, capacity: int = 50) -> None:
        self.min_frames, self.max_frames, self.capacity = min_frames, max_frames, capacity
        self._frames: dict[int, bytes] = {}
        self._next: int | None = None  # extended sequence number of the next frame to play
        self._highest: int | None = None  # highest extended sequence number seen
        self._playing = False
        self._transit: float | None = None
        self.stats = JitterStats()

    @property
    def target(self) -> int:
        """Frames buffered before playback (re)starts."""
        frames = int(2 * self.stats.jitter_ms / 20.0 + 0.999)
        return max(self.min_frames, min(self.max_frames, frames))

    @property
    def depth(self) -> int:
        """Frames buffered now."""
        return len(self._frames)

    def push(self, seq: int, timestamp: int, payload: bytes, arrival_s: float) -> int:
        """Store one packet (``seq`` 16-bit, ``timestamp`` in 8 kHz units, ``arrival_s`` on any clock); returns
        its extended (wrap-free) sequence number."""
        ext = self._extend(seq)
        self.stats.received += 1
        self._update_jitter(timestamp, arrival_s)
        if self._next is not None and ext < self._next:
            self.stats.late += 1
            return ext
        if ext in self._frames:
            self.stats.duplicates += 1
            return ext
        self._frames[ext] = payload
        self._highest = ext if self._highest is None else max(self._highest, ext)
        if self._next is None:
            self._next = ext
        elif ext < self._next:
            self._next = ext
        while len(self._frames) > self.capacity:
            oldest = min(self._frames)
            del self._frames[oldest]
            self.stats.overflow += 1
            self._next = min(self._frames)
        return ext

    def pop(self) -> tuple[bytes | None, bool]:
        """The next 20 ms frame: ``(payload, True)``, ``(None, True)`` for a lost one to conceal, or
        ``(None, False)`` while not playing (buffering, or the stream stopped)."""
        if not self._playing:
            if self._next is None or len(self._frames) < self.target:
                return None, False
            self._playing = True
        if not self._frames:
            self._playing = False  # the peer stopped sending (silence suppression, hold): rebuffer
            return None, False
        assert self._next is not None
        payload = self._frames.pop(self._next, None)
        self._next += 1
        if payload is None:
            self.stats.lost += 1
            if self._next <= min(self._frames) - self.max_frames:  # a long gap: jump to what is there
                self._next = min(self._frames)
            return None, True
        return payload, True

    def _extend(self, seq: int) -> int:
        """16-bit sequence number → extended (wrap-around aware, RFC 3550 A.1 in spirit)."""
        highest = self._highest
        if highest is None:
            return seq + 65536  # headroom below so a slightly older first packet stays positive
        base = highest - (highest & 0xFFFF)
        candidates = (base - 65536 + seq, base + seq, base + 65536 + seq)
        return min(candidates, key=lambda c: abs(c - highest))

    def _update_jitter(self, timestamp: int, arrival_s: float) -> None:
        transit = arrival_s * RATE - timestamp
        if self._transit is not None:
            d = abs(transit - self._transit)
            if d < RATE * 10:  # a timestamp jump (new talk-spurt source) is not jitter
                jitter = self.stats.jitter_ms * RATE / 1000.0
                jitter += (d - jitter) / 16.0
                self.stats.jitter_ms = jitter * 1000.0 / RATE
        self._transit = transit


class Concealer:
    """Loss concealment for G.711: repeat the last good frame, fading out over three frames, then silence."""

    def __init__(self) -> None:
        self._last = np.zeros(FRAME_SAMPLES, np.int16)
        self._missing = 0

    def good(self, pcm: Pcm) -> Pcm:
        """Remember a received frame; returns it unchanged."""
        if len(pcm) == FRAME_SAMPLES:
            self._last = pcm
        self._missing = 0
        return pcm

    def conceal(self) -> Pcm:
        """A stand-in for one missing frame."""
        self._missing += 1
        gain = max(0.0, 1.0 - 0.33 * self._missing)
        out: Pcm = (self._last.astype(np.float32) * gain).astype(np.int16)
        return out


class DtmfDecoder:
    """RFC 4733 telephone-event packets → digits, each key press reported once.

    A press is one event timestamp: its packets (start, updates, and the end packet sent three times for
    redundancy) all carry that timestamp. The digit is reported on the first packet seen for a new timestamp,
    so the press counts even when its first packets were lost and only the end packets arrived.
    """

    def __init__(self) -> None:
        self._seen: collections.deque[int] = collections.deque(maxlen=8)

    def feed(self, payload: bytes, timestamp: int) -> str | None:
        """One telephone-event payload; the digit when it starts a new press, else ``None``.

        Raises:
            ValueError: When the payload is shorter than the 4 bytes of an event.
        """
        if len(payload) < 4:
            raise ValueError("telephone-event payload shorter than 4 bytes")
        event = payload[0]
        if timestamp in self._seen:
            return None
        self._seen.append(timestamp)
        return DTMF_EVENTS[event] if event < len(DTMF_EVENTS) else None


@dataclass(slots=True)
class RtpSender:
    """The outbound stream's state: continuous sequence numbers and timestamps, marker at talk-spurt starts.

    The timestamp advances 160 per 20 ms tick whether a packet is sent or not (on hold nothing is sent, and the
    peer sees the gap in timestamps, as RFC 3550 intends).
    """

    ssrc: int
    seq: int
    timestamp: int
    _voiced: bool = False

    @classmethod
    def new(cls) -> RtpSender:
        """Random SSRC, initial sequence number and timestamp (RFC 3550 §5.1)."""
        rng = random.SystemRandom()
        return cls(rng.getrandbits(32), rng.getrandbits(16), rng.getrandbits(32))

    def packet(self, payload_type: int, payload: bytes, *, voiced: bool) -> bytes:
        """Build the next packet; the marker bit is set on the first voiced packet after silence."""
        marker = 1 if voiced and not self._voiced else 0
        self._voiced = voiced
        pkt = RtpPacket(payload_type, marker, self.seq, self.timestamp, self.ssrc, payload)
        self.seq = (self.seq + 1) & 0xFFFF
        self.timestamp = (self.timestamp + FRAME_SAMPLES) & 0xFFFFFFFF
        return bytes(pkt.serialize())

    def skip(self) -> None:
        """A tick without a packet (on hold): only the timestamp advances."""
        self.timestamp = (self.timestamp + FRAME_SAMPLES) & 0xFFFFFFFF

    def event(self, payload_type: int, payload: bytes, timestamp: int, *, marker: bool) -> bytes:
        """A telephone-event packet (used by the project's UAC to send DTMF)."""
        pkt = RtpPacket(payload_type, int(marker), self.seq, timestamp, self.ssrc, payload)
        self.seq = (self.seq + 1) & 0xFFFF
        return bytes(pkt.serialize())


def parse_packet(data: bytes) -> RtpPacket:
    """Parse one RTP packet (aiortc), RTCP and garbage rejected.

    Raises:
        ValueError: When ``data`` is not an RTP version 2 packet.
    """
    if len(data) < 12 or data[0] >> 6 != 2 or 72 <= (data[1] & 0x7F) <= 79:  # 200-207 with marker = RTCP
        raise ValueError("not an RTP packet")
    return RtpPacket.parse(data)
