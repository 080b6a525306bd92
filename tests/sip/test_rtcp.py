"""RTCP sender/receiver reports (RFC 3550 §6.4) built and read with aiortc's packet classes."""

from __future__ import annotations

from aiortc.rtp import RtcpPacket, RtcpReceiverInfo, RtcpRrPacket, RtcpSenderInfo, RtcpSrPacket

from voice_server.sip.rtcp import RtcpState, ntp_time


def test_sender_report_counts_what_we_sent_and_what_the_caller_lost() -> None:
    """100 packets sent; the caller's stream 65536+0..19 with 5 missing → one block: 5 lost, fraction 64/256."""
    state = RtcpState(ssrc=1234)
    for _ in range(100):
        state.sent(160)
    for seq in [s for s in range(20) if s not in (3, 4, 10, 11, 12)]:
        state.received(999, 65536 + seq)
    (packet,) = RtcpPacket.parse(state.report(1_700_000_000.5, 10.0, 4242, 12.5))
    assert isinstance(packet, RtcpSrPacket) and packet.ssrc == 1234
    assert packet.sender_info.packet_count == 100 and packet.sender_info.octet_count == 16000
    assert packet.sender_info.rtp_timestamp == 4242 and packet.sender_info.ntp_timestamp == ntp_time(1_700_000_000.5)
    (block,) = packet.reports
    assert (block.ssrc, block.packets_lost, block.highest_sequence, block.jitter) == (999, 5, 19, 100)
    assert block.fraction_lost == 5 * 256 // 20


def test_the_callers_reports_about_our_stream_are_read() -> None:
    """An RR block about our SSRC gives the caller's loss and jitter; its SR feeds our LSR/DLSR."""
    state = RtcpState(ssrc=77)
    block = RtcpReceiverInfo(ssrc=77, fraction_lost=64, packets_lost=3, highest_sequence=10, jitter=80, lsr=0, dlsr=0)
    state.receive(bytes(RtcpRrPacket(ssrc=5, reports=[block])), 1.0)
    assert state.remote_fraction_lost == 0.25 and state.remote_jitter_ms == 10.0 and state.reports_received == 1
    caller_sr = RtcpSrPacket(ssrc=5, sender_info=RtcpSenderInfo(ntp_timestamp=ntp_time(1_700_000_000.0),
                                                                rtp_timestamp=0, packet_count=1, octet_count=160))
    state.receive(bytes(caller_sr), 2.0)
    state.received(5, 65536)
    (packet,) = RtcpPacket.parse(state.report(1_700_000_001.0, 3.0, 0, 0.0))
    assert isinstance(packet, RtcpSrPacket)
    assert packet.reports[0].lsr == (ntp_time(1_700_000_000.0) >> 16) & 0xFFFFFFFF
    assert packet.reports[0].dlsr == 65536  # 1 s between its SR arriving and our report
