"""One call's RTP endpoint without a network: symmetric-RTP learning, DTMF to the session, pacing output."""

from __future__ import annotations

from typing import Any

import numpy as np

from pipeline.frames import AudioIn, Dtmf
from voice_server.sip.rtp import RtpSender, parse_packet
from voice_server.sip.rtp_stream import LEARN_S, RtpStream, SipTransport
from voice_server.sip.sdp import Negotiated

SDP_ADDR = ("127.0.0.1", 5000)


class FakeUdp:
    def __init__(self) -> None:
        self.sent: list[tuple[bytes, Any]] = []

    def sendto(self, data: bytes, addr: Any) -> None:
        self.sent.append((data, addr))

    def close(self) -> None:
        pass


def _stream() -> tuple[RtpStream, FakeUdp, list[float]]:
    clock = [100.0]
    stream = RtpStream(Negotiated("PCMU", 0, 101, SDP_ADDR, "sendrecv"), SipTransport(), signaling_ip="127.0.0.1")
    stream._loop_time = lambda: clock[0]  # injected clock (the stream reads it through this attribute)
    udp = FakeUdp()
    stream.connection_made(udp)  # type: ignore[arg-type]
    return stream, udp, clock


def _rtp(sender: RtpSender, pt: int = 0, payload: bytes = b"\x10" * 160) -> bytes:
    return sender.packet(pt, payload, voiced=True)


async def test_the_sdp_address_wins_and_strangers_get_nothing() -> None:
    """A packet from another port of the caller's IP before the caller's own is dropped; the SDP address is
    latched; our packets go there, never to the other port; another IP is never accepted."""
    stream, udp, _ = _stream()
    caller, stranger = RtpSender.new(), RtpSender.new()
    stream.datagram_received(_rtp(stranger), ("127.0.0.1", 6000))
    stream.datagram_received(_rtp(stranger), ("10.9.9.9", 5000))
    assert stream.stats.packets_in == 0 and stream.stats.rejected == 2
    stream.datagram_received(_rtp(caller), SDP_ADDR)
    stream.datagram_received(_rtp(stranger), ("127.0.0.1", 6000))
    assert stream.stats.packets_in == 1 and stream.remote == SDP_ADDR
    stream.tick()
    assert {addr for _, addr in udp.sent} == {SDP_ADDR}


async def test_a_natted_caller_is_learnt_after_the_learning_period() -> None:
    """Media only ever from another port of the caller's IP (NAT): after LEARN_S it is latched and answered."""
    stream, udp, clock = _stream()
    caller = RtpSender.new()
    nat = ("127.0.0.1", 7000)
    stream.datagram_received(_rtp(caller), nat)
    clock[0] += LEARN_S / 2
    stream.datagram_received(_rtp(caller), nat)
    assert stream.stats.packets_in == 0
    clock[0] += LEARN_S
    stream.datagram_received(_rtp(caller), nat)
    assert stream.stats.packets_in == 1 and stream.remote == nat
    stream.tick()
    assert udp.sent[-1][1] == nat


async def test_dtmf_and_audio_reach_the_session_and_output_is_paced_packets() -> None:
    """A telephone-event packet becomes a Dtmf frame; ticks play buffered audio in and send one packet each,
    comfort silence (μ-law 0xFF) while the avatar is quiet, with consecutive sequence numbers."""
    stream, udp, _ = _stream()
    caller = RtpSender.new()
    for _ in range(3):
        stream.datagram_received(_rtp(caller), SDP_ADDR)
    stream.datagram_received(_rtp(caller, 101, bytes([5, 0x8A, 0, 160])), SDP_ADDR)
    for _ in range(3):
        stream.tick()
    frames = [stream.pipeline._queue.get_nowait() for _ in range(stream.pipeline._queue.qsize())]
    assert Dtmf("5") in frames and sum(isinstance(f, AudioIn) for f in frames) == 3
    packets = [parse_packet(data) for data, _ in udp.sent]
    assert [p.payload for p in packets] == [b"\xff" * 160] * 3
    seqs = [p.sequence_number for p in packets]
    assert [(b - a) % 65536 for a, b in zip(seqs, seqs[1:], strict=False)] == [1, 1]
    assert all(isinstance(f.pcm, np.ndarray) for f in frames if isinstance(f, AudioIn))
