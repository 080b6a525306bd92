"""SDP offer/answer (RFC 3264) for G.711 + telephone-event."""

from __future__ import annotations

import pytest

from voice_server.sip import sdp

OFFER = (
    b"v=0\r\no=- 1 1 IN IP4 192.0.2.10\r\ns=-\r\nc=IN IP4 192.0.2.10\r\nt=0 0\r\n"
    b"m=audio 49170 RTP/AVP 18 8 0 96\r\na=rtpmap:18 G729/8000\r\na=rtpmap:8 PCMA/8000\r\n"
    b"a=rtpmap:96 telephone-event/8000\r\na=fmtp:96 0-15\r\na=ptime:20\r\na=sendrecv\r\n"
)


def test_the_offerers_first_supported_codec_wins() -> None:
    """G.729 is skipped, PCMA (the offerer's next preference) is chosen, DTMF keeps the offer's payload type."""
    neg = sdp.negotiate(sdp.parse(OFFER))
    assert (neg.codec, neg.payload_type, neg.dtmf_pt, neg.remote) == ("PCMA", 8, 96, ("192.0.2.10", 49170))
    assert neg.direction == "sendrecv" and neg.we_send


def test_static_payload_types_need_no_rtpmap() -> None:
    """``m=audio … 0`` without a=rtpmap is PCMU (RFC 3551 static type)."""
    offer = b"v=0\r\nc=IN IP4 10.0.0.1\r\nm=audio 4000 RTP/AVP 0\r\n"
    neg = sdp.negotiate(sdp.parse(offer))
    assert neg.codec == "PCMU" and neg.dtmf_pt is None


@pytest.mark.parametrize(
    ("attr", "ours", "sending"),
    [("sendonly", "recvonly", False), ("recvonly", "sendonly", True), ("inactive", "inactive", False)],
)
def test_direction_is_mirrored(attr: str, ours: str, sending: bool) -> None:
    """A caller's sendonly is hold: we answer recvonly and stop sending."""
    neg = sdp.negotiate(sdp.parse(OFFER.replace(b"a=sendrecv", b"a=" + attr.encode())))
    assert neg.direction == ours and neg.we_send is sending


def test_old_style_hold_with_zero_address() -> None:
    """c=0.0.0.0 (RFC 2543 hold) means: do not send."""
    neg = sdp.negotiate(sdp.parse(OFFER.replace(b"c=IN IP4 192.0.2.10", b"c=IN IP4 0.0.0.0")))
    assert not neg.we_send


@pytest.mark.parametrize(
    "offer",
    [
        OFFER.replace(b"RTP/AVP 18 8 0 96", b"RTP/AVP 18").replace(b"a=rtpmap:8 PCMA/8000\r\n", b""),
        OFFER.replace(b"m=audio 49170", b"m=audio 0"),
        OFFER.replace(b"RTP/AVP", b"RTP/SAVP"),
        OFFER.replace(b"PCMA/8000", b"PCMA/16000").replace(b" 0 96", b" 96"),
        b"v=0\r\nc=IN IP4 10.0.0.1\r\nm=video 4000 RTP/AVP 96\r\n",
    ],
)
def test_nothing_we_speak_is_488(offer: bytes) -> None:
    """No PCMU/PCMA at 8 kHz on plain RTP/AVP audio → NoCommonCodec (488)."""
    with pytest.raises(sdp.NoCommonCodec):
        sdp.negotiate(sdp.parse(offer))


@pytest.mark.parametrize(
    "body",
    [b"", b"hello", b"v=0\r\nc=IN IP4 not-an-ip\r\nm=audio 1 RTP/AVP 0\r\n", b"v=0\r\nm=audio x RTP/AVP 0\r\n",
     b"v=0\r\nm=audio 4000 RTP/AVP 0\r\n", b"v=0\r\nm=audio 4000 RTP/AVP 999\r\nc=IN IP4 1.2.3.4\r\n",
     b"v=0\r\n" + b"a=x\r\n" * 5000],
)
def test_unusable_sdp_is_an_error(body: bytes) -> None:
    """Not SDP, bad addresses/ports/payload types, no connection line, oversized → SdpError (400)."""
    with pytest.raises(sdp.SdpError):
        sdp.parse(body)


def test_answer_round_trips() -> None:
    """Our answer parses back to the same codec, DTMF type, address and direction."""
    body = sdp.build("127.0.0.1", 40000, session_id=7, version=2, codecs=[(8, "PCMA")], dtmf_pt=96,
                     direction="recvonly")
    back = sdp.parse(body)
    assert back.payloads == (8, 96) and back.rtpmap[96] == "TELEPHONE-EVENT/8000" and back.direction == "recvonly"
    assert back.ptime == 20 and (back.host, back.port) == ("127.0.0.1", 40000)
