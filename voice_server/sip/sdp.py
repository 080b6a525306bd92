"""SDP offer/answer for one audio stream (RFC 4566, RFC 3264), no sockets.

Soma speaks G.711 at 8 kHz — PCMU (payload type 0) and PCMA (8) — plus RFC 4733 ``telephone-event/8000`` for
DTMF, with 20 ms packets. `negotiate` picks the first codec of the offer that we support (the offerer's
preference order, §6.1), keeps the offerer's payload type numbers, and maps the offered direction to ours
(``sendonly`` from the caller means we are on hold: we answer ``recvonly`` and stop sending).
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field

from voice_server.ascii_numbers import ascii_int

CODECS = {"PCMU": 0, "PCMA": 8}  # name → static payload type (RFC 3551)
DTMF_CODEC = "telephone-event"
MAX_SDP_BYTES = 8 * 1024
_OPPOSITE = {"sendrecv": "sendrecv", "sendonly": "recvonly", "recvonly": "sendonly", "inactive": "inactive"}


@dataclass(slots=True)
class _Audio:
    """The first m=audio section while it is being read."""

    port: int
    payloads: tuple[int, ...]
    rtpmap: dict[int, str] = field(default_factory=dict)
    direction: str | None = None
    host: str | None = None
    ptime: int | None = None


class SdpError(ValueError):
    """An SDP body we cannot use at all (400); `NoCommonCodec` is the 488 case."""


class NoCommonCodec(SdpError):
    """The offer has no PCMU/PCMA audio stream (→ 488 Not Acceptable Here)."""


@dataclass(frozen=True, slots=True)
class MediaOffer:
    """The first audio stream of an SDP body.

    Attributes:
        host: Connection address (``c=``, media-level winning over session-level); ``0.0.0.0`` for the
            RFC 2543 style hold.
        port: RTP port (0: the stream is rejected/disabled).
        payloads: Offered payload types in preference order.
        rtpmap: Payload type → upper-case encoding name (static types filled in).
        direction: ``sendrecv``, ``sendonly``, ``recvonly`` or ``inactive``.
        ptime: Packet time in ms asked for, if any.
    """

    host: str
    port: int
    payloads: tuple[int, ...]
    rtpmap: dict[int, str] = field(default_factory=dict)
    direction: str = "sendrecv"
    ptime: int | None = None


@dataclass(frozen=True, slots=True)
class Negotiated:
    """The outcome of offer/answer: what we send and expect.

    Attributes:
        codec: ``PCMU`` or ``PCMA``.
        payload_type: Its payload type (as the offerer numbered it).
        dtmf_pt: The telephone-event payload type, or ``None`` when the peer did not offer it.
        remote: Where to send RTP (until symmetric RTP learns the real source).
        direction: Our direction in the answer.
    """

    codec: str
    payload_type: int
    dtmf_pt: int | None
    remote: tuple[str, int]
    direction: str

    @property
    def we_send(self) -> bool:
        return self.direction in ("sendrecv", "sendonly")


def parse(body: bytes) -> MediaOffer:
    """Parse an SDP body down to its first audio stream.

    Raises:
        SdpError: When the body is not SDP, is too large, or has no usable audio stream description.
        NoCommonCodec: When it has audio but no m=audio line carrying RTP/AVP.
    """
    if len(body) > MAX_SDP_BYTES:
        raise SdpError("SDP too large")
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        raise SdpError("SDP is not UTF-8") from None
    lines = [line.strip() for line in text.replace("\r\n", "\n").split("\n") if line.strip()]
    if not lines or lines[0] != "v=0":
        raise SdpError("SDP must start with v=0")
    session_host: str | None = None
    session_dir = "sendrecv"
    audio: _Audio | None = None
    for line in lines:
        if len(line) < 2 or line[1] != "=":
            raise SdpError("malformed SDP line")
        kind, value = line[0], line[2:]
        if kind == "m":
            if audio is not None:
                break  # only the first audio stream is used; later streams are answered as rejected
            parts = value.split()
            if len(parts) < 4 or parts[0] != "audio":
                continue
            port = ascii_int(parts[1], max_digits=5)
            if port is None or port > 65535:
                raise SdpError("bad media port")
            if parts[2] not in ("RTP/AVP", "RTP/AVPF"):
                raise NoCommonCodec(f"unsupported media profile {parts[2][:20]}")
            payloads = [ascii_int(p, max_digits=3) for p in parts[3:]]
            if not all(pt is not None and pt < 128 for pt in payloads):
                raise SdpError("bad payload type")
            audio = _Audio(port, tuple(pt for pt in payloads if pt is not None))
        elif kind == "c":
            host = _connection(value)
            if audio is None:
                session_host = host
            else:
                audio.host = host
        elif kind == "a":
            name, _, arg = value.partition(":")
            if name in _OPPOSITE:
                if audio is None:
                    session_dir = name
                else:
                    audio.direction = name
            elif audio is not None and name == "rtpmap":
                pt_text, _, enc = arg.partition(" ")
                pt = ascii_int(pt_text, max_digits=3)
                if pt is not None:
                    audio.rtpmap[pt] = enc.strip()
            elif audio is not None and name == "ptime":
                audio.ptime = ascii_int(arg.strip(), max_digits=4) or audio.ptime
    if audio is None:
        raise NoCommonCodec("no audio stream")
    media_host = audio.host or session_host
    if media_host is None:
        raise SdpError("no connection address")
    rtpmap = {pt: name for pt, name in ((0, "PCMU/8000"), (8, "PCMA/8000")) if pt in audio.payloads}
    rtpmap.update(audio.rtpmap)
    direction = audio.direction or session_dir
    upper = {pt: n.upper() for pt, n in rtpmap.items()}
    return MediaOffer(media_host, audio.port, audio.payloads, upper, direction, audio.ptime)


def _connection(value: str) -> str:
    parts = value.split()
    if len(parts) != 3 or parts[0] != "IN" or parts[1] not in ("IP4", "IP6"):
        raise SdpError("bad c= line")
    host = parts[2].split("/")[0]
    try:
        ipaddress.ip_address(host)
    except ValueError:
        raise SdpError("c= must be an IP address") from None
    return host


def negotiate(offer: MediaOffer) -> Negotiated:
    """Choose our codec and direction for ``offer``.

    Raises:
        NoCommonCodec: When neither PCMU nor PCMA at 8 kHz is offered, or the stream is disabled (port 0).
    """
    if offer.port == 0:
        raise NoCommonCodec("the audio stream is disabled")
    dtmf = next((pt for pt in offer.payloads if offer.rtpmap.get(pt, "").startswith("TELEPHONE-EVENT/8000")), None)
    for pt in offer.payloads:
        name, _, rate = offer.rtpmap.get(pt, "").partition("/")
        if name in CODECS and rate.split("/")[0] == "8000":
            direction = _OPPOSITE[offer.direction]
            if offer.host in ("0.0.0.0", "::"):
                direction = "inactive" if direction in ("recvonly", "inactive") else "recvonly"
            return Negotiated(name, pt, dtmf, (offer.host, offer.port), direction)
    raise NoCommonCodec("no common codec: Soma speaks PCMU and PCMA at 8 kHz")


def build(
    host: str,
    port: int,
    *,
    session_id: int,
    version: int,
    codecs: list[tuple[int, str]],
    dtmf_pt: int | None,
    direction: str = "sendrecv",
) -> bytes:
    """An SDP body for one audio stream (our answer, or our offer when the INVITE had none).

    Args:
        codecs: ``(payload type, name)`` in preference order (name as in `CODECS`).
        dtmf_pt: Payload type for telephone-event, or ``None`` to leave it out.
        version: The o= version; must increase with every changed body in a dialog (RFC 3264 §8).
    """
    ip = "IP6" if ":" in host else "IP4"
    pts = [pt for pt, _ in codecs] + ([dtmf_pt] if dtmf_pt is not None else [])
    lines = [
        "v=0",
        f"o=soma {session_id} {version} IN {ip} {host}",
        "s=Soma",
        f"c=IN {ip} {host}",
        "t=0 0",
        f"m=audio {port} RTP/AVP {' '.join(str(pt) for pt in pts)}",
    ]
    lines += [f"a=rtpmap:{pt} {name}/8000" for pt, name in codecs]
    if dtmf_pt is not None:
        lines += [f"a=rtpmap:{dtmf_pt} telephone-event/8000", f"a=fmtp:{dtmf_pt} 0-16"]
    lines += ["a=ptime:20", f"a={direction}"]
    return ("\r\n".join(lines) + "\r\n").encode()
