"""The caller's SDP offer, checked before aiortc sees it: text in, `ValidOffer` or `OfferError` out (sans-I/O).

aiortc's SDP parser trusts its input. An audio section without ``a=mid``, a second audio section, an attribute
without its value, an ``fmtp`` for a payload type with no ``rtpmap`` or a digit that is not ASCII ends in
``AttributeError``, ``ValueError`` or ``StopIteration`` inside `RTCPeerConnection` — or, worse, in its
background connect task after the call was answered (an offer without ``a=fingerprint``). `validate_offer`
admits what a browser (or aiortc) sends for a Soma call and nothing else aiortc could trip on:

- at most `MAX_OFFER_BYTES`, `MAX_LINES` lines of at most `MAX_LINE_CHARS`; every line ``<letter>=<value>``,
  printable ASCII except in the free-text ``s=`` and ``i=`` lines (so aiortc's ``str.splitlines`` cannot see
  lines this module did not); numbers are ASCII digits of bounded length (``int()`` would also take ``"١٢"``,
  ``" 1"`` or ``"1_0"``, and raise on ``"²"``);
- ``v=0`` first, then one ``o=``, ``s=`` and ``t=``;
- exactly one usable audio section (``UDP/TLS/RTP/SAVPF``) and at most one data-channel section
  (``UDP/DTLS/SCTP webrtc-datachannel`` with ``a=sctp-port``, or the legacy ``DTLS/SCTP <port>``), the one the
  page opens ``oai-events`` on. Anything else is refused rather than answered with port 0 (RFC 3264 §6):
  aiortc cannot answer a section it does not use;
- in each section: one ``a=mid``, unique; ICE credentials and ``a=setup`` (``actpass``/``active``/
  ``passive``) at session or media level; at least one well-formed ``a=fingerprint`` whose hash aiortc
  verifies (sha-256/384/512); audio also ``a=rtcp-mux`` and an ``a=rtpmap`` of a codec aiortc speaks, every
  payload type it describes listed on the ``m=`` line; at most `MAX_CANDIDATES` candidates, each an IP
  literal or an mDNS ``.local`` name (the server sends ICE checks to them: no DNS names, no unbounded lists);
- every attribute aiortc parses has the syntax aiortc's parser assumes; a ``BUNDLE`` group names only the
  offer's mids.

The accepted lines are re-serialised with CRLF endings (`ValidOffer.sdp`), plus the audio section's direction
when only the session states it: hand that, not the request body, to aiortc.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass, field
from typing import Final

from voice_server.ascii_numbers import ascii_int

MAX_OFFER_BYTES: Final = 16 * 1024  # a browser's audio + data-channel offer is 2-6 KB
MAX_LINES: Final = 400
MAX_LINE_CHARS: Final = 1024
MAX_CANDIDATES: Final = 32  # per section: a browser lists a few per network interface
MAX_FINGERPRINTS: Final = 8
MAX_CODECS: Final = 32
MAX_SSRC_LINES: Final = 32
MAX_EXTMAPS: Final = 32

# Digest sizes of the hash functions of RFC 8122; aiortc verifies the peer's certificate with `VERIFIED_HASHES`.
FINGERPRINT_SIZES: Final = {"sha-1": 20, "sha-224": 28, "sha-256": 32, "sha-384": 48, "sha-512": 64}
VERIFIED_HASHES: Final = frozenset({"sha-256", "sha-384", "sha-512"})
SETUP_VALUES: Final = frozenset({"actpass", "active", "passive"})
DIRECTIONS: Final = frozenset({"sendrecv", "sendonly", "recvonly", "inactive"})
AUDIO_PROTOS: Final = frozenset({"UDP/TLS/RTP/SAVPF", "RTP/SAVPF"})
# The codecs aiortc speaks, as it matches them (encoding name and clock rate; `aiortc.codecs.CODECS`).
AUDIO_CODECS: Final = frozenset({("opus", 48000), ("g722", 8000), ("pcmu", 8000), ("pcma", 8000)})
# aiortc reads RTP packets whose payload type is 72-76 as RTCP (RFC 5761 §4).
RTCP_CONFLICT_PTS: Final = range(72, 77)
# fmtp parameters aiortc converts with int().
INT_FMTP_PARAMS: Final = frozenset({"apt", "max-fr", "max-fs", "maxplaybackrate", "minptime", "stereo", "useinbandfec"})
CANDIDATE_TYPES: Final = frozenset({"host", "srflx", "prflx", "relay"})
UINT32: Final = 2**32 - 1

_SESSION_LINES: Final = frozenset("vosiuepcbtrza")
_MEDIA_LINES: Final = frozenset("icba")
# RFC 8866 token, bounded.
_TOKEN: Final = re.compile(r"[!#$%&'*+\-.0-9A-Z^_`a-z{|}~]{1,64}")
_MID: Final = re.compile(r"[!#$%&'*+\-.0-9A-Z^_`a-z{|}~]{1,32}")
_VISIBLE: Final = re.compile(r"[!-~]{1,256}")  # printable ASCII without space
_ICE_UFRAG: Final = re.compile(r"[A-Za-z0-9+/]{4,256}")
_ICE_PWD: Final = re.compile(r"[A-Za-z0-9+/]{22,256}")
_HEX_PAIRS: Final = re.compile(r"[0-9A-Fa-f]{2}(?::[0-9A-Fa-f]{2}){0,63}")
_MDNS_NAME: Final = re.compile(r"[A-Za-z0-9-]{1,63}\.local")
_RTPMAP: Final = re.compile(r"([0-9]{1,3}) ([A-Za-z0-9_.+-]{1,32})/([0-9]{1,6})(?:/([0-9]{1,2}))?")
_EXTMAP: Final = re.compile(r"([0-9]{1,3})(?:/(sendrecv|sendonly|recvonly|inactive))? ([!-~]{1,256})")
_RTCP_FB: Final = re.compile(r"(\*|[0-9]{1,3}) ([!-~]{1,64})(?: [ -~]{1,128})?")
_BANDWIDTH: Final = re.compile(r"[A-Za-z0-9-]{1,16}:[0-9]{1,10}")
_TIMING: Final = re.compile(r"[0-9]{1,20} [0-9]{1,20}")


class OfferError(ValueError):
    """Why an offer is refused.

    Attributes:
        code: Stable, machine-readable: ``invalid_sdp`` (malformed or incomplete), ``offer_without_audio``, or
            ``unsupported_media`` (sections a Soma call does not carry).
        reason: For people; quotes at most a few characters of the offer.
    """

    def __init__(self, reason: str, code: str = "invalid_sdp") -> None:
        super().__init__(reason)
        self.reason = reason
        self.code = code


@dataclass(frozen=True, slots=True)
class ValidOffer:
    """An offer `validate_offer` accepted.

    Attributes:
        sdp: The accepted lines, CRLF-terminated: what to give aiortc.
        audio_mid: The audio section's mid.
        data_mid: The data-channel section's mid, if the offer has one.
    """

    sdp: str
    audio_mid: str
    data_mid: str | None


@dataclass(slots=True)
class _Level:
    """What one level (the session, or one media section) declares; filled line by line."""

    kind: str = "session"
    line: int = 1
    port: int = 0
    proto: str = ""
    formats: tuple[str, ...] = ()
    mid: str | None = None
    ufrag: str | None = None
    pwd: str | None = None
    setup: str | None = None
    direction: str | None = None
    fingerprints: list[str] = field(default_factory=list)  # hash function names
    rtcp_mux: bool = False
    rtpmaps: dict[int, tuple[str, int]] = field(default_factory=dict)  # payload type: (encoding, clock rate)
    fmtps: list[tuple[int, int]] = field(default_factory=list)  # (line, payload type)
    candidates: int = 0
    ssrc_lines: int = 0
    extmaps: int = 0
    sctp_port: int | None = None
    bundles: list[list[str]] = field(default_factory=list)
    singles: set[str] = field(default_factory=set)


def _quote(text: str) -> str:
    return repr(text[:24] + ("…" if len(text) > 24 else ""))


def _number(text: str, maximum: int, what: str) -> int:
    """``text`` as a number of ASCII digits at most ``maximum``, else `OfferError`."""
    value = ascii_int(text, max_digits=len(str(maximum)))
    if value is None:
        raise OfferError(f"{what}: expected a number of ASCII digits, got {_quote(text)}")
    if value > maximum:
        raise OfferError(f"{what}: {value} is more than {maximum}")
    return value


def _ip(text: str, version: str | None, what: str) -> None:
    """``text`` must be an IP literal (of ``version`` ``IP4``/``IP6`` when given)."""
    try:
        if not text.isascii():
            raise ValueError(text)
        address = ipaddress.ip_address(text)
    except ValueError:
        raise OfferError(f"{what}: {_quote(text)} is not an IP address") from None
    if version is not None and f"IP{address.version}" != version:
        raise OfferError(f"{what}: {_quote(text)} is not an {version} address")


def _connection(value: str, what: str) -> None:
    """``IN IP4 <address>`` / ``IN IP6 <address>`` (as in ``c=`` and ``a=rtcp``)."""
    parts = value.split(" ")
    if len(parts) != 3 or parts[0] != "IN" or parts[1] not in ("IP4", "IP6"):
        raise OfferError(f"{what}: expected 'IN IP4|IP6 <address>'")
    _ip(parts[2], parts[1], what)


def _lines(text: str) -> list[tuple[str, str]]:
    """Split into ``(type, value)`` pairs, checking the size limits and line syntax."""
    if len(text.encode("utf-8", "surrogatepass")) > MAX_OFFER_BYTES:
        raise OfferError(f"the offer exceeds {MAX_OFFER_BYTES} bytes")
    raw = text.split("\n")
    if raw and raw[-1] == "":
        raw.pop()  # the last line's line break
    if len(raw) > MAX_LINES:
        raise OfferError(f"the offer has more than {MAX_LINES} lines")
    lines = []
    for n, line in enumerate(raw, 1):
        line = line.removesuffix("\r")
        if len(line) > MAX_LINE_CHARS:
            raise OfferError(f"line {n}: longer than {MAX_LINE_CHARS} characters")
        if len(line) < 2 or line[1] != "=" or not ("a" <= line[0] <= "z"):
            raise OfferError(f"line {n}: expected '<letter>=<value>', got {_quote(line)}")
        kind, value = line[0], line[2:]
        # Free text may be UTF-8; everything else is ASCII. Either way no control characters, which also keeps
        # out every character str.splitlines() breaks on (\v, \f, \x1c-\x1e, \x85, U+2028/9) and lone CRs.
        printable = value.isprintable() if kind in "si" else value.isascii() and value.isprintable()
        if not printable:
            raise OfferError(f"line {n}: control or non-ASCII character in {kind}=")
        lines.append((kind, value))
    return lines


def validate_offer(text: str) -> ValidOffer:
    """Check an SDP offer for a Soma call (see the module docstring for the rules).

    Returns:
        The accepted offer, re-serialised.

    Raises:
        OfferError: The first problem found, with the line number where there is one.
    """
    lines = _lines(text)
    if not lines or lines[0] != ("v", "0"):
        raise OfferError("not an SDP offer: the first line must be 'v=0'")
    session = _Level()
    sections: list[_Level] = []
    for n, (kind, value) in enumerate(lines[1:], 2):
        level = sections[-1] if sections else session
        try:
            if kind == "m":
                sections.append(_media(value, n))
            elif kind not in (_MEDIA_LINES if sections else _SESSION_LINES):
                raise OfferError(f"'{kind}=' is not allowed {'in a media section' if sections else 'here'}")
            elif kind == "a":
                _attribute(level, value, n)
            else:
                _other_line(level, kind, value)
        except OfferError as exc:
            if exc.reason.startswith("line "):
                raise
            raise OfferError(f"line {n}: {exc.reason}", exc.code) from None
    for required in "ost":
        if required not in session.singles:
            raise OfferError(f"the session has no '{required}=' line")
    return _check_sections(session, sections, lines)


def _other_line(level: _Level, kind: str, value: str) -> None:
    if kind in "vost":
        if kind in level.singles:
            raise OfferError(f"more than one '{kind}=' line")
        level.singles.add(kind)
    match kind:
        case "v":
            raise OfferError("'v=' must be the first line, once")
        case "o":
            parts = value.split(" ")
            if len(parts) != 6 or not all(parts) or parts[3] != "IN" or parts[4] not in ("IP4", "IP6"):
                raise OfferError("o=: expected '<user> <id> <version> IN IP4|IP6 <address>'")
            _number(parts[1], 10**20 - 1, "o= session id")
            _number(parts[2], 10**20 - 1, "o= session version")
        case "s":
            if not value:
                raise OfferError("s=: empty (use 's=-')")
        case "t":
            if not _TIMING.fullmatch(value):
                raise OfferError("t=: expected '<start> <stop>'")
        case "c":
            _connection(value, "c=")
        case "b":
            if not _BANDWIDTH.fullmatch(value):
                raise OfferError("b=: expected '<type>:<kbps>'")
        case _:  # i= u= e= p= r= z=: information aiortc ignores, already checked as printable text
            pass


def _media(value: str, n: int) -> _Level:
    """A new section from its ``m=`` line."""
    parts = value.split(" ")
    if len(parts) < 4 or not all(parts):
        raise OfferError("m=: expected '<media> <port> <proto> <format> ...'")
    kind, port_text, proto, *formats = parts
    if kind not in ("audio", "application"):
        shown = kind if _TOKEN.fullmatch(kind) else "?"
        raise OfferError(f"m={shown}: a Soma call carries audio and a data channel only", "unsupported_media")
    port = _number(port_text, 65535, "m= port")
    if port == 0:  # a rejected or bundle-only section: aiortc would still try to use it
        raise OfferError(f"m={kind} has port 0 (a disabled section)", "unsupported_media")
    if kind == "audio":
        if proto not in AUDIO_PROTOS:
            raise OfferError(f"m=audio: protocol {_quote(proto)} is not UDP/TLS/RTP/SAVPF (DTLS-SRTP)")
        if len(formats) > MAX_CODECS:
            raise OfferError(f"m=audio: more than {MAX_CODECS} payload types")
        pts = [_number(f, 127, "m=audio payload type") for f in formats]
        if len(set(pts)) != len(pts) or any(pt in RTCP_CONFLICT_PTS for pt in pts):
            raise OfferError("m=audio: repeated payload types, or ones in 72-76 (read as RTCP)")
    elif proto == "UDP/DTLS/SCTP":
        if formats != ["webrtc-datachannel"]:
            raise OfferError("m=application UDP/DTLS/SCTP: the format must be 'webrtc-datachannel'")
    elif proto == "DTLS/SCTP":  # the pre-RFC 8841 form: the format is the SCTP port
        if len(formats) != 1:
            raise OfferError("m=application DTLS/SCTP: expected one SCTP port")
        _number(formats[0], 65535, "m=application SCTP port")
    else:
        raise OfferError(f"m=application: protocol {_quote(proto)} is not UDP/DTLS/SCTP")
    return _Level(kind=kind, line=n, port=port, proto=proto, formats=tuple(formats))


def _once(level: _Level, name: str) -> None:
    if name in level.singles:
        raise OfferError(f"a={name} appears twice in one {'section' if level.kind != 'session' else 'session'}")
    level.singles.add(name)


def _needs(name: str, value: str | None) -> str:
    if not value:
        raise OfferError(f"a={name} has no value")
    return value


def _attribute(level: _Level, text: str, n: int) -> None:
    """Check one ``a=`` line and record what `_check_sections` needs from it."""
    name, colon, rest = text.partition(":")
    value = rest if colon else None
    if not _TOKEN.fullmatch(name):
        raise OfferError(f"a=: {_quote(name)} is not an attribute name")
    media = level.kind != "session"
    match name:
        case "mid":
            if not media:
                raise OfferError("a=mid belongs in a media section")
            _once(level, name)
            if not _MID.fullmatch(_needs(name, value)):
                raise OfferError("a=mid: expected a token of at most 32 characters")
            level.mid = value
        case "ice-ufrag" | "ice-pwd":
            _once(level, name)
            pattern = _ICE_UFRAG if name == "ice-ufrag" else _ICE_PWD
            if not pattern.fullmatch(_needs(name, value)):
                size = "4-256" if name == "ice-ufrag" else "22-256"
                raise OfferError(f"a={name}: expected {size} characters of [A-Za-z0-9+/]")
            if name == "ice-ufrag":
                level.ufrag = value
            else:
                level.pwd = value
        case "ice-options" | "msid-semantic" | "group":
            parts = _needs(name, value).strip(" ").split(" ")
            if not all(_TOKEN.fullmatch(p) for p in parts):
                raise OfferError(f"a={name}: expected tokens separated by single spaces")
            if name == "group" and parts[0] == "BUNDLE":
                level.bundles.append(parts[1:])
        case "fingerprint":
            _fingerprint(level, _needs(name, value))
        case "setup":
            _once(level, name)
            if value not in SETUP_VALUES:
                raise OfferError("a=setup: expected actpass, active or passive")
            level.setup = value
        case "candidate":
            _candidate(_needs(name, value))
            level.candidates += 1
            if level.candidates > MAX_CANDIDATES:
                raise OfferError(f"more than {MAX_CANDIDATES} candidates in one section")
        case "extmap":
            found = _EXTMAP.fullmatch(_needs(name, value))
            if not found or not 1 <= int(found[1]) <= 255:
                raise OfferError("a=extmap: expected '<id 1-255>[/<direction>] <uri>'")
            level.extmaps += 1
            if level.extmaps > MAX_EXTMAPS:
                raise OfferError(f"more than {MAX_EXTMAPS} a=extmap lines in one section")
        case "rtpmap":
            found = _RTPMAP.fullmatch(_needs(name, value))
            if not found:
                raise OfferError("a=rtpmap: expected '<payload type> <encoding>/<clock rate>[/<channels>]'")
            pt = _payload_type(level, found[1], name)
            if pt in level.rtpmaps:
                raise OfferError(f"a=rtpmap: payload type {pt} described twice")
            level.rtpmaps[pt] = (found[2].lower(), _number(found[3], 999_999, "a=rtpmap clock rate"))
        case "fmtp":
            pt_text, space, params = _needs(name, value).partition(" ")
            if not space:
                raise OfferError("a=fmtp: expected '<payload type> <parameters>'")
            level.fmtps.append((n, _payload_type(level, pt_text, name)))
            for param in params.split(";"):
                key, equals, param_value = param.partition("=")
                if equals and key in INT_FMTP_PARAMS:
                    _number(param_value, UINT32, f"a=fmtp {key}")
        case "rtcp-fb":
            found = _RTCP_FB.fullmatch(_needs(name, value))
            if not found:
                raise OfferError("a=rtcp-fb: expected '<payload type>|* <type>[ <parameter>]'")
            if found[1] != "*":
                _payload_type(level, found[1], name)
        case "rtcp":
            _once(level, name)
            port, space, address = _needs(name, value).partition(" ")
            _number(port, 65535, "a=rtcp port")
            if space:
                _connection(address, "a=rtcp")
        case "rtcp-mux":
            level.rtcp_mux = True
        case "msid":
            parts = _needs(name, value).split(" ")
            if len(parts) > 2 or not all(_VISIBLE.fullmatch(p) for p in parts):
                raise OfferError("a=msid: expected '<stream id>[ <track id>]'")
        case "ssrc":
            ssrc, space, ssrc_attr = _needs(name, value).partition(" ")
            _number(ssrc, UINT32, "a=ssrc id")
            attr_name, colon, _ = ssrc_attr.partition(":")
            if not space or not colon or not _TOKEN.fullmatch(attr_name):
                raise OfferError("a=ssrc: expected '<ssrc> <attribute>:<value>'")
            level.ssrc_lines += 1
            if level.ssrc_lines > MAX_SSRC_LINES:
                raise OfferError(f"more than {MAX_SSRC_LINES} a=ssrc lines in one section")
        case "ssrc-group":
            semantics, *ssrcs = _needs(name, value).split(" ")
            if not _TOKEN.fullmatch(semantics) or not ssrcs or len(ssrcs) > 8:
                raise OfferError("a=ssrc-group: expected '<semantics> <ssrc> ...'")
            for ssrc in ssrcs:
                _number(ssrc, UINT32, "a=ssrc-group ssrc")
        case "sctp-port":
            _once(level, name)
            level.sctp_port = _number(_needs(name, value), 65535, "a=sctp-port")
        case "max-message-size":
            _once(level, name)
            _number(_needs(name, value), UINT32, "a=max-message-size")
        case "sctpmap":
            port, space, description = _needs(name, value).partition(" ")
            _number(port, 65535, "a=sctpmap port")
            if not space or not description:
                raise OfferError("a=sctpmap: expected '<port> <protocol> [<streams>]'")
        case _ if name in DIRECTIONS:
            _once(level, "direction")
            level.direction = name
        case _:  # attributes aiortc ignores (rtcp-rsize, extmap-allow-mixed, ...): printable, as checked
            pass


def _payload_type(level: _Level, text: str, name: str) -> int:
    pt = _number(text, 127, f"a={name} payload type")
    if level.kind != "audio" or text not in level.formats:
        raise OfferError(f"a={name}: payload type {pt} is not on this section's m=audio line")
    return pt


def _fingerprint(level: _Level, value: str) -> None:
    hash_name, space, digest = value.partition(" ")
    size = FINGERPRINT_SIZES.get(hash_name.lower())
    if not space or size is None:
        raise OfferError(f"a=fingerprint: expected '<{'|'.join(FINGERPRINT_SIZES)}> <hex:hex:...>'")
    if not _HEX_PAIRS.fullmatch(digest) or len(digest) != 3 * size - 1:
        raise OfferError(f"a=fingerprint: a {hash_name} fingerprint is {size} hex bytes separated by ':'")
    level.fingerprints.append(hash_name.lower())
    if len(level.fingerprints) > MAX_FINGERPRINTS:
        raise OfferError(f"more than {MAX_FINGERPRINTS} a=fingerprint lines")


def _candidate(value: str) -> None:
    """``<foundation> <component> <transport> <priority> <address> <port> typ <type> [<name> <value>]...``"""
    parts = value.split(" ")
    if len(parts) < 8 or len(parts) > 24 or len(parts) % 2 or parts[6] != "typ":
        raise OfferError("a=candidate: expected '<foundation> <component> <transport> <priority> <address> "
                         "<port> typ <type> [<name> <value>]...'")
    foundation, component, transport, priority, address, port, _, kind, *extensions = parts
    if not re.fullmatch(r"[A-Za-z0-9+/]{1,32}", foundation):
        raise OfferError("a=candidate: the foundation is 1-32 characters of [A-Za-z0-9+/]")
    _number(component, 256, "a=candidate component")
    if transport.lower() not in ("udp", "tcp"):
        raise OfferError("a=candidate: the transport is UDP or TCP")
    _number(priority, UINT32, "a=candidate priority")
    if not _MDNS_NAME.fullmatch(address):  # mDNS names hide a browser's local addresses; no other names
        _ip(address, None, "a=candidate address")
    _number(port, 65535, "a=candidate port")
    if kind not in CANDIDATE_TYPES:
        raise OfferError("a=candidate: the type is host, srflx, prflx or relay")
    for ext_name, ext_value in zip(extensions[::2], extensions[1::2], strict=True):
        if not _TOKEN.fullmatch(ext_name) or not _VISIBLE.fullmatch(ext_value):
            raise OfferError("a=candidate: malformed extension")
        if ext_name == "rport":
            _number(ext_value, 65535, "a=candidate rport")
        elif ext_name == "raddr" and not _MDNS_NAME.fullmatch(ext_value):
            _ip(ext_value, None, "a=candidate raddr")


def _check_sections(session: _Level, sections: list[_Level], lines: list[tuple[str, str]]) -> ValidOffer:
    """The whole-offer rules, once every line is read."""
    audio = [s for s in sections if s.kind == "audio"]
    data = [s for s in sections if s.kind == "application"]
    if not audio:
        raise OfferError("the offer has no audio section: a call needs a microphone track", "offer_without_audio")
    if len(audio) > 1 or len(data) > 1:
        raise OfferError("a Soma call has one audio section and at most one data channel section", "unsupported_media")
    mids: set[str] = set()
    for section in sections:
        where = f"m={section.kind} (line {section.line})"
        if section.mid is None:
            raise OfferError(f"{where} has no a=mid")
        if section.mid in mids:
            raise OfferError(f"{where}: a=mid:{section.mid} is used twice")
        mids.add(section.mid)
        if not (section.ufrag or session.ufrag) or not (section.pwd or session.pwd):
            raise OfferError(f"{where} has no ICE credentials (a=ice-ufrag and a=ice-pwd)")
        hashes = session.fingerprints + section.fingerprints
        if not VERIFIED_HASHES.intersection(hashes):
            raise OfferError(f"{where} has no a=fingerprint of sha-256, sha-384 or sha-512 (DTLS)")
        if not (section.setup or session.setup):
            raise OfferError(f"{where} has no a=setup (DTLS role)")
        if section.kind == "audio":
            if not section.rtcp_mux:
                raise OfferError(f"{where} has no a=rtcp-mux")
            if not AUDIO_CODECS.intersection(section.rtpmaps.values()):
                raise OfferError(f"{where} offers none of opus, G722, PCMU, PCMA (a=rtpmap)", "unsupported_media")
            for n, pt in section.fmtps:
                if pt not in section.rtpmaps:
                    raise OfferError(f"line {n}: a=fmtp for payload type {pt}, which has no a=rtpmap")
        elif section.proto == "UDP/DTLS/SCTP" and section.sctp_port is None:
            raise OfferError(f"{where} has no a=sctp-port")
    if len(session.bundles) > 1:
        raise OfferError("more than one a=group:BUNDLE")
    for bundle in session.bundles:
        if not bundle or any(mid not in mids for mid in bundle) or len(set(bundle)) != len(bundle):
            raise OfferError("a=group:BUNDLE must name the offer's mids, each once")
    assert audio[0].mid is not None
    return ValidOffer(_serialise(lines, audio[0], session), audio[0].mid, data[0].mid if data else None)


def _serialise(lines: list[tuple[str, str]], audio: _Level, session: _Level) -> str:
    """The offer's lines with CRLF endings. aiortc reads a direction only in a media section and fails to
    answer an audio section without one, so the session's (or the default ``sendrecv``, RFC 8866 §6.7) is
    written into the audio section when it has none."""
    out = [f"{kind}={value}\r\n" for kind, value in lines]
    if audio.direction is None:
        end = next((n - 1 for n, (kind, _) in enumerate(lines, 1) if kind == "m" and n > audio.line), len(lines))
        out.insert(end, f"a={session.direction or 'sendrecv'}\r\n")
    return "".join(out)
