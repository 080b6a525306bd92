"""The sans-I/O SIP message layer: parsing captured messages, bounds, serialization, responses, TCP framing."""

from __future__ import annotations

import pytest

from voice_server.sip.message import (
    MAX_MESSAGE_BYTES,
    Request,
    Response,
    SipParseError,
    frame_stream,
    parse,
    parse_name_addr,
    parse_uri,
    parse_via,
    response_to,
)

# An INVITE as sipp 3.6 sent it to Soma (addresses and tags from a real run), with a Record-Route a PBX adds.
INVITE = (
    b"INVITE sip:alice@127.0.0.1:15060 SIP/2.0\r\n"
    b"Via: SIP/2.0/UDP 127.0.0.1:15080;branch=z9hG4bK-17446-1-0;rport\r\n"
    b"Record-Route: <sip:10.0.0.1;lr>, <sip:10.0.0.2;lr>\r\n"
    b'From: "Bob" <sip:bob@127.0.0.1:15080>;tag=17446SIPpTag1\r\n'
    b"To: <sip:alice@127.0.0.1:15060>\r\n"
    b"Call-ID: 1-17446@127.0.0.1\r\n"
    b"CSeq: 1 INVITE\r\n"
    b"Contact: <sip:sipp@127.0.0.1:15080>\r\n"
    b"Max-Forwards: 70\r\n"
    b"Content-Type: application/sdp\r\n"
    b"Content-Length:   133\r\n\r\n"
    b"v=0\r\no=sipp 53655765 2353687637 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"
    b"m=audio 16000 RTP/AVP 0 101\r\na=rtpmap:0 PCMU/8000\r\n"
)


def test_a_captured_invite_parses_with_its_body() -> None:
    """Request line, every header, the body cut at Content-Length, Via/From/To/CSeq parsed."""
    msg = parse(INVITE)
    assert isinstance(msg, Request) and msg.method == "INVITE" and msg.uri == "sip:alice@127.0.0.1:15060"
    assert msg.call_id == "1-17446@127.0.0.1" and msg.cseq.number == 1 and msg.cseq.method == "INVITE"
    (via,) = msg.vias
    assert via.branch == "z9hG4bK-17446-1-0" and "rport" in via.params and via.port == 15080
    assert msg.from_.tag == "17446SIPpTag1" and msg.from_.display == "Bob" and msg.to.tag is None
    assert msg.headers.all("record-route") == ["<sip:10.0.0.1;lr>", "<sip:10.0.0.2;lr>"]
    assert len(msg.body) == 133 and msg.body.startswith(b"v=0")


def test_compact_headers_folding_and_case_are_normalised() -> None:
    """``i:``/``v:``/``f:``/``t:``, mixed case and a folded line read like their long forms."""
    raw = (b"OPTIONS sip:soma@h SIP/2.0\r\nv: SIP/2.0/UDP h:5060;branch=z9hG4bKa\r\nf: <sip:a@h>;tag=1\r\n"
           b"t: <sip:soma@h>\r\ni: abc\r\ncSeQ: 7\r\n  OPTIONS\r\nl: 0\r\n\r\n")
    msg = parse(raw)
    assert msg.call_id == "abc" and msg.cseq.number == 7 and msg.cseq.method == "OPTIONS"


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (INVITE.replace(b"Call-ID: 1-17446@127.0.0.1\r\n", b""), "missing Call-ID"),
        (INVITE.replace(b"Content-Length:   133", b"Content-Length: 900"), "Content-Length larger"),
        (INVITE.replace(b"Content-Length:   133", b"Content-Length: -1"), "bad Content-Length"),
        (INVITE.replace(b"CSeq: 1 INVITE", b"CSeq: one INVITE"), "bad CSeq"),
        (INVITE.replace(b"CSeq: 1 INVITE", b"CSeq: 1 BYE"), "CSeq method mismatch"),
        (INVITE.replace(b"SIP/2.0\r\n", b"SIP/3.0\r\n", 1), "bad request line"),
        (INVITE.replace(b"sip:alice@", b"http:alice@", 1), "unsupported URI scheme"),
        (INVITE.replace(b"Via: SIP/2.0/UDP", b"Via: SIP/2.0"), "bad Via"),
        (INVITE[:60], "no end of headers"),
        (b"\xff\xfe" * 40 + b"\r\n\r\n", "not UTF-8"),
        (INVITE.replace(b"Max-Forwards: 70", b"X: " + b"a" * 3000), "header too long"),
        (INVITE.replace(b"Max-Forwards: 70", b"\r\n".join(b"X-%d: 1" % i for i in range(100))), "too many headers"),
        (INVITE + b"x" * MAX_MESSAGE_BYTES, "too large"),
        (b"SIP/2.0 2000 OK\r\n\r\n", "bad status line"),
    ],
)
def test_malformed_messages_are_refused_with_a_reason(data: bytes, reason: str) -> None:
    """Each kind of malformation raises SipParseError whose message names it (the 400's reason phrase)."""
    with pytest.raises(SipParseError, match=reason):
        parse(data)


def test_serialize_round_trips_and_fixes_content_length() -> None:
    """A parsed message serializes to an equivalent one, with Content-Length recomputed from the body."""
    msg = parse(INVITE)
    assert isinstance(msg, Request)
    msg.body = b"v=0\r\n"
    again = parse(msg.serialize())
    assert isinstance(again, Request) and again.body == b"v=0\r\n" and again.call_id == msg.call_id
    assert again.headers.get("content-length") == "5"


def test_response_copies_dialog_headers_and_adds_our_tag() -> None:
    """§8.2.6: Via, From, Call-ID, CSeq copied; To gets our tag (not on 100); Record-Route echoed on 2xx/1xx."""
    req = parse(INVITE)
    assert isinstance(req, Request)
    ok = response_to(req, 200, "OK", to_tag="abc")
    assert ok.to.tag == "abc" and ok.headers.all("record-route") == req.headers.all("record-route")
    assert ok.vias[0].branch == req.vias[0].branch and ok.cseq == req.cseq
    trying = response_to(req, 100, "Trying", to_tag="abc")
    assert trying.to.tag is None
    again = parse(ok.serialize())
    assert isinstance(again, Response) and again.status == 200 and again.reason == "OK"


def test_tcp_framing_by_content_length() -> None:
    """Messages split and glued arbitrarily on a stream come out whole; CRLF keep-alives are skipped."""
    stream = b"\r\n\r\n" + INVITE + INVITE
    buffer = bytearray()
    out = []
    for i in range(0, len(stream), 37):
        buffer += stream[i : i + 37]
        while (message := frame_stream(buffer)) is not None:
            out.append(message)
    assert out == [INVITE, INVITE] and not buffer
    with pytest.raises(SipParseError):
        frame_stream(bytearray(b"OPTIONS sip:x SIP/2.0\r\nVia: x\r\n\r\n"))  # no Content-Length on TCP


def test_uri_and_address_helpers() -> None:
    """Users, hosts, ports and parameters of the URIs routing looks at; IPv6 references; tel: numbers."""
    uri = parse_uri("sip:1001@[2001:db8::1]:5070;transport=tcp")
    assert (uri.user, uri.host, uri.port, uri.params["transport"]) == ("1001", "2001:db8::1", 5070, "tcp")
    assert parse_uri("tel:+4930123").user == "+4930123"
    assert parse_name_addr("sip:bob@h;tag=9").tag == "9"
    assert parse_via("SIP/2.0/TCP h;branch=z9hG4bKx;received=1.2.3.4").transport == "TCP"
