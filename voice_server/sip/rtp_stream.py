"""SIP calls' media: the RTP socket, the 20 ms media clock, the pipeline transport, the RTP port range.

`RtpStream` owns the call's UDP port. Incoming packets go through symmetric-RTP source checks into the
jitter buffer (audio) or the RFC 4733 decoder (DTMF). `RtpStream.tick`, called every 20 ms by the shared media
clock (`run_media_clock`, one task for all calls, owned by the call manager), plays one frame out of the
jitter buffer into the session (`SipTransport`) and sends one 20 ms packet of the avatar's voice — or comfort
silence — unless the caller has put us on hold. Until RTP has come back from the destination, what is sent
there is limited by a shared `voice_server.sip.guard.MediaBudget` (an SDP address is only the caller's word).

`SipTransport` is the session's `pipeline.ports.Transport`: 8 kHz in and out (the session resamples to its
own rate at the edge), frames through a bounded queue. After `SILENCE_PAD_S` of digital silence it stops
forwarding silent frames, so an idle call costs no VAD work (the turn core keeps its own timers).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, cast

import numpy as np

from pipeline.frames import AudioIn, Dtmf, InputFrame, OutputEvent, Pcm, TextIn
from pipeline.playout import Playout
from voice_server.sip.rtcp import INTERVAL_S, RtcpState
from voice_server.sip.rtp import FRAME_SAMPLES, G711, RATE, Concealer, DtmfDecoder, JitterBuffer, RtpSender
from voice_server.sip.rtp import parse_packet as parse_rtp
from voice_server.sip.sdp import Negotiated

if TYPE_CHECKING:
    from voice_server.sip.guard import MediaBudget

log = logging.getLogger(__name__)

TICK_S = 0.02  # the media clock's period: one 20 ms packet per call
MAX_INPUT_FRAMES = 100  # 2 s of frames waiting for the session; beyond that the session is stalled: drop
SILENCE_PAD_S = 2.0  # silence forwarded after the caller's last sound (covers the longest end-of-turn wait)
REPORT_TICKS = int(INTERVAL_S / 0.02)  # a sender report every INTERVAL_S of media clock ticks
LEARN_S = 0.5  # a caller's media from an unexpected port (NAT) is trusted after it has kept coming this long
SILENT_LEVEL = 16  # |sample| at or below this is digital silence (μ-law/A-law idle patterns decode to ≤ 8)
_END = object()


class SipTransport:
    """The pipeline side of a SIP call (8 kHz mono in and out)."""

    def __init__(self, on_event: Callable[[OutputEvent], None] | None = None) -> None:
        self._queue: asyncio.Queue[InputFrame | object] = asyncio.Queue(MAX_INPUT_FRAMES + 1)
        self._on_event = on_event
        self.playout: Playout | None = None
        self.dropped = 0
        self._silent_frames = 0
        self._closed = False

    @property
    def audio_in_rate(self) -> int | None:
        return RATE

    @property
    def audio_out_rate(self) -> int | None:
        return RATE

    def attach_playout(self, playout: Playout | None) -> None:
        self.playout = playout

    async def send(self, event: OutputEvent) -> None:
        if self._on_event is not None:
            self._on_event(event)

    async def inputs(self) -> AsyncIterator[InputFrame]:
        """Frames as the media clock produces them; ends at `close`."""
        while True:
            frame = await self._queue.get()
            if frame is _END:
                return
            assert isinstance(frame, AudioIn | Dtmf | TextIn)
            yield frame

    def feed_audio(self, pcm: Pcm) -> None:
        """One 20 ms frame of the caller's audio (dropped when the session is behind, or idle silence)."""
        if int(np.abs(pcm.astype(np.int32)).max(initial=0)) <= SILENT_LEVEL:
            self._silent_frames += 1
            if self._silent_frames * FRAME_SAMPLES > SILENCE_PAD_S * RATE:
                return
        else:
            self._silent_frames = 0
        self._put(AudioIn(pcm, RATE))

    def feed_text(self, text: str) -> None:
        """A typed turn for the session (the instruction that makes the avatar speak first on outbound calls)."""
        self._put(TextIn(text))

    def feed_dtmf(self, digit: str) -> None:
        """A key press (control: it goes into the same ordered queue, which is never more than 2 s deep)."""
        self._put(Dtmf(digit))

    def close(self) -> None:
        """End the input stream (the session then shuts down). Idempotent."""
        if not self._closed:
            self._closed = True
            while self._queue.full():
                self._queue.get_nowait()
            self._queue.put_nowait(_END)

    def _put(self, frame: InputFrame) -> None:
        if self._closed:
            return
        if self._queue.qsize() >= MAX_INPUT_FRAMES:
            self.dropped += 1
            return
        self._queue.put_nowait(frame)


@dataclass(slots=True)
class MediaStats:
    """Per-call counters (tests and the bench read them through `/metrics` or logs)."""

    packets_in: int = 0
    packets_out: int = 0
    voiced_out: int = 0  # packets carrying the avatar's voice (not comfort silence)
    rejected: int = 0  # garbage, wrong source, unknown payload type
    dtmf: int = 0


class RtpStream(asyncio.DatagramProtocol):
    """The RTP endpoint of one call.

    Args:
        negotiated: The codec, DTMF payload type, remote address and direction from offer/answer.
        transport: The session side.
        signaling_ip: The caller's signaling source address: media from that IP is accepted even when it
            comes from another port than the SDP says (NAT), which is how symmetric RTP latches.
        on_dtmf: Called with each decoded digit (besides feeding the session), for metrics and logs.
        budget: Shared by every call: limits what is sent to destinations that have not sent us RTP yet (the
            SDP address is the caller's word, and could name anyone).

    Nothing is sent until the manager calls `begin` (the dialog is confirmed by its ACK); the manager's media
    clock calls `tick` only from then on.
    """

    def __init__(self, negotiated: Negotiated, transport: SipTransport, *, signaling_ip: str,
                 on_dtmf: Callable[[str], None] | None = None, budget: MediaBudget | None = None) -> None:
        self.negotiated = negotiated
        self.pipeline = transport
        self.codec = G711(negotiated.codec)
        self.jitter = JitterBuffer()
        self.dtmf = DtmfDecoder()
        self.conceal = Concealer()
        self.sender = RtpSender.new()
        self.rtcp = RtcpState(self.sender.ssrc)
        self._rtcp_udp: asyncio.DatagramTransport | None = None
        self._rtcp_remote: tuple[str, int] | None = None  # latched from the caller's first RTCP packet
        self._ticks = 0
        self.stats = MediaStats()
        self.remote: tuple[str, int] = negotiated.remote
        self._trusted_ips = {negotiated.remote[0], signaling_ip}
        self._latched: tuple[str, int] | None = None
        self._candidate: tuple[tuple[str, int], float] | None = None  # a NAT-ed source being learnt, since when
        self._udp: asyncio.DatagramTransport | None = None
        self._on_dtmf = on_dtmf
        self._budget = budget
        self._loop_time: Callable[[], float] = asyncio.get_running_loop().time
        self.last_media = self._loop_time()
        self.hold = not negotiated.we_send

    # ------------------------------------------------------------------------------------------ asyncio

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's UDP transport does not subclass asyncio.DatagramTransport, but has its interface.
        self._udp = cast(asyncio.DatagramTransport, transport)

    def datagram_received(self, data: bytes, addr: tuple[str | object, ...]) -> None:
        source = (str(addr[0]), int(str(addr[1])))
        if not self._admit_source(source):
            self.stats.rejected += 1
            return
        try:
            packet = parse_rtp(data)
        except ValueError:
            self.stats.rejected += 1
            return
        pt = packet.payload_type
        if pt == self.negotiated.payload_type:
            if len(packet.payload) > 1024:
                self.stats.rejected += 1
                return
            ext = self.jitter.push(packet.sequence_number, packet.timestamp, packet.payload, self._loop_time())
            self.rtcp.received(packet.ssrc, ext)
        elif pt == self.negotiated.dtmf_pt:
            try:
                digit = self.dtmf.feed(packet.payload, packet.timestamp)
            except ValueError:
                self.stats.rejected += 1
                return
            if digit is not None:
                self.stats.dtmf += 1
                self.pipeline.feed_dtmf(digit)
                if self._on_dtmf is not None:
                    self._on_dtmf(digit)
        else:
            self.stats.rejected += 1
            return
        if self._latched is None:
            self._latched = source
            self.remote = source  # symmetric RTP: answer where the caller's media comes from
            self._candidate = None
        self.stats.packets_in += 1
        self.last_media = self._loop_time()

    @property
    def verified(self) -> bool:
        """Whether our destination has shown it wants the media: RTP from it has been accepted and latched."""
        return self._latched is not None

    def begin(self) -> None:
        """The dialog is confirmed: media flows from the next `tick`, and the media timeout counts from now."""
        self.last_media = self._loop_time()

    def attach_rtcp(self, transport: asyncio.DatagramTransport) -> None:
        """Use ``transport`` (bound to our RTP port + 1) for RTCP reports."""
        self._rtcp_udp = transport

    def rtcp_received(self, data: bytes, source: tuple[str, int]) -> None:
        """An RTCP packet on our RTCP port: read the caller's reports (strangers and garbage are ignored)."""
        if source[0] not in self._trusted_ips or (self._rtcp_remote not in (None, source)):
            self.stats.rejected += 1
            return
        try:
            self.rtcp.receive(data, self._loop_time())
        except ValueError:
            self.stats.rejected += 1
            return
        self._rtcp_remote = source

    def _send_report(self) -> None:
        if self._rtcp_udp is None or self.hold or not self.verified:
            return
        target = self._rtcp_remote or (self.remote[0], self.remote[1] + 1)
        report = self.rtcp.report(time.time(), self._loop_time(), self.sender.timestamp, self.jitter.stats.jitter_ms)
        self._rtcp_udp.sendto(report, target)

    def _admit_source(self, source: tuple[str, int]) -> bool:
        """Symmetric RTP with a learning period: whose packets count, and where ours go.

        The address the caller's SDP named is latched at once, and always wins over a source latched before it
        (someone on the caller's IP who raced the first packet in must not keep the call's media). A packet from
        another port of a trusted IP (the caller behind NAT) is latched only when that source has kept sending
        for `LEARN_S` without anything arriving from the SDP address; until then it is dropped and we keep
        sending to the SDP address, so a stranger never receives the call's audio.
        """
        if source == self.negotiated.remote:
            if self._latched != source:
                self._latched = None  # re-latched below, after the packet parses
            return True
        if self._latched is not None:
            return source == self._latched
        if source[0] not in self._trusted_ips:
            return False
        now = self._loop_time()
        if self._candidate is None or self._candidate[0] != source:
            self._candidate = (source, now)
            return False
        return now - self._candidate[1] >= LEARN_S

    def error_received(self, exc: Exception) -> None:
        # ICMP port unreachable for our packets (the caller's port closed): the media timeout ends the call.
        log.debug("rtp error on call media: %s", exc)

    # ------------------------------------------------------------------------------------------ control

    def update(self, negotiated: Negotiated) -> None:
        """A re-INVITE changed the stream (hold/resume, another codec or address)."""
        if negotiated.codec != self.codec.codec:
            self.codec = G711(negotiated.codec)
        if negotiated.remote != self.negotiated.remote:
            self._latched = None
            self.remote = negotiated.remote
            self._trusted_ips.add(negotiated.remote[0])
        self.negotiated = negotiated
        self.set_hold(not negotiated.we_send)

    def set_hold(self, hold: bool) -> None:
        """On hold we stop sending and the avatar's reply pauses (nothing is "heard" while held)."""
        if hold == self.hold:
            return
        self.hold = hold
        self.last_media = self._loop_time()  # a held caller may send nothing: the media timeout restarts now
        if self.pipeline.playout is not None:
            if hold:
                self.pipeline.playout.pause()
            else:
                self.pipeline.playout.resume()

    def tick(self) -> None:
        """One 20 ms step of the media clock: a frame to the session, a packet to the caller."""
        payload, playing = self.jitter.pop()
        if payload is not None:
            self.pipeline.feed_audio(self.conceal.good(self.codec.decode(payload)))
        elif playing:
            self.pipeline.feed_audio(self.conceal.conceal())
        else:
            self.pipeline.feed_audio(np.zeros(FRAME_SAMPLES, np.int16))  # the line is quiet: time still runs
        if self.hold or self._udp is None:
            self.sender.skip()
            return
        if not self.verified and self._budget is not None and not self._budget.allow(self.remote[0],
                                                                                     self._loop_time()):
            self.sender.skip()  # over the unconfirmed destination's budget: as if on hold for this tick
            return
        playout = self.pipeline.playout
        pcm = playout.read(FRAME_SAMPLES) if playout is not None else None
        voiced = pcm is not None and bool(pcm.any())
        data = self.codec.encode(pcm) if voiced and pcm is not None else self.codec.silence
        self._udp.sendto(self.sender.packet(self.negotiated.payload_type, data, voiced=voiced), self.remote)
        self.rtcp.sent(len(data))
        self.stats.packets_out += 1
        self._ticks += 1
        if self._ticks % REPORT_TICKS == 0:
            self._send_report()
        self.stats.voiced_out += voiced

    def close(self) -> None:
        """Release the ports. Idempotent."""
        if self._udp is not None:
            self._udp.close()
            self._udp = None
        if self._rtcp_udp is not None:
            self._rtcp_udp.close()
            self._rtcp_udp = None


class RtcpSocket(asyncio.DatagramProtocol):
    """The RTCP port of a call (RTP port + 1): hands packets to its `RtpStream`."""

    def __init__(self, stream: RtpStream) -> None:
        self.stream = stream

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.stream.attach_rtcp(cast(asyncio.DatagramTransport, transport))

    def datagram_received(self, data: bytes, addr: tuple[str | object, ...]) -> None:
        self.stream.rtcp_received(data, (str(addr[0]), int(str(addr[1]))))

    def error_received(self, exc: Exception) -> None:
        log.debug("rtcp error on call media: %s", exc)


class PortPool:
    """RTP ports of the configured range, one per call (even ports, RTP convention; RTCP would take +1)."""

    def __init__(self, low: int, high: int) -> None:
        self._free = [p for p in range(low + (low % 2), high + 1, 2)]
        self._used: set[int] = set()

    def take(self) -> int | None:
        while self._free:
            port = self._free.pop(0)
            self._used.add(port)
            return port
        return None

    def give_back(self, port: int) -> None:
        if port in self._used:
            self._used.discard(port)
            self._free.append(port)

    @property
    def in_use(self) -> int:
        return len(self._used)


def media_summary(stream: RtpStream | None) -> str:
    """A call's media counters for its last log line (zeros for a call that never had media)."""
    if stream is None:
        return "rtp in=0 out=0 voiced_out=0 rejected=0 lost=0 late=0 dtmf=0; caller reports 0"
    stats, jitter, rtcp = stream.stats, stream.jitter.stats, stream.rtcp
    return (f"rtp in={stats.packets_in} out={stats.packets_out} voiced_out={stats.voiced_out} "
            f"rejected={stats.rejected} lost={jitter.lost} late={jitter.late} dtmf={stats.dtmf}; "
            f"caller reports {rtcp.reports_received}: loss {rtcp.remote_fraction_lost * 100:.1f} %, "
            f"jitter {rtcp.remote_jitter_ms:.1f} ms")


async def run_media_clock(due: Callable[[], Sequence[tuple[str, RtpStream]]], hang_up: Callable[[str], object],
                          media_timeout_s: float) -> None:
    """Tick every stream ``due()`` returns (call id, stream) each 20 ms, until cancelled: one timer for all
    calls instead of one per call. ``hang_up(call_id)`` ends a call whose media failed, or whose caller has
    sent no RTP for ``media_timeout_s`` (unless on hold)."""
    loop = asyncio.get_running_loop()
    next_at = loop.time()
    while True:
        next_at += TICK_S
        delay = next_at - loop.time()
        if delay < -0.1:
            next_at = loop.time()  # fell far behind (a stalled loop): restart the clock rather than burst
        elif delay > 0:
            await asyncio.sleep(delay)
        now = loop.time()
        for call_id, media in due():
            try:
                media.tick()
            except Exception:  # one call's media failing must not stop the clock of the others
                log.exception("sip: media of call %s failed", call_id[:12])
                hang_up(call_id)
                continue
            if now - media.last_media > media_timeout_s and not media.hold:
                log.info("sip: call %s: no RTP for %.0f s, hanging up", call_id[:12], media_timeout_s)
                hang_up(call_id)
