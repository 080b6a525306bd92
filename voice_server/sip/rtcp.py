"""RTCP sender/receiver reports for one call (RFC 3550 §6.4), no sockets.

Packets are built and parsed with aiortc's RTCP classes. `RtcpState` counts what we send and receive, builds
a sender report (with a reception report block about the caller's stream once it has sent anything) every
`INTERVAL_S`, and reads the caller's reports: its view of our stream (loss, jitter) ends up in `remote_*`
for logs, and its SR timestamp feeds the LSR/DLSR round-trip fields of our next report.
"""

from __future__ import annotations

from aiortc.rtp import RtcpPacket, RtcpReceiverInfo, RtcpRrPacket, RtcpSenderInfo, RtcpSrPacket

INTERVAL_S = 5.0
_NTP_EPOCH_OFFSET = 2_208_988_800  # seconds from 1900 (NTP) to 1970 (Unix)


def ntp_time(unix_s: float) -> int:
    """64-bit NTP timestamp of a Unix time."""
    seconds = int(unix_s) + _NTP_EPOCH_OFFSET
    fraction = int((unix_s % 1.0) * (1 << 32))
    return (seconds << 32) | fraction


class RtcpState:
    """Report bookkeeping for our SSRC ``ssrc`` (the call's outbound stream)."""

    def __init__(self, ssrc: int) -> None:
        self.ssrc = ssrc
        self.packets_sent = 0
        self.octets_sent = 0
        self.remote_ssrc: int | None = None
        self._base: int | None = None  # first extended sequence number received
        self._highest = 0
        self._received = 0
        self._expected_prior = 0
        self._received_prior = 0
        self._lsr = 0  # middle 32 bits of the caller's last SR timestamp
        self._lsr_at: float | None = None  # when it arrived (monotonic seconds)
        self.remote_fraction_lost = 0.0  # the caller's view of our stream
        self.remote_jitter_ms = 0.0
        self.reports_received = 0

    def sent(self, payload_bytes: int) -> None:
        """One RTP packet of ours went out."""
        self.packets_sent += 1
        self.octets_sent += payload_bytes

    def received(self, ssrc: int, extended_seq: int) -> None:
        """One RTP packet of the caller's came in (``extended_seq`` as `JitterBuffer.push` returns it: wrap-free,
        offset by 65536)."""
        if self.remote_ssrc != ssrc:
            self.remote_ssrc, self._base, self._highest, self._received = ssrc, extended_seq, extended_seq, 0
            self._expected_prior = self._received_prior = 0
        assert self._base is not None
        self._highest = max(self._highest, extended_seq)
        self._received += 1

    def report(self, unix_s: float, monotonic_s: float, rtp_timestamp: int, jitter_ms: float) -> bytes:
        """A sender report (plus one reception report block when the caller has sent RTP)."""
        blocks = []
        if self.remote_ssrc is not None and self._base is not None:
            expected = self._highest - self._base + 1
            lost = max(0, expected - self._received)
            interval_expected = expected - self._expected_prior
            interval_lost = interval_expected - (self._received - self._received_prior)
            self._expected_prior, self._received_prior = expected, self._received
            fraction = (interval_lost << 8) // interval_expected if interval_expected > 0 and interval_lost > 0 else 0
            dlsr = int((monotonic_s - self._lsr_at) * 65536) if self._lsr_at is not None else 0
            blocks.append(RtcpReceiverInfo(
                ssrc=self.remote_ssrc, fraction_lost=min(fraction, 255), packets_lost=min(lost, 0x7FFFFF),
                highest_sequence=max(0, self._highest - 65536) & 0xFFFFFFFF, jitter=int(jitter_ms * 8),
                lsr=self._lsr, dlsr=dlsr,
            ))
        info = RtcpSenderInfo(ntp_timestamp=ntp_time(unix_s), rtp_timestamp=rtp_timestamp,
                              packet_count=self.packets_sent & 0xFFFFFFFF, octet_count=self.octets_sent & 0xFFFFFFFF)
        return bytes(RtcpSrPacket(ssrc=self.ssrc, sender_info=info, reports=blocks))

    def receive(self, data: bytes, monotonic_s: float) -> None:
        """Read a compound RTCP packet from the caller.

        Raises:
            ValueError: When ``data`` is not RTCP.
        """
        for packet in RtcpPacket.parse(data):
            if isinstance(packet, RtcpSrPacket):
                self._lsr = (packet.sender_info.ntp_timestamp >> 16) & 0xFFFFFFFF
                self._lsr_at = monotonic_s
                self._read_blocks(packet.reports)
            elif isinstance(packet, RtcpRrPacket):
                self._read_blocks(packet.reports)

    def _read_blocks(self, blocks: list[RtcpReceiverInfo]) -> None:
        for block in blocks:
            if block.ssrc == self.ssrc:
                self.reports_received += 1
                self.remote_fraction_lost = block.fraction_lost / 256
                self.remote_jitter_ms = block.jitter / 8
