"""Property-based fuzzing of the SIP wire parsers: the message parser and TCP framing (`message.parse`,
`frame_stream`), what the call logic reads from a parsed message (Via, From/To, CSeq, Contact, caller ID, DTMF
INFO), and the SDP parser (`sdp.parse` / `negotiate`). Whatever the bytes, each either succeeds or raises its
module's own error type (`SipParseError` / `SdpError`): anything else would escape to the listener as an
internal error, one per datagram. Deterministic (derandomized) so CI runs the same examples every time."""

from __future__ import annotations

import re

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.sip.test_message import INVITE
from tests.sip.test_sdp import OFFER
from voice_server.sip import dialog as d
from voice_server.sip import guard, sdp
from voice_server.sip.endpoint import _lenient_400
from voice_server.sip.message import MAX_MESSAGE_BYTES, Request, SipParseError, frame_stream, parse, parse_uri

FUZZ = settings(max_examples=500, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow])
# Digits Python's int() or str.isdigit() accept but SIP/SDP do not: superscripts (isdigit, int() refuses),
# Arabic-Indic, Extended Arabic-Indic, Devanagari, fullwidth (int() accepts), and a Tamil digit.
UNICODE_DIGITS = "²³¹٠١٢٣٤٥٦٧٨٩۰۱۲५००１２３௧"
NUMBERS = st.one_of(
    st.text(alphabet="²³¹", min_size=1, max_size=3),
    st.text(alphabet=UNICODE_DIGITS, min_size=1, max_size=6),
    st.text(alphabet="0123456789" + UNICODE_DIGITS, min_size=1, max_size=8),
    st.integers(min_value=0, max_value=10**40).map(str),
    st.sampled_from(["", "-1", "+5", "1_0", "0x10", " 5", "5 ", "9" * 5000, "1e3", "٣٠٠"]),
)
HEADER_VALUES = st.one_of(NUMBERS, st.text(max_size=60), st.sampled_from(["<", ">", ";", ",", '"', "<sip:>", "sip:@"]))


def exercise_message(data: bytes, *, stream: bool = False) -> None:
    """Parse ``data`` and read everything the call logic reads from a message; only SipParseError may escape."""
    try:
        message = parse(data, stream=stream)
    except SipParseError as exc:
        _lenient_400(data, str(exc))  # the 400 for what could not be parsed must not fail either
        return
    assert message.vias and message.call_id
    message.cseq, message.from_, message.to  # noqa: B018 - validated by parse: must not raise now
    if not isinstance(message, Request):
        return
    parse_uri(message.uri)
    d.early_refusal(message)
    d.info_digit(message)
    guard.matches_dialog(message, message.call_id, "ours", "theirs")
    d.response(message, 400, "Bad Request", to_tag=d.new_tag()).serialize()
    for reader in (lambda: d.caller_id(message, trusted=True), lambda: d.Dialog.from_invite(message, "t")):
        try:
            reader()
        except SipParseError:
            pass


def exercise_sdp(body: bytes) -> None:
    """Parse and negotiate ``body``; only SdpError (NoCommonCodec included) may escape."""
    try:
        sdp.negotiate(sdp.parse(body))
    except sdp.SdpError:
        pass


@st.composite
def mutated(draw: st.DrawFn, valid: bytes, fields: list[bytes]) -> bytes:
    """``valid`` with a few mutations: a field's value replaced (Unicode digits, huge numbers, junk), a line
    dropped or duplicated, bytes inserted, or the message truncated."""
    data = valid
    for _ in range(draw(st.integers(1, 4))):
        lines = data.split(b"\r\n")
        kind = draw(st.sampled_from(["field", "drop", "dup", "insert", "truncate"]))
        if kind == "field":  # one token of a chosen line (a port, a payload type, a tag…) replaced
            name = draw(st.sampled_from(fields))
            at = next((i for i, line in enumerate(lines) if line.startswith(name)), None)
            if at is not None:
                tokens = re.split(rb"([ :/;=@<>,.])", lines[at])
                i = draw(st.integers(0, len(tokens) - 1))
                tokens[i] = draw(HEADER_VALUES).encode("utf-8", "surrogatepass")
                lines[at] = b"".join(tokens)
            data = b"\r\n".join(lines)
        elif kind == "drop" and len(lines) > 1:
            del lines[draw(st.integers(0, len(lines) - 1))]
            data = b"\r\n".join(lines)
        elif kind == "dup" and lines:
            i = draw(st.integers(0, len(lines) - 1))
            lines.insert(i, lines[i])
            data = b"\r\n".join(lines)
        elif kind == "insert":
            at = draw(st.integers(0, len(data)))
            data = data[:at] + draw(NUMBERS).encode("utf-8", "surrogatepass") + data[at:]
        else:
            data = data[: draw(st.integers(0, len(data)))]
    return data


SIP_FIELDS = [b"Via:", b"From:", b"To:", b"Call-ID:", b"CSeq:", b"Contact:", b"Content-Length:", b"Max-Forwards:",
              b"Record-Route:", b"INVITE "]
SDP_FIELDS = [b"m=", b"c=", b"a=rtpmap", b"a=ptime", b"o=", b"v="]


@FUZZ
@given(st.binary(max_size=2048))
def test_arbitrary_bytes_parse_or_raise_sip_parse_error(data: bytes) -> None:
    """Random bytes, as a datagram and as a TCP message: a message or SipParseError, nothing else."""
    exercise_message(data)
    exercise_message(data, stream=True)


@FUZZ
@given(mutated(INVITE, SIP_FIELDS))
def test_mutated_invites_parse_or_raise_sip_parse_error(data: bytes) -> None:
    """A captured INVITE with Unicode digits, huge numbers or junk in its fields, lines dropped or repeated."""
    exercise_message(data)
    exercise_message(data, stream=True)


@FUZZ
@given(st.lists(st.one_of(st.binary(max_size=300), mutated(INVITE, SIP_FIELDS)), min_size=1, max_size=5))
def test_tcp_framing_takes_whole_messages_or_raises(chunks: list[bytes]) -> None:
    """Fed chunk by chunk, `frame_stream` returns whole messages, None, or SipParseError; its buffer stays
    bounded and every message it takes off goes through the parser's contract."""
    buffer = bytearray()
    for chunk in chunks:
        buffer += chunk
        while True:
            before = len(buffer)
            try:
                message = frame_stream(buffer)
            except SipParseError:
                return  # the connection would be closed
            if message is None:
                assert len(buffer) <= MAX_MESSAGE_BYTES + len(chunk)
                break
            assert len(buffer) + len(message) <= before
            exercise_message(message, stream=True)


@FUZZ
@given(st.binary(max_size=2048))
def test_arbitrary_bytes_as_sdp_parse_or_raise_sdp_error(body: bytes) -> None:
    """Random bytes as an SDP body: an offer or SdpError."""
    exercise_sdp(body)


@FUZZ
@given(mutated(OFFER, SDP_FIELDS))
def test_mutated_offers_parse_or_raise_sdp_error(body: bytes) -> None:
    """A valid offer with Unicode digits in its port, payload types, rtpmap or ptime, huge numbers, lines
    dropped or repeated: an offer or SdpError (the INVITE then gets a 400/488, never no answer)."""
    exercise_sdp(body)


@FUZZ
@given(st.sampled_from([b"CSeq: 1 INVITE", b"127.0.0.1:15080;branch", b"Content-Length:   133"]),
       st.text(alphabet=UNICODE_DIGITS, min_size=1, max_size=4))
def test_unicode_digits_in_numbers_are_a_parse_error(where: bytes, digits: str) -> None:
    """The finding itself: a Unicode digit where SIP wants a number (CSeq, Via port, Content-Length) is a
    SipParseError, answered 400, not an exception of another type."""
    number = {b"CSeq: 1 INVITE": b"1", b"127.0.0.1:15080;branch": b"15080", b"Content-Length:   133": b"133"}[where]
    data = INVITE.replace(where, where.replace(number, digits.encode()), 1)
    try:
        parse(data)
    except SipParseError:
        return
    raise AssertionError(f"{where!r} with {digits!r} parsed")


@FUZZ
@given(st.sampled_from([b"49170", b"RTP/AVP 18", b"rtpmap:8", b"ptime:20", b"IP4 192.0.2.10\r\nt"]), NUMBERS)
def test_any_number_in_an_offer_parses_or_raises_sdp_error(where: bytes, number: str) -> None:
    """Every number of an offer (m= port, a payload type, an rtpmap's, ptime, an address octet) replaced by
    Unicode digits, a huge number or junk: an offer or SdpError."""
    digits = re.search(rb"[0-9]+", where)
    assert digits is not None
    patched = where[: digits.start()] + number.encode("utf-8", "surrogatepass") + where[digits.end() :]
    exercise_sdp(OFFER.replace(where, patched, 1))
