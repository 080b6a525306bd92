"""A scripted WebRTC caller for `bench.webrtc_call`: aiortc as the client peer of ``/v1/realtime/calls``.

`CallPeer` places a call like the call page does (an ``oai-events`` data channel, an SDP offer posted with a
bearer token, ``DELETE`` on the returned location to hang up) and keeps, on the client's own clock
(`time.monotonic`):

* every data-channel event with its arrival time;
* the avatar's audio, twice: when each RTP packet arrived (**wire** time, before aiortc's jitter buffer) and
  when its decoded frame came out of the track (**track** time: what an aiortc application hears). aiortc's
  audio jitter buffer releases a packet only once 4 later ones are in (``JitterBuffer(capacity=16,
  prefetch=4)``), so track time is wire time plus ~80 ms plus decoding; a browser's adaptive buffer holds
  ~20-40 ms on a quiet link. Decoded frames are matched to their packet by RTP timestamp.

`ScriptedMicrophone` is the caller's microphone: clips queued with `ScriptedMicrophone.say` at real-time
pace, digital silence in between. A frame leaves at the *end* of its 20 ms, as from a capture device, so
the moment a voiced sample was "spoken" is known exactly: the frame's send time minus the samples after it.

`idle_worker` runs in a subprocess (``multiprocessing``, spawn) and holds many silent calls for the
idle-capacity phase, so that client-side work is spread over several interpreters instead of one event
loop; it is driven by the small command set `OpenCalls` / `Measure` / `HangUpAll`.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import json
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from fractions import Fraction
from multiprocessing.connection import Connection
from typing import Any

import av
import httpx
import numpy as np
import numpy.typing as npt
from aiortc import MediaStreamTrack, RTCPeerConnection, RTCRtpReceiver, RTCSessionDescription
from aiortc.mediastreams import MediaStreamError
from aiortc.rtp import RtpPacket

RATE = 48_000  # Opus / WebRTC
FRAME = 960  # samples in 20 ms
FRAME_S = FRAME / RATE
AUDIBLE = 500  # a decoded frame whose |sample| peak exceeds this is audible (espeak and Piper peak at ~10k+)
CALLS_PATH = "/v1/realtime/calls"
MAX_FRAMES = 6000  # received frames kept per call (2 min): enough for one turn at any load
MAX_STAMPS = 512  # RTP timestamps kept for matching decoded frames to packet arrivals
MAX_EVENTS = 4000  # data-channel events kept per call

Pcm = npt.NDArray[np.int16]


class CallRefused(RuntimeError):
    """The server answered the offer with an error (status and Soma error code)."""

    def __init__(self, status: int, code: str) -> None:
        super().__init__(f"{status} {code}")
        self.status = status
        self.code = code


# ---------------------------------------------------------------------------------------------- microphone


@dataclass(eq=False, slots=True)
class Utterance:
    """One clip queued on the microphone; `onset`/`end` are filled in as its frames leave.

    Attributes:
        onset: Monotonic time the first voiced sample was spoken.
        end: Monotonic time the last voiced sample ended.
        sent: Set once the whole clip has left.
    """

    pcm: Pcm
    first_voiced: int
    last_voiced: int
    onset: float | None = None
    end: float | None = None
    sent: asyncio.Event = field(default_factory=asyncio.Event)


class ScriptedMicrophone(MediaStreamTrack):
    """The caller's microphone: queued clips at real-time pace, silence otherwise (mono s16, 48 kHz)."""

    kind = "audio"

    def __init__(self) -> None:
        super().__init__()
        self._queue: collections.deque[Utterance] = collections.deque()
        self._current: Utterance | None = None
        self._pos = 0  # next sample of `_current`
        self._start: float | None = None
        self._frames = 0
        self._silence = np.zeros(FRAME, np.int16)

    def say(self, pcm: Pcm) -> Utterance:
        """Queue ``pcm`` (it starts on the next frame boundary after what is queued before it)."""
        voiced = np.flatnonzero(np.abs(pcm.astype(np.int32)) > AUDIBLE)
        if not len(voiced):
            raise ValueError("the clip has no voiced sample")
        utterance = Utterance(pcm, int(voiced[0]), int(voiced[-1]))
        self._queue.append(utterance)
        return utterance

    async def recv(self) -> av.AudioFrame:
        if self.readyState != "live":
            raise MediaStreamError
        if self._start is None:
            self._start = time.monotonic()
        # Frame k holds the audio of [k, k+1) * 20 ms and leaves when that interval is over.
        delay = self._start + (self._frames + 1) * FRAME_S - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
        if self._current is None and self._queue:
            self._current, self._pos = self._queue.popleft(), 0
        utterance, chunk_start = self._current, self._pos
        if utterance is None:
            chunk = self._silence
        else:
            chunk = utterance.pcm[chunk_start : chunk_start + FRAME]
            if len(chunk) < FRAME:
                chunk = np.pad(chunk, (0, FRAME - len(chunk)))
            self._pos += FRAME
        frame = av.AudioFrame.from_ndarray(chunk.reshape(1, -1), format="s16", layout="mono")
        frame.sample_rate, frame.pts, frame.time_base = RATE, self._frames * FRAME, Fraction(1, RATE)
        self._frames += 1
        if utterance is not None:
            self._stamp(utterance, chunk_start, time.monotonic())
        return frame

    def _stamp(self, utterance: Utterance, chunk_start: int, sent_at: float) -> None:
        """Times of the clip's first and last voiced samples, from the send time of the frame holding them."""
        chunk_end = chunk_start + FRAME
        if chunk_start <= utterance.first_voiced < chunk_end:
            utterance.onset = sent_at - (chunk_end - utterance.first_voiced) / RATE
        if chunk_start <= utterance.last_voiced < chunk_end:
            utterance.end = sent_at - (chunk_end - utterance.last_voiced - 1) / RATE
        if chunk_end >= len(utterance.pcm):
            self._current = None
            utterance.sent.set()


# ----------------------------------------------------------------------------------------------- listener


@dataclass(frozen=True, slots=True)
class HeardFrame:
    """One decoded 20 ms frame of the avatar: packet arrival (wire), track output, |sample| peak."""

    wire: float
    track: float
    peak: int

    @property
    def audible(self) -> bool:
        return self.peak > AUDIBLE


class Listener:
    """Times the avatar's audio of one call (see the module docs for wire and track time).

    Args:
        keep_frames: Keep decoded frames with their peaks (conversing calls); idle calls only count packets.
    """

    def __init__(self, *, keep_frames: bool) -> None:
        self.keep_frames = keep_frames
        self.frames: collections.deque[HeardFrame] = collections.deque(maxlen=MAX_FRAMES)
        self.first_packet: float | None = None
        self.first_frame: float | None = None
        self.packets = 0
        self.intervals_ms: list[float] = []  # packet inter-arrival times while `measuring`
        self.measuring = False
        self.seq_first: int | None = None  # unwrapped RTP sequence numbers seen while `measuring`
        self.seq_last: int | None = None
        self._seq: int | None = None  # latest unwrapped sequence number
        self._last_packet: float | None = None
        self._origin: int | None = None  # first RTP timestamp (aiortc's TimestampMapper maps it to pts 0)
        self._arrivals: dict[int, float] = {}  # pts -> wire time
        self._changed = asyncio.Event()

    def tap(self, receiver: RTCRtpReceiver) -> None:
        """Record packet arrivals of ``receiver`` (before its jitter buffer).

        aiortc has no public hook for this; its DTLS transport calls the receiver's ``_handle_rtp_packet`` for
        each decrypted packet, so that one instance method is wrapped. Call before the call connects.
        """
        handle = receiver._handle_rtp_packet

        async def tapped(packet: RtpPacket, arrival_time_ms: int) -> None:
            self._on_packet(packet.timestamp, packet.sequence_number)
            await handle(packet, arrival_time_ms)

        receiver._handle_rtp_packet = tapped  # type: ignore[method-assign]  # see the docstring

    def _on_packet(self, timestamp: int, sequence_number: int) -> None:
        now = time.monotonic()
        self.packets += 1
        if self._seq is None:
            self._seq = sequence_number
        else:
            step = (sequence_number - self._seq) & 0xFFFF
            if step < 0x8000:  # forward (a late, reordered packet leaves the count alone)
                self._seq += step
        if self.first_packet is None:
            self.first_packet = now
            self._changed.set()
        if self.measuring:
            if self._last_packet is not None:
                self.intervals_ms.append((now - self._last_packet) * 1000)
            if self.seq_first is None:
                self.seq_first = self._seq
            self.seq_last = self._seq
        self._last_packet = now
        if self.keep_frames:
            if self._origin is None:
                self._origin = timestamp
            self._arrivals[(timestamp - self._origin) & 0xFFFFFFFF] = now
            if len(self._arrivals) > MAX_STAMPS:
                del self._arrivals[next(iter(self._arrivals))]

    async def read(self, track: MediaStreamTrack) -> None:
        """Consume ``track`` until it ends (undrained, aiortc would queue its frames without bound)."""
        while True:
            try:
                frame = await track.recv()
            except MediaStreamError:
                return
            now = time.monotonic()
            if self.first_frame is None:
                self.first_frame = now
                self._changed.set()
            if not self.keep_frames or not isinstance(frame, av.AudioFrame):
                continue
            pcm = frame.to_ndarray()
            peak = int(np.abs(pcm.astype(np.int32)).max()) if pcm.size else 0
            wire = self._arrivals.pop(frame.pts, now) if frame.pts is not None else now
            self.frames.append(HeardFrame(wire, now, peak))
            self._changed.set()

    async def wait(self, condition: Callable[[], bool], limit_s: float) -> bool:
        """Wait until ``condition()`` is true (checked on every packet/frame change); False on timeout."""
        try:
            async with asyncio.timeout(limit_s):
                while not condition():
                    self._changed.clear()
                    await self._changed.wait()
        except TimeoutError:
            return False
        return True

    def frames_since(self, t: float) -> Iterator[HeardFrame]:
        """Kept frames whose packet arrived at or after ``t`` (oldest first)."""
        return (f for f in self.frames if f.wire >= t)

    def first_audible_after(self, t: float) -> HeardFrame | None:
        return next((f for f in self.frames_since(t) if f.audible), None)

    def quiet_for(self, seconds: float) -> bool:
        """The last ``seconds`` of received audio were all silent (and that much has been received)."""
        if not self.frames:
            return False
        latest = self.frames[-1].wire
        span = [f for f in reversed(self.frames) if f.wire > latest - seconds]
        return latest - self.frames[0].wire >= seconds and not any(f.audible for f in span)


# ----------------------------------------------------------------------------------------------- the peer


@dataclass(frozen=True, slots=True)
class ConnectTiming:
    """Milliseconds from the start of the offer POST (``offer_ms``: creating the offer, before it)."""

    offer_ms: float
    answer_ms: float  # 201 with the SDP answer
    session_ms: float  # ``session.created`` on the data channel
    first_packet_ms: float  # first RTP packet of the avatar's track
    first_frame_ms: float  # first decoded frame out of the avatar's track


class CallPeer:
    """One client call. `place` it, use `mic` / `listener` / `events`, then `hang_up` (always; it closes).

    Args:
        keep_frames: See `Listener`.
    """

    def __init__(self, *, keep_frames: bool) -> None:
        self.pc = RTCPeerConnection()
        self.mic = ScriptedMicrophone()
        self.listener = Listener(keep_frames=keep_frames)
        self.events: collections.deque[tuple[float, dict[str, Any]]] = collections.deque(maxlen=MAX_EVENTS)
        self.events_seen = 0  # events ever received (an index that survives the deque's bound)
        self.location: str | None = None
        self._token = ""
        self._got_event = asyncio.Event()
        self._reader: asyncio.Task[None] | None = None
        self.channel = self.pc.createDataChannel("oai-events")
        self.channel.on("message", self._on_message)
        self.pc.addTrack(self.mic)
        self.pc.on("track", self._on_track)
        for receiver in self.pc.getReceivers():
            self.listener.tap(receiver)

    def _on_message(self, message: str | bytes) -> None:
        if isinstance(message, str):
            self.events.append((time.monotonic(), json.loads(message)))
            self.events_seen += 1
            self._got_event.set()

    def _on_track(self, track: MediaStreamTrack) -> None:
        if track.kind == "audio" and self._reader is None:
            self._reader = asyncio.create_task(self.listener.read(track), name="avatar-audio")

    def events_after(self, index: int) -> list[tuple[float, dict[str, Any]]]:
        """Events received after the first ``index`` ones (as many of them as are still kept)."""
        skip = index - (self.events_seen - len(self.events))
        return list(self.events)[max(0, skip) :]

    async def wait_event(
        self, kind: str, since: int, limit_s: float, where: Callable[[dict[str, Any]], bool] | None = None
    ) -> tuple[float, dict[str, Any]]:
        """The first event of type ``kind`` (and, if given, ``where(event)``) after the first ``since`` events.

        Raises:
            TimeoutError: none within ``limit_s`` seconds.
        """
        async with asyncio.timeout(limit_s):
            while True:
                for t, event in self.events_after(since):
                    if event.get("type") == kind and (where is None or where(event)):
                        return t, event
                self._got_event.clear()
                await self._got_event.wait()

    async def place(self, http: httpx.AsyncClient, token: str, *, limit_s: float = 30.0) -> ConnectTiming:
        """Offer, answer, and wait for ``session.created`` and the avatar's first audio.

        Raises:
            CallRefused: the server answered with an error.
            TimeoutError: the call did not come up within ``limit_s`` seconds.
        """
        self._token = token
        t0 = time.monotonic()
        await self.pc.setLocalDescription(await self.pc.createOffer())  # gathers host candidates
        sdp = self.pc.localDescription.sdp
        started = time.monotonic()
        headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/sdp"}
        response = await http.post(CALLS_PATH, params={"model": "soma"}, content=sdp, headers=headers)
        answered = time.monotonic()
        if response.status_code != 201:
            code = "?"
            with contextlib.suppress(ValueError, KeyError, TypeError):
                code = str(response.json()["error"]["code"])
            raise CallRefused(response.status_code, code)
        self.location = response.headers["location"]
        await self.pc.setRemoteDescription(RTCSessionDescription(response.text, "answer"))
        created, _ = await self.wait_event("session.created", 0, limit_s)
        listener = self.listener
        if not await listener.wait(lambda: listener.first_frame is not None, limit_s):
            raise TimeoutError("no audio on the avatar's track")
        assert listener.first_packet is not None and listener.first_frame is not None

        def ms(t: float) -> float:
            return round((t - started) * 1000, 2)

        return ConnectTiming(round((started - t0) * 1000, 2), ms(answered), ms(created), ms(listener.first_packet),
                             ms(listener.first_frame))

    async def hang_up(self, http: httpx.AsyncClient | None) -> None:
        """``DELETE`` the call (if placed and ``http`` given), then close the peer connection."""
        try:
            if http is not None and self.location is not None:
                with contextlib.suppress(httpx.HTTPError):
                    await http.delete(self.location, headers={"Authorization": f"Bearer {self._token}"})
                self.location = None
        finally:
            await self.close()

    async def close(self) -> None:
        """Close the peer connection and stop reading (idempotent)."""
        await self.pc.close()
        if self._reader is not None:
            self._reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._reader
            self._reader = None


# ---------------------------------------------------------------------------------------- loop-lag probe


class LoopLag:
    """How late this event loop wakes from a short sleep (ms): client-side distortion of every timing.

    `start` it inside the loop, `take` the samples since the last take, `stop` it at the end.
    """

    TICK_S = 0.01

    def __init__(self) -> None:
        self.samples: list[float] = []
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="loop-lag")

    async def _run(self) -> None:
        while True:
            before = time.monotonic()
            await asyncio.sleep(self.TICK_S)
            self.samples.append(max(0.0, (time.monotonic() - before - self.TICK_S) * 1000))

    def take(self) -> list[float]:
        samples, self.samples = self.samples, []
        return samples

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task


# ----------------------------------------------------------------------------------- idle-call subprocess


@dataclass(frozen=True, slots=True)
class OpenCalls:
    """Place one more silent call per token."""

    tokens: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class Measure:
    """Record packet inter-arrival times of every open call for ``seconds``."""

    seconds: float


@dataclass(frozen=True, slots=True)
class HangUpAll:
    """Hang up every call and end the worker."""


Command = OpenCalls | Measure | HangUpAll


@dataclass(frozen=True, slots=True)
class Opened:
    open_calls: int
    connect_ms: tuple[float, ...]  # session.created after the POST, per call placed now
    errors: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class Measured:
    jitter_ms: npt.NDArray[np.float32]  # |inter-arrival - 20 ms| of every packet interval of every call
    max_gap_ms: float
    packets: int  # received
    sent_packets: int  # sent by the server, from the RTP sequence numbers of the first and last received
    expected_packets: int  # one per 20 ms per call
    silent_calls: int  # calls that received no packet in the window
    loop_lag_ms: tuple[float, ...]
    cpu_s: float  # this process's CPU seconds in the window (all its threads)


@dataclass(frozen=True, slots=True)
class HungUp:
    calls: int


Reply = Opened | Measured | HungUp

PLACE_CONCURRENCY = 4  # offers in flight per worker: a burst of offers is not what is measured
RATE_LIMIT_RETRY_S = 1.1  # the server allows 5 offers per second per user


def idle_worker(conn: Connection, base_url: str) -> None:
    """Subprocess entry point: serve `Command`s from ``conn`` until `HangUpAll`, answering each `Reply`."""
    asyncio.run(_idle_worker(conn, base_url))


async def _idle_worker(conn: Connection, base_url: str) -> None:
    peers: list[CallPeer] = []
    lag = LoopLag()
    lag.start()
    gate = asyncio.Semaphore(PLACE_CONCURRENCY)
    async with httpx.AsyncClient(base_url=base_url, timeout=60) as http:
        try:
            while True:
                command: Command = await asyncio.to_thread(conn.recv)
                match command:
                    case OpenCalls(tokens=tokens):
                        results = await asyncio.gather(*(_open_one(http, token, gate) for token in tokens))
                        timings = []
                        errors = []
                        for peer, result in results:
                            if isinstance(result, ConnectTiming):
                                peers.append(peer)
                                timings.append(result.session_ms)
                            else:
                                errors.append(result)
                        conn.send(Opened(len(peers), tuple(timings), tuple(errors)))
                    case Measure(seconds=seconds):
                        conn.send(await _measure(peers, lag, seconds))
                    case HangUpAll():
                        break
        finally:
            await asyncio.gather(*(peer.hang_up(http) for peer in peers), return_exceptions=True)
            await lag.stop()
            conn.send(HungUp(len(peers)))


async def _open_one(
    http: httpx.AsyncClient, token: str, gate: asyncio.Semaphore
) -> tuple[CallPeer, ConnectTiming | str]:
    async with gate:
        for attempt in range(3):
            peer = CallPeer(keep_frames=False)
            try:
                return peer, await peer.place(http, token)
            except CallRefused as exc:
                await peer.hang_up(http)
                if exc.status != 429 or attempt == 2:
                    return peer, str(exc)
                await asyncio.sleep(RATE_LIMIT_RETRY_S)
            except (TimeoutError, httpx.HTTPError) as exc:
                await peer.hang_up(http)
                return peer, f"{type(exc).__name__}: {exc}"[:120]
            except BaseException:
                await peer.hang_up(http)
                raise
        raise AssertionError("unreachable")


async def _measure(peers: list[CallPeer], lag: LoopLag, seconds: float) -> Measured:
    before = {id(p): p.listener.packets for p in peers}
    for peer in peers:
        peer.listener.intervals_ms.clear()
        peer.listener.seq_first = peer.listener.seq_last = None
        peer.listener.measuring = True
    lag.take()
    cpu0 = time.process_time()
    await asyncio.sleep(seconds)
    cpu = time.process_time() - cpu0
    intervals: list[float] = []
    silent = 0
    packets = 0
    sent = 0
    for peer in peers:
        listener = peer.listener
        listener.measuring = False
        intervals.extend(listener.intervals_ms)
        got = listener.packets - before[id(peer)]
        packets += got
        silent += got == 0
        if listener.seq_first is not None and listener.seq_last is not None:
            sent += listener.seq_last - listener.seq_first + 1
        listener.intervals_ms.clear()
    values = np.abs(np.asarray(intervals, np.float32) - FRAME_S * 1000)
    return Measured(
        jitter_ms=values,
        max_gap_ms=round(max(intervals, default=0.0), 1),
        packets=packets,
        sent_packets=sent,
        expected_packets=int(len(peers) * seconds / FRAME_S),
        silent_calls=silent,
        loop_lag_ms=tuple(round(v, 2) for v in lag.take()),
        cpu_s=round(cpu, 2),
    )
