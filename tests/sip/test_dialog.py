"""Dialog state for our BYE (RFC 3261 §12), caller IDs, SIP INFO DTMF bodies."""

from __future__ import annotations

from tests.sip.test_message import INVITE
from voice_server.sip import dialog as d
from voice_server.sip.message import Request, parse


def _invite(extra: bytes = b"") -> Request:
    msg = parse(INVITE.replace(b"Max-Forwards: 70\r\n", b"Max-Forwards: 70\r\n" + extra))
    assert isinstance(msg, Request)
    return msg


def test_our_bye_follows_the_record_route_to_the_callers_contact() -> None:
    """Route = Record-Route in order (UAS side), Request-URI = caller's Contact, our tag in From, theirs in To,
    a CSeq of our own that increases."""
    dialog = d.Dialog.from_invite(_invite(), "ourtag")
    bye = parse(dialog.request("BYE", "SIP/2.0/UDP 127.0.0.1:5060;branch=z9hG4bKx", "<sip:soma@127.0.0.1>")
                .serialize())
    assert isinstance(bye, Request) and bye.method == "BYE" and bye.uri == "sip:sipp@127.0.0.1:15080"
    assert bye.headers.all("route") == ["<sip:10.0.0.1;lr>", "<sip:10.0.0.2;lr>"]
    assert bye.from_.tag == "ourtag" and bye.to.tag == "17446SIPpTag1" and bye.call_id == "1-17446@127.0.0.1"
    second = dialog.request("BYE", "SIP/2.0/UDP h;branch=z9hG4bKy", "<sip:soma@h>")
    assert second.cseq.number == bye.cseq.number + 1


def test_caller_id_trusts_p_asserted_identity_only_from_a_trunk() -> None:
    """From a configured trunk the PAI number is the caller; from anyone else only the From user counts."""
    invite = _invite(b"P-Asserted-Identity: <sip:+4930111@pbx>\r\n")
    assert d.caller_id(invite, trusted=True) == "+4930111"
    assert d.caller_id(invite, trusted=False) == "bob"


def test_info_dtmf_bodies() -> None:
    """application/dtmf-relay ``Signal=#`` and application/dtmf ``5`` are digits; anything else is not."""

    def info(kind: str, body: bytes) -> Request:
        raw = (b"INFO sip:soma@h SIP/2.0\r\nVia: SIP/2.0/UDP h;branch=z9hG4bKi\r\nFrom: <sip:a@h>;tag=1\r\n"
               b"To: <sip:soma@h>;tag=2\r\nCall-ID: c\r\nCSeq: 2 INFO\r\nContent-Type: " + kind.encode()
               + b"\r\nContent-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body)
        msg = parse(raw)
        assert isinstance(msg, Request)
        return msg

    assert d.info_digit(info("application/dtmf-relay", b"Signal=#\r\nDuration=160\r\n")) == "#"
    assert d.info_digit(info("application/dtmf", b"5")) == "5"
    assert d.info_digit(info("application/dtmf-relay", b"Signal=X\r\n")) is None
    assert d.info_digit(info("text/plain", b"5")) is None
