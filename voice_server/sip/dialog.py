"""Dialog state and message building for the UAS side (RFC 3261 §12), no I/O.

A `Dialog` is what an INVITE establishes: the caller's identity and tag, our tag, the remote target (its
Contact) and the route set (its Record-Route, in order: a UAS uses it as received, §12.1.1), so that our
in-dialog requests — a BYE when the avatar's side hangs up — travel the same PBX path the call came through.
"""

from __future__ import annotations

import random
import secrets
from dataclasses import dataclass, field

from voice_server.sip.message import Headers, Request, Response, parse_name_addr, parse_uri, response_to

ALLOW = "INVITE, ACK, BYE, CANCEL, OPTIONS, INFO"
# Methods a SIP peer may reasonably send that Soma knowingly does not support (405 with Allow); others are 501.
KNOWN_UNSUPPORTED = frozenset({"REGISTER", "SUBSCRIBE", "NOTIFY", "PUBLISH", "MESSAGE", "REFER", "UPDATE", "PRACK"})
USER_AGENT = "Soma"
_DTMF_INFO = set("0123456789*#ABCD")


def new_tag() -> str:
    """A From/To tag (§19.3: at least 32 bits of randomness)."""
    return secrets.token_hex(8)


def new_branch() -> str:
    """A Via branch with the RFC 3261 magic cookie."""
    return "z9hG4bK" + secrets.token_hex(10)


def capabilities() -> list[tuple[str, str]]:
    """Headers that say what we support (OPTIONS answers, 405/501)."""
    return [("allow", ALLOW), ("accept", "application/sdp"), ("supported", ""), ("server", USER_AGENT)]


def answer_headers(contact: str) -> list[tuple[str, str]]:
    """Headers of a 200 OK to INVITE (besides the copied ones)."""
    return [("contact", contact), ("allow", ALLOW), ("content-type", "application/sdp"), ("server", USER_AGENT)]


def response(request: Request, status: int, reason: str, *, to_tag: str | None,
             extra: list[tuple[str, str]] | None = None, body: bytes = b"") -> Response:
    """A response to ``request`` with our To tag and ``extra`` headers (empty values are left out)."""
    resp = response_to(request, status, reason, to_tag=to_tag)
    for name, value in extra or []:
        if value:
            resp.headers.items.append((name, value))
    resp.body = body
    return resp


def caller_id(request: Request, *, trusted: bool) -> str:
    """The caller's number or user: P-Asserted-Identity when it came through a configured trunk (RFC 3325
    trust domain), else the From URI's user part.

    Raises:
        SipParseError: When the header is malformed.
    """
    asserted = request.headers.get("p-asserted-identity") if trusted else None
    uri = parse_name_addr(asserted).uri if asserted else request.from_.uri
    return parse_uri(uri).user


@dataclass(frozen=True, slots=True)
class Refusal:
    """A request refused before any method logic: its status, reason phrase, extra headers, and why (for logs)."""

    status: int
    reason: str
    why: str
    extra: list[tuple[str, str]] = field(default_factory=list)


def early_refusal(request: Request) -> Refusal | None:
    """§8.2 checks before any method logic: hop limit, required extensions, body type; ``None``: go on."""
    hops = (request.headers.get("max-forwards") or "70").strip()
    if hops == "0" and request.method != "OPTIONS":
        return Refusal(483, "Too Many Hops", "with Max-Forwards 0")
    required = [r.strip() for value in request.headers.all("require") for r in value.split(",") if r.strip()]
    if required:  # we support no SIP extension a peer could require (100rel, timer, …)
        return Refusal(420, "Bad Extension", f"requiring {', '.join(required)[:60]}",
                       [("unsupported", ", ".join(required))])
    kind = (request.headers.get("content-type") or "application/sdp").split(";")[0].strip().lower()
    if request.method == "INVITE" and request.body and kind != "application/sdp":
        return Refusal(415, "Unsupported Media Type", f"with a {kind[:40]} body", [("accept", "application/sdp")])
    return None


def info_digit(request: Request) -> str | None:
    """The key of a SIP INFO DTMF (``application/dtmf-relay`` ``Signal=5`` or ``application/dtmf`` ``5``)."""
    kind = (request.headers.get("content-type") or "").split(";")[0].strip().lower()
    text = request.body.decode("utf-8", errors="replace")
    if kind == "application/dtmf-relay":
        for line in text.splitlines():
            name, _, value = line.partition("=")
            if name.strip().lower() == "signal" and value.strip().upper() in _DTMF_INFO:
                return value.strip().upper()
        return None
    if kind == "application/dtmf" and text.strip().upper() in _DTMF_INFO:
        return text.strip().upper()
    return None


@dataclass(slots=True)
class Dialog:
    """Our side of an INVITE dialog.

    Attributes:
        call_id: The Call-ID.
        local_tag: Our tag (the To tag of our responses, the From tag of our requests).
        local_uri: Our address (the INVITE's To URI).
        remote_uri: The caller's address (its From URI) and ``remote_tag`` its tag.
        remote_target: Where in-dialog requests go (the caller's Contact URI; updated by re-INVITEs).
        route_set: Record-Route values from the INVITE, in order.
    """

    call_id: str
    local_tag: str
    local_uri: str
    remote_uri: str
    remote_tag: str
    remote_target: str
    route_set: list[str] = field(default_factory=list)
    local_cseq: int = field(default_factory=lambda: random.randint(1, 2**20))

    @classmethod
    def from_invite(cls, invite: Request, local_tag: str) -> Dialog:
        """The dialog a 2xx to ``invite`` establishes (§12.1.1)."""
        contact = invite.headers.get("contact")
        target = parse_name_addr(contact).uri if contact else invite.from_.uri
        return cls(invite.call_id, local_tag, invite.to.uri, invite.from_.uri, invite.from_.tag or "", target,
                   invite.headers.all("record-route"))

    def refresh_target(self, request: Request) -> None:
        """A re-INVITE may move the caller (§12.2.2: its Contact replaces the remote target)."""
        contact = request.headers.get("contact")
        if contact:
            self.remote_target = parse_name_addr(contact).uri

    def request(self, method: str, via: str, contact: str) -> Request:
        """An in-dialog request (BYE) from us, with the next CSeq and the route set as Route headers."""
        self.local_cseq += 1
        headers = Headers()
        headers.items += [("via", via), ("max-forwards", "70")]
        headers.items += [("route", r) for r in self.route_set]
        headers.items += [
            ("from", f"<{self.local_uri}>;tag={self.local_tag}"),
            ("to", f"<{self.remote_uri}>" + (f";tag={self.remote_tag}" if self.remote_tag else "")),
            ("call-id", self.call_id),
            ("cseq", f"{self.local_cseq} {method}"),
            ("contact", contact),
            ("user-agent", USER_AGENT),
        ]
        return Request(headers, b"", method=method, uri=self.remote_target)
