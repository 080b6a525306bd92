"""SIP messages (RFC 3261 §7, §20): parse and serialize, no sockets.

`parse` turns one datagram (or one framed TCP message) into a `Request` or `Response`, or raises `SipParseError`
with a reason fit for a 400's reason phrase. Bounds are checked before anything is stored: a message larger than
`MAX_MESSAGE_BYTES`, more than `MAX_HEADERS` header fields or a header line longer than `MAX_HEADER_LINE` is
refused, so a hostile peer cannot make one message cost more than a few kilobytes of work.

Header names are case-insensitive and have compact forms (``v`` = Via, ``i`` = Call-ID…); `Headers` normalises
both, keeps the order and repeated fields (Via, Record-Route), and splits comma-joined Via/Route values.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass, field

from voice_server.ascii_numbers import ascii_int

MAX_MESSAGE_BYTES = 16 * 1024  # beyond any sane INVITE with SDP; UDP SIP stays under ~1300 B in practice
MAX_HEADERS = 80
MAX_HEADER_LINE = 2048
SIP_VERSION = "SIP/2.0"

COMPACT = {
    "v": "via", "f": "from", "t": "to", "i": "call-id", "m": "contact", "l": "content-length",
    "c": "content-type", "k": "supported", "s": "subject", "e": "content-encoding",
}
# Canonical spelling used when serializing (peers must accept any case, but some PBX logs are easier to read).
_CANONICAL = {
    "via": "Via", "from": "From", "to": "To", "call-id": "Call-ID", "cseq": "CSeq", "contact": "Contact",
    "content-length": "Content-Length", "content-type": "Content-Type", "max-forwards": "Max-Forwards",
    "record-route": "Record-Route", "route": "Route", "www-authenticate": "WWW-Authenticate",
    "proxy-authenticate": "Proxy-Authenticate", "user-agent": "User-Agent", "server": "Server",
}
_MULTI = frozenset({"via", "route", "record-route", "contact"})  # headers whose values may be comma-joined
_TOKEN = re.compile(r"^[A-Za-z0-9.!%*_+`'~-]+$")
_STATUS = re.compile(r"^SIP/2\.0 ([1-6][0-9][0-9])(?: (.*))?$")
REQUIRED = ("via", "from", "to", "call-id", "cseq")


class SipParseError(ValueError):
    """The bytes are not a SIP message we can handle; the message is a short, safe reason phrase."""


def canonical(name: str) -> str:
    """The display form of a lower-case header name (``call-id`` → ``Call-ID``)."""
    return _CANONICAL.get(name) or "-".join(part.capitalize() for part in name.split("-"))


def _split_commas(value: str) -> list[str]:
    """Split a header value on commas outside quotes and angle brackets."""
    parts, depth, quoted, start = [], 0, False, 0
    for i, ch in enumerate(value):
        if ch == '"':
            quoted = not quoted
        elif not quoted and ch == "<":
            depth += 1
        elif not quoted and ch == ">":
            depth = max(0, depth - 1)
        elif not quoted and depth == 0 and ch == ",":
            parts.append(value[start:i].strip())
            start = i + 1
    parts.append(value[start:].strip())
    return [p for p in parts if p]


@dataclass(slots=True)
class Headers:
    """Ordered, repeatable header fields with case-insensitive lower-case names."""

    items: list[tuple[str, str]] = field(default_factory=list)

    def add(self, name: str, value: str) -> None:
        """Append a field (compact names are expanded)."""
        key = name.strip().lower()
        self.items.append((COMPACT.get(key, key), value.strip()))

    def get(self, name: str, default: str | None = None) -> str | None:
        """The first value of ``name`` (lower case), or ``default``."""
        for key, value in self.items:
            if key == name:
                return value
        return default

    def all(self, name: str) -> list[str]:
        """Every value of ``name`` in order, comma-joined values of multi-value headers split."""
        out: list[str] = []
        for key, value in self.items:
            if key == name:
                out.extend(_split_commas(value) if key in _MULTI else [value])
        return out

    def set(self, name: str, value: str) -> None:
        """Replace every ``name`` field with one."""
        self.remove(name)
        self.items.append((name, value))

    def remove(self, name: str) -> None:
        """Drop every ``name`` field."""
        self.items = [(k, v) for k, v in self.items if k != name]

    def __iter__(self) -> Iterator[tuple[str, str]]:
        return iter(self.items)


@dataclass(frozen=True, slots=True)
class CSeq:
    """A parsed CSeq header."""

    number: int
    method: str


@dataclass(frozen=True, slots=True)
class Via:
    """The parts of one Via header a UAS needs (RFC 3261 §18.2.2, RFC 3581 rport)."""

    transport: str
    host: str
    port: int | None
    params: dict[str, str | None]

    @property
    def branch(self) -> str:
        """The transaction id (``z9hG4bK…`` for RFC 3261 peers); empty when absent."""
        return self.params.get("branch") or ""


@dataclass(frozen=True, slots=True)
class NameAddr:
    """A From/To/Contact value: display name, URI and header parameters (``tag``)."""

    display: str
    uri: str
    params: dict[str, str | None]

    @property
    def tag(self) -> str | None:
        return self.params.get("tag")

    def __str__(self) -> str:
        display = f'"{self.display}" ' if self.display else ""
        params = "".join(f";{k}" if v is None else f";{k}={v}" for k, v in self.params.items())
        return f"{display}<{self.uri}>{params}"


@dataclass(frozen=True, slots=True)
class SipUri:
    """The parts of a ``sip:`` / ``sips:`` / ``tel:`` URI used for routing."""

    scheme: str
    user: str
    host: str
    port: int | None
    params: dict[str, str | None]


def parse_params(text: str) -> dict[str, str | None]:
    """``;a=1;lr`` → ``{"a": "1", "lr": None}`` (names lower-cased, quotes kept off values)."""
    out: dict[str, str | None] = {}
    for part in text.split(";"):
        part = part.strip()
        if not part:
            continue
        name, eq, value = part.partition("=")
        out[name.strip().lower()] = value.strip().strip('"') if eq else None
    return out


def parse_via(value: str) -> Via:
    """Parse one Via value (``SIP/2.0/UDP host:port;branch=…;rport``).

    Raises:
        SipParseError: On a malformed value.
    """
    proto, _, rest = value.strip().partition(" ")
    bits = [b.strip() for b in proto.split("/")]
    if len(bits) != 3 or bits[0].upper() != "SIP":
        raise SipParseError("bad Via")
    sent_by, _, params = rest.strip().partition(";")
    host, port = _host_port(sent_by.strip())
    return Via(bits[2].upper(), host, port, parse_params(params))


def _host_port(text: str) -> tuple[str, int | None]:
    if text.startswith("["):  # IPv6 reference
        host, _, tail = text[1:].partition("]")
        port_text = tail[1:] if tail.startswith(":") else ""
    else:
        host, _, port_text = text.partition(":")
    if not host:
        raise SipParseError("empty host")
    if port_text:
        port = ascii_int(port_text, max_digits=5)
        if port is None or not 0 < port < 65536:
            raise SipParseError("bad port")
        return host, port
    return host, None


def parse_name_addr(value: str) -> NameAddr:
    """Parse a From/To/Contact value, with or without angle brackets.

    Raises:
        SipParseError: On a malformed value.
    """
    value = value.strip()
    if "<" in value:
        display, _, rest = value.partition("<")
        uri, close, params = rest.partition(">")
        if not close:
            raise SipParseError("unclosed <")
        return NameAddr(display.strip().strip('"'), uri.strip(), parse_params(params))
    uri, _, params = value.partition(";")  # without brackets, parameters belong to the header (§20.10)
    if not uri:
        raise SipParseError("empty address")
    return NameAddr("", uri.strip(), parse_params(params))


def parse_uri(uri: str) -> SipUri:
    """Parse a ``sip:user@host:port;params`` URI (user may be empty; ``tel:`` numbers become the user).

    Raises:
        SipParseError: When it is not a sip, sips or tel URI.
    """
    scheme, colon, rest = uri.partition(":")
    scheme = scheme.lower()
    if not colon or scheme not in ("sip", "sips", "tel"):
        raise SipParseError("unsupported URI scheme")
    rest, _, _headers = rest.partition("?")
    main, _, params = rest.partition(";")
    if scheme == "tel":
        return SipUri(scheme, main, "", None, parse_params(params))
    user, at, hostport = main.rpartition("@")
    host, port = _host_port(hostport if at else main)
    return SipUri(scheme, user.partition(":")[0], host, port, parse_params(params))


def parse_cseq(value: str) -> CSeq:
    """Parse ``CSeq: 1 INVITE``.

    Raises:
        SipParseError: On a malformed value.
    """
    text, _, method = value.strip().partition(" ")
    number = ascii_int(text, max_digits=10)
    if number is None or number >= 2**31 or not _TOKEN.match(method.strip() or "!"):
        raise SipParseError("bad CSeq")
    return CSeq(number, method.strip().upper())


@dataclass(slots=True)
class Message:
    """What requests and responses share: headers and body."""

    headers: Headers
    body: bytes

    @property
    def call_id(self) -> str:
        return self.headers.get("call-id") or ""

    @property
    def cseq(self) -> CSeq:
        return parse_cseq(self.headers.get("cseq") or "")

    @property
    def vias(self) -> list[Via]:
        return [parse_via(v) for v in self.headers.all("via")]

    @property
    def from_(self) -> NameAddr:
        return parse_name_addr(self.headers.get("from") or "")

    @property
    def to(self) -> NameAddr:
        return parse_name_addr(self.headers.get("to") or "")

    def _serialize(self, start: str) -> bytes:
        lines = [start]
        for name, value in self.headers:
            if name != "content-length":
                lines.append(f"{canonical(name)}: {value}")
        lines.append(f"Content-Length: {len(self.body)}")
        return ("\r\n".join(lines) + "\r\n\r\n").encode() + self.body


@dataclass(slots=True)
class Request(Message):
    """A SIP request."""

    method: str = ""
    uri: str = ""

    def serialize(self) -> bytes:
        """The wire form, with a Content-Length that matches the body."""
        return self._serialize(f"{self.method} {self.uri} {SIP_VERSION}")


@dataclass(slots=True)
class Response(Message):
    """A SIP response."""

    status: int = 0
    reason: str = ""

    def serialize(self) -> bytes:
        """The wire form, with a Content-Length that matches the body."""
        return self._serialize(f"{SIP_VERSION} {self.status} {self.reason}")


def parse(data: bytes, *, stream: bool = False) -> Request | Response:
    """Parse one complete SIP message.

    Args:
        data: The message bytes (one UDP datagram, or one TCP message framed by `frame_stream`).
        stream: Over TCP the Content-Length header is mandatory (RFC 3261 §18.3).

    Raises:
        SipParseError: For anything malformed, oversized, or missing a mandatory header.
    """
    if len(data) > MAX_MESSAGE_BYTES:
        raise SipParseError("message too large")
    head, sep, body = data.partition(b"\r\n\r\n")
    if not sep:
        head, sep, body = data.partition(b"\n\n")  # tolerated: some test tools send bare LF
        if not sep:
            raise SipParseError("no end of headers")
    try:
        text = head.decode("utf-8")
    except UnicodeDecodeError:
        raise SipParseError("headers are not UTF-8") from None
    lines = text.replace("\r\n", "\n").split("\n")
    start, fields = lines[0].strip(), lines[1:]
    headers = Headers()
    for line in fields:
        if len(line) > MAX_HEADER_LINE:
            raise SipParseError("header too long")
        if line[:1] in (" ", "\t") and headers.items:  # folded continuation line (§7.3.1)
            name, value = headers.items[-1]
            headers.items[-1] = (name, value + " " + line.strip())
            continue
        name, colon, value = line.partition(":")
        if not colon or not _TOKEN.match(name.strip() or "!"):
            raise SipParseError("malformed header")
        headers.add(name, value)
        if len(headers.items) > MAX_HEADERS:
            raise SipParseError("too many headers")
    body = _body(headers, body, stream=stream)
    message: Request | Response
    if start.startswith("SIP/"):
        m = _STATUS.match(start)
        if m is None:
            raise SipParseError("bad status line")
        message = Response(headers, body, status=int(m.group(1)), reason=m.group(2) or "")
    else:
        parts = start.split(" ")
        if len(parts) != 3 or parts[2] != SIP_VERSION or not _TOKEN.match(parts[0]):
            raise SipParseError("bad request line")
        if parts[0] != parts[0].upper():
            raise SipParseError("bad method")
        message = Request(headers, body, method=parts[0], uri=parts[1])
        parse_uri(parts[1])
    for name in REQUIRED:
        if headers.get(name) is None or not headers.get(name):
            raise SipParseError(f"missing {canonical(name)}")
    message.cseq  # noqa: B018 - validates CSeq now rather than on first use
    if not message.vias:  # likewise every Via; "Via: ," has a value but no Via in it
        raise SipParseError("missing Via")
    message.from_  # noqa: B018
    message.to  # noqa: B018
    if isinstance(message, Request) and message.cseq.method != message.method and message.method != "ACK":
        raise SipParseError("CSeq method mismatch")
    return message


def _body(headers: Headers, body: bytes, *, stream: bool) -> bytes:
    length_text = headers.get("content-length")
    if length_text is None:
        if stream:
            raise SipParseError("missing Content-Length")
        return body
    length = ascii_int(length_text, max_digits=6)
    if length is None:
        raise SipParseError("bad Content-Length")
    if length > len(body):
        raise SipParseError("Content-Length larger than the body")
    return body[:length]  # over UDP, bytes beyond Content-Length are discarded (§18.3)


def frame_stream(buffer: bytearray) -> bytes | None:
    """Take one complete message off the front of a TCP receive ``buffer`` (``None``: need more bytes).

    CRLF keep-alives (RFC 5626) between messages are skipped.

    Raises:
        SipParseError: When the head grows past the bounds or Content-Length is unusable; the caller must
            then close the connection (framing is lost).
    """
    while buffer[:2] == b"\r\n":
        del buffer[:2]
    end = buffer.find(b"\r\n\r\n")
    if end < 0:
        if len(buffer) > MAX_MESSAGE_BYTES:
            raise SipParseError("message too large")
        return None
    match = re.search(rb"(?im)^(?:content-length|l)[ \t]*:[ \t]*(\d{1,6})[ \t]*$", bytes(buffer[:end]))
    if match is None:
        raise SipParseError("missing Content-Length")
    total = end + 4 + int(match.group(1))
    if total > MAX_MESSAGE_BYTES:
        raise SipParseError("message too large")
    if len(buffer) < total:
        return None
    message = bytes(buffer[:total])
    del buffer[:total]
    return message


def response_to(request: Request, status: int, reason: str, *, to_tag: str | None = None) -> Response:
    """A response to ``request`` per RFC 3261 §8.2.6: Via, From, Call-ID, CSeq copied; To with our tag.

    Record-Route is copied too (§12.1.1: a UAS echoes it in dialog-creating responses) so a PBX that records
    the route stays on the path. The caller adds Contact, Allow, body and the rest.
    """
    headers = Headers()
    for name, value in request.headers:
        if name in ("via", "from", "call-id", "cseq") or (name == "record-route" and 100 < status < 300):
            headers.items.append((name, value))
    to = request.headers.get("to") or ""
    if to_tag is not None and status > 100 and ";tag=" not in to.replace(" ", "").lower():
        to = f"{to};tag={to_tag}"
    headers.items.insert(2, ("to", to))
    return Response(headers, b"", status=status, reason=reason)
