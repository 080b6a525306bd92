"""RTP pieces without a network: G.711 via aiortc, the jitter buffer, RFC 4733 DTMF, the outbound stream."""

from __future__ import annotations

import numpy as np
import pytest

from voice_server.sip.rtp import G711, Concealer, DtmfDecoder, JitterBuffer, RtpSender, parse_packet


@pytest.mark.parametrize("codec", ["PCMU", "PCMA"])
def test_g711_round_trip_is_close(codec: str) -> None:
    """A tone survives encode → decode within G.711's quantisation error; silence encodes to the idle byte."""
    g = G711(codec)
    pcm = (np.sin(np.arange(160) / 4) * 10_000).astype(np.int16)
    payload = g.encode(pcm)
    assert len(payload) == 160
    back = g.decode(payload)
    assert np.abs(back.astype(int) - pcm).max() < 700
    assert g.silence == (b"\xff" if codec == "PCMU" else b"\xd5") * 160


def _fill(jb: JitterBuffer, seqs: list[int], t0: float = 0.0) -> None:
    for i, seq in enumerate(seqs):
        jb.push(seq & 0xFFFF, seq * 160, bytes([seq & 0xFF]), t0 + i * 0.02)


def test_jitter_buffer_reorders_and_drops_duplicates_and_late_packets() -> None:
    """Out-of-order packets come out in order; a duplicate and a packet older than what was played are dropped."""
    jb = JitterBuffer(min_frames=2)
    _fill(jb, [10, 12, 11, 11, 13])
    out = [jb.pop()[0] for _ in range(4)]
    assert out == [bytes([10]), bytes([11]), bytes([12]), bytes([13])]
    jb.push(9, 9 * 160, b"x", 1.0)
    assert jb.stats.duplicates == 1 and jb.stats.late == 1


def test_loss_is_reported_for_concealment() -> None:
    """A missing sequence number yields (None, True): the caller conceals it with a fading repeat."""
    jb = JitterBuffer(min_frames=1)
    _fill(jb, [1, 2, 4, 5])
    results = [jb.pop() for _ in range(4)]
    assert results[2] == (None, True) and jb.stats.lost == 1
    c = Concealer()
    c.good(np.full(160, 1000, np.int16))
    first, second = c.conceal(), c.conceal()
    assert 0 < int(second.max()) < int(first.max()) < 1000


def test_sequence_numbers_wrap() -> None:
    """65534, 65535, 0, 1 play in that order."""
    jb = JitterBuffer(min_frames=1)
    _fill(jb, [65534, 65535, 65536, 65537])
    assert [jb.pop()[0] for _ in range(4)] == [bytes([254]), bytes([255]), bytes([0]), bytes([1])]


def test_buffering_before_playback_follows_jitter_and_is_bounded() -> None:
    """Playback waits for the target depth; jittery arrival raises the target; capacity bounds memory."""
    jb = JitterBuffer(min_frames=2, max_frames=10, capacity=50)
    jb.push(1, 160, b"a", 0.0)
    assert jb.pop() == (None, False)
    rng = np.random.default_rng(1)
    for i in range(2, 200):
        jb.push(i, i * 160, b"b", i * 0.02 + float(rng.uniform(0, 0.08)))
    assert jb.stats.jitter_ms > 10 and jb.target > 2
    assert jb.depth <= 50 and jb.stats.overflow > 0


def test_dtmf_press_is_reported_once_despite_redundant_end_packets() -> None:
    """Start, updates and three end packets of one press (same timestamp) → one digit; a new press → another."""
    d = DtmfDecoder()
    presses = [d.feed(bytes([11, 10]) + (160 * k).to_bytes(2, "big"), 8000) for k in range(1, 4)]
    ends = [d.feed(bytes([11, 0x8A, 2, 0x80]), 8000) for _ in range(3)]
    assert presses == ["#", None, None] and ends == [None] * 3
    assert d.feed(bytes([1, 0x8A, 2, 0x80]), 9600) == "1"  # only its end packets arrived: still counted
    with pytest.raises(ValueError):
        d.feed(b"\x01", 1)


def test_sender_marks_talk_spurts_and_keeps_numbering_continuous() -> None:
    """Marker on the first voiced packet after silence only; seq +1 and timestamp +160 per packet or skip."""
    s = RtpSender(ssrc=1, seq=65535, timestamp=0)
    pkts = [parse_packet(s.packet(0, b"\xff" * 160, voiced=v)) for v in (False, True, True, False, True)]
    assert [p.marker for p in pkts] == [0, 1, 0, 0, 1]
    assert [p.sequence_number for p in pkts] == [65535, 0, 1, 2, 3]
    s.skip()
    assert parse_packet(s.packet(0, b"", voiced=False)).timestamp == 6 * 160


@pytest.mark.parametrize("data", [b"", b"\x00" * 12, b"\x80\xc8" + b"\x00" * 30, b"\x80" * 5])
def test_non_rtp_is_rejected(data: bytes) -> None:
    """Too short, wrong version, RTCP (PT 200-207) → ValueError."""
    with pytest.raises(ValueError):
        parse_packet(data)
