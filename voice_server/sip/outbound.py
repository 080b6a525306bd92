"""Outbound calls (UAC): the avatar phones the user through a configured trunk, for proactive check-ins.

`OutboundDialer.dial` sends an INVITE with our SDP offer (PCMU, PCMA, telephone-event) to the trunk's ``proxy``,
resending it over UDP (Timer A) until something answers, and follows the responses: 180/183 → ringing;
401/407 → ACK and one retry with digest credentials (the trunk's proxy_username/proxy_password); any other failure →
ACK and the call ends with that status; 2xx → ACK (to the callee's Contact, along the Record-Route set,
reversed) and the answer's media. Once answered, the call is handed to the manager's `CallHost.adopt`, which runs it
like an inbound one, and the avatar speaks first. No answer within `RING_TIMEOUT_S` → CANCEL.

Only trunks the operator configured with a ``proxy`` can carry outbound calls: a bearer token is not enough to
make Soma dial an arbitrary SIP address (toll fraud, scanning). Responses count only from the trunk (its proxy's
address or ``allow`` networks), and once answered the far end's in-dialog requests are held to the same dialog
and source rules as an inbound caller's (`voice_server.sip.guard`).
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import secrets
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol

from pipeline.tasks import cancel_and_wait
from voice_server.accounts import Principal
from voice_server.ascii_numbers import ascii_int
from voice_server.errors import ApiError
from voice_server.sip import dialog as d
from voice_server.sip import sdp
from voice_server.sip.auth import client_authorization
from voice_server.sip.message import Headers, Request, Response, SipParseError, parse_name_addr, parse_uri
from voice_server.sip.rtp_stream import PortPool
from voice_server.sip.trunks import Trunk

if TYPE_CHECKING:
    from voice_server.sip.endpoint import Flow, SipEndpoint

log = logging.getLogger(__name__)

RING_TIMEOUT_S = 60.0
NO_RESPONSE_S = 32.0  # Timer B (64·T1): nothing at all came back
MAX_OUTBOUND = 32  # dialling at once, server-wide
MAX_OUTBOUND_PER_USER = 4  # one avatar dialling at once; like WebRTC's per-user call limit
MAX_RESPONSES = 32
GREETING = (
    "(You are calling the user on the phone; they just picked up. Greet them warmly by saying hello and why you "
    "are calling{reason}. Keep it to one or two short sentences.)"
)


class CallHost(Protocol):
    """What the dialer needs from the call manager (`voice_server.sip.calls.SipCallManager`), and no more: the
    manager owns the dialer, so the dialer sees it only through this."""

    @property
    def trunks(self) -> Sequence[Trunk]:
        """The configured trunks; only those with a ``proxy`` carry outbound calls."""
        ...

    @property
    def busy(self) -> bool:
        """Whether the server-wide call cap is reached (calls being dialled count)."""
        ...

    @property
    def ports(self) -> PortPool:
        """RTP ports: one is taken per call, given back unless `adopt` took it over."""
        ...

    @property
    def endpoint(self) -> SipEndpoint:
        """The SIP listener whose UDP socket our INVITEs go out on."""
        ...

    @property
    def public_host(self) -> str | None:
        """The address put in our Via, Contact and SDP (``None``: the flow's local address)."""
        ...

    async def adopt(self, call_id: str, local_tag: str, flow: Flow, invite: Request, dialog: d.Dialog, port: int,
                    negotiated: sdp.Negotiated, principal: Principal, greeting: str,
                    trunk: Trunk | None = None) -> None:
        """Run the answered call like an inbound one, taking over ``port``; returns when it has ended."""
        ...


@dataclass(eq=False)
class OutboundCall:
    """One outbound call as the API reports it.

    Attributes:
        id: The Call-ID (also the API's id).
        state: ``calling``, ``ringing``, ``answered``, ``ended`` or ``failed``.
        status: The final SIP status of the INVITE (0 until there is one).
    """

    id: str
    user: Principal
    to: str
    trunk: Trunk
    reason: str
    state: str = "calling"
    status: int = 0
    created: float = field(default_factory=time.time)
    answered_at: float | None = None
    responses: asyncio.Queue[Response] = field(default_factory=lambda: asyncio.Queue(MAX_RESPONSES))
    hang_up: asyncio.Event = field(default_factory=asyncio.Event)
    task: asyncio.Task[None] | None = None
    ack: bytes | None = None  # the ACK of the 2xx, resent if the callee retransmits its 200 (ACK lost)
    resend_ack: object = None  # the Flow the ACK went out on

    def public(self) -> dict[str, object]:
        """The API view (no trunk credentials)."""
        return {"id": self.id, "object": "sip.outbound_call", "to": self.to, "trunk": self.trunk.name,
                "state": self.state, "status": self.status, "created_at": int(self.created),
                "answered_at": int(self.answered_at) if self.answered_at else None}


class OutboundDialer:
    """Places and tracks outbound calls for a call manager (`CallHost`)."""

    def __init__(self, manager: CallHost) -> None:
        self.manager = manager
        self.calls: dict[str, OutboundCall] = {}

    def dial(self, user: Principal, to: str, *, trunk_name: str | None = None, reason: str = "") -> OutboundCall:
        """Start calling ``to`` for ``user``'s avatar; returns at once (follow ``state``).

        Raises:
            ApiError: 400 for a URI that is not ``sip:``/``tel:``, 409 when no trunk with a proxy is configured
                (or the named one is not), 429 when this user already dials `MAX_OUTBOUND_PER_USER` calls,
                503 when too many calls are being placed server-wide.
        """
        try:
            target = parse_uri(to)
        except SipParseError:
            raise ApiError(400, "invalid_uri", "'to' must be a sip: or tel: URI such as sip:+4930123@pbx") from None
        trunks = [t for t in self.manager.trunks if t.proxy is not None and (trunk_name in (None, t.name))]
        if not trunks:
            raise ApiError(409, "no_outbound_trunk", "no SIP trunk with a 'proxy' is configured for outbound calls"
                           if trunk_name is None else f"no trunk named {trunk_name[:40]!r} with a 'proxy'")
        dialling = [c for c in self.calls.values() if c.state in ("calling", "ringing")]
        if sum(c.user.user_id == user.user_id for c in dialling) >= MAX_OUTBOUND_PER_USER:
            raise ApiError(429, "rate_limited", f"at most {MAX_OUTBOUND_PER_USER} outbound calls of yours at once")
        if len(dialling) >= MAX_OUTBOUND or self.manager.busy:
            raise ApiError(503, "server_busy", "too many calls are being placed or are live; try again shortly")
        trunk = trunks[0]
        uri = to if target.scheme != "tel" else f"sip:{target.user}@{trunk.proxy}"
        call = OutboundCall(secrets.token_hex(12) + "@soma", user, uri, trunk, reason[:200])
        self._forget_old()
        self.calls[call.id] = call
        call.task = asyncio.create_task(self._run(call), name="sip-outbound")
        return call

    @property
    def dialling(self) -> int:
        """Outbound calls being placed (not yet answered or failed): they count against the call cap."""
        return sum(c.state in ("calling", "ringing") for c in self.calls.values())

    def on_response(self, response: Response, flow: Flow) -> bool:
        """Route a response to the outbound call it belongs to; False when it is not ours (or not from the call's
        trunk: the Call-ID alone must not let anyone answer, fail or redirect our call)."""
        call = self.calls.get(response.call_id)
        if call is None or not _from_trunk(call.trunk, flow.addr[0]):
            return False
        if call.ack is not None and response.cseq.method == "INVITE" and 200 <= response.status < 300:
            send = getattr(call.resend_ack, "send", None)
            if send is not None:
                send(call.ack)  # §13.2.2.4: a retransmitted 2xx means our ACK was lost
            return True
        with contextlib.suppress(asyncio.QueueFull):
            call.responses.put_nowait(response)
        return True

    async def aclose(self) -> None:
        """Stop dialling (calls already answered are ended by the manager)."""
        for call in self.calls.values():
            call.hang_up.set()
        tasks = [c.task for c in self.calls.values() if c.task is not None and not c.task.done()]
        if tasks:
            await asyncio.wait(tasks, timeout=5.0)  # CANCEL sent and answered, or the adopted call released
            await cancel_and_wait(*tasks, timeout=3.0)

    def _forget_old(self) -> None:
        """Keep finished calls for an hour (the API reports them), at most 1000 in all."""
        cutoff = time.time() - 3600
        for key, call in list(self.calls.items()):
            if call.state in ("ended", "failed") and (call.created < cutoff or len(self.calls) > 1000):
                del self.calls[key]

    # ------------------------------------------------------------------------------------------ dialling

    async def _run(self, call: OutboundCall) -> None:
        port = self.manager.ports.take()
        if port is None:
            call.state, call.status = "failed", 503
            return
        try:
            await self._dial(call, port)
        except Exception:
            log.exception("sip: outbound call %s failed", call.id[:12])
            call.state = "failed"
        finally:
            if call.state != "answered":
                self.manager.ports.give_back(port)
                if call.state not in ("failed", "ended"):
                    call.state = "failed"

    async def _dial(self, call: OutboundCall, port: int) -> None:
        manager = self.manager
        flow = manager.endpoint.udp_flow(_proxy_addr(call.trunk))
        if flow is None:
            call.state, call.status = "failed", 503
            return
        host = manager.public_host or flow.local[0]
        tag, cseq, auth = d.new_tag(), 1, None
        offer = sdp.build(host, port, session_id=port, version=1, codecs=[(0, "PCMU"), (8, "PCMA")], dtmf_pt=101)
        while True:
            invite = self._invite(call, host, flow.local[1], tag, cseq, offer, auth)
            flow.send(invite.serialize())
            response = await self._final(call, invite, flow)
            if response is None:
                return
            trunk = call.trunk
            if response.status in (401, 407) and auth is None and trunk.proxy_username and trunk.proxy_password:
                flow.send(self._ack(invite, response, host, flow.local[1]).serialize())
                name = "www-authenticate" if response.status == 401 else "proxy-authenticate"
                challenge = response.headers.get(name)
                if challenge is None:
                    break
                header = "authorization" if response.status == 401 else "proxy-authorization"
                auth = (header, client_authorization(challenge, username=trunk.proxy_username,
                                                     password=trunk.proxy_password, method="INVITE", uri=call.to))
                cseq += 1
                continue
            break
        call.status = response.status
        if response.status >= 300:
            flow.send(self._ack(invite, response, host, flow.local[1]).serialize())
            call.state = "failed"
            log.info("sip: outbound call %s to %s failed: %d", call.id[:12], call.trunk.name, response.status)
            return
        dialog = d.Dialog(call.id, tag, parse_name_addr(invite.headers.get("from") or "").uri, call.to,
                          response.to.tag or "", _contact(response, call.to),
                          list(reversed(response.headers.all("record-route"))), cseq)
        try:
            negotiated = sdp.negotiate(sdp.parse(response.body))
        except sdp.SdpError as exc:
            log.info("sip: outbound call %s: unusable SDP answer (%s)", call.id[:12], exc)
            flow.send(self._ack(invite, response, host, flow.local[1], dialog=dialog).serialize())
            call.state = "failed"
            flow.send(dialog.request("BYE", _via(host, flow.local[1]), f"<sip:soma@{host}:{flow.local[1]}>")
                      .serialize())
            return
        call.ack, call.resend_ack = self._ack(invite, response, host, flow.local[1], dialog=dialog).serialize(), flow
        flow.send(call.ack)
        call.state, call.answered_at = "answered", time.time()
        log.info("sip: outbound call %s answered (%s)", call.id[:12], negotiated.codec)
        greeting = GREETING.format(reason=f" ({call.reason})" if call.reason else "")
        await manager.adopt(call.id, tag, flow, invite, dialog, port, negotiated, call.user, greeting, call.trunk)
        call.state = "ended"

    async def _final(self, call: OutboundCall, invite: Request, flow: object) -> Response | None:
        """Wait for the INVITE's final response (resending it until a provisional one; CANCEL on timeout)."""
        from voice_server.sip.endpoint import Flow

        assert isinstance(flow, Flow)
        started, resend, heard = time.monotonic(), 0.5, False
        cancelled = False
        cseq = invite.cseq.number
        while True:
            if call.hang_up.is_set() and not cancelled:
                cancelled = True
                flow.send(self._cancel(invite).serialize())
            elapsed = time.monotonic() - started
            if not heard and elapsed > NO_RESPONSE_S:
                call.state, call.status = "failed", 408
                return None
            if heard and elapsed > RING_TIMEOUT_S and not cancelled:
                call.hang_up.set()
                continue
            wait = resend if not heard else 1.0
            try:
                response = await asyncio.wait_for(call.responses.get(), wait)
            except TimeoutError:
                if not heard:
                    flow.send(invite.serialize())
                    resend = min(resend * 2, 4.0)
                continue
            if response.cseq.method != "INVITE" or response.cseq.number != cseq:
                continue
            heard = True
            if response.status < 200:
                if response.status in (180, 183):
                    call.state = "ringing"
                continue
            return response

    def _invite(self, call: OutboundCall, host: str, port: int, tag: str, cseq: int, offer: bytes,
                auth: tuple[str, str] | None) -> Request:
        headers = Headers()
        user = call.user.username
        headers.items += [
            ("via", _via(host, port)),
            ("max-forwards", "70"),
            ("from", f'"{user}" <sip:{user}@{host}>;tag={tag}'),
            ("to", f"<{call.to}>"),
            ("call-id", call.id),
            ("cseq", f"{cseq} INVITE"),
            ("contact", f"<sip:soma@{host}:{port}>"),
            ("allow", d.ALLOW),
            ("user-agent", d.USER_AGENT),
            ("content-type", "application/sdp"),
        ]
        if auth is not None:
            headers.items.append(auth)
        return Request(headers, offer, method="INVITE", uri=call.to)

    def _ack(self, invite: Request, response: Response, host: str, port: int,
             dialog: d.Dialog | None = None) -> Request:
        """ACK: same branch for a failure (§17.1.1.3), a new transaction along the dialog for a 2xx (§13.2.2.4)."""
        headers = Headers()
        via = (invite.headers.get("via") or "") if dialog is None else _via(host, port)
        headers.items += [("via", via), ("max-forwards", "70")]
        if dialog is not None:
            headers.items += [("route", r) for r in dialog.route_set]
        headers.items += [
            ("from", invite.headers.get("from") or ""),
            ("to", response.headers.get("to") or ""),
            ("call-id", invite.call_id),
            ("cseq", f"{invite.cseq.number} ACK"),
        ]
        return Request(headers, b"", method="ACK", uri=dialog.remote_target if dialog is not None else invite.uri)

    def _cancel(self, invite: Request) -> Request:
        headers = Headers()
        headers.items += [(k, v) for k, v in invite.headers if k in ("via", "from", "to", "call-id")]
        headers.items += [("cseq", f"{invite.cseq.number} CANCEL"), ("max-forwards", "70")]
        return Request(headers, b"", method="CANCEL", uri=invite.uri)


def _proxy_addr(trunk: Trunk) -> tuple[str, int]:
    assert trunk.proxy is not None
    host, _, port = trunk.proxy.rpartition(":")
    number = ascii_int(port, max_digits=5)
    assert number is not None, "validated by parse_trunks"
    return host.strip("[]"), number


def _from_trunk(trunk: Trunk, ip: str) -> bool:
    """Whether a response from ``ip`` may come from ``trunk``: its proxy's address or ``allow`` networks. A proxy
    given by name cannot be checked against an address without a DNS lookup; its ``allow`` networks (if any)
    then decide."""
    try:
        proxy: ipaddress.IPv4Address | ipaddress.IPv6Address | None = ipaddress.ip_address(_proxy_addr(trunk)[0])
    except ValueError:
        proxy = None
    if proxy is not None and proxy == ipaddress.ip_address(ip):
        return True
    if trunk.allow:
        return trunk.admits(ip)
    return proxy is None


def _via(host: str, port: int) -> str:
    return f"SIP/2.0/UDP {host}:{port};branch={d.new_branch()};rport"


def _contact(response: Response, fallback: str) -> str:
    """The callee's Contact URI (the dialog's remote target), or ``fallback`` when it has none we can read."""
    contact = response.headers.get("contact")
    try:
        return parse_name_addr(contact).uri if contact else fallback
    except SipParseError:
        return fallback
