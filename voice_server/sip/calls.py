"""SIP calls: the UAS dialog logic and every live call's lifetime, bridged to recorded pipeline conversations.

`SipCallManager` is the endpoint's `RequestHandler`. An INVITE is answered ``100 Trying`` at once; then the
caller is admitted (trunk source and digest, `voice_server.sip.routing`), the Request-URI user picks the
avatar (404 when nobody), the line's caller-ID allow-list is applied (403), the SDP offer is negotiated (488
without PCMU/PCMA), an RTP port is taken from the configured range, and the conversation is opened; then
``180 Ringing`` and ``200 OK`` with our SDP. A CANCEL that arrives first turns the INVITE into ``487``.
Before any of that, the source's INVITE rate and the call cap (calls being set up, answered but not yet
acknowledged, and live, together) are checked (`voice_server.sip.guard`), and no RTP is sent before the ACK.
In-dialog requests act on a call only when they match its dialog (481) and come from its peer (403).

A call ends on BYE from either side, when the caller's 200 OK is never acknowledged, after
``sip_media_timeout_s`` without RTP, or at shutdown; its session, port and tasks are released then. One media
clock task ticks every call's `RtpStream` each 20 ms (one timer for all calls instead of one per call).
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import secrets
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

from pipeline.tasks import cancel_and_wait
from voice_server.accounts import Principal
from voice_server.errors import ApiError
from voice_server.resources import Resources
from voice_server.security.audit import AuditEvent
from voice_server.session_factory import Conversation, open_conversation
from voice_server.session_lifetime import SessionLifetime
from voice_server.sip import dialog as d
from voice_server.sip import guard, sdp
from voice_server.sip.auth import DigestServer
from voice_server.sip.endpoint import EndpointLimits, Flow, RejectionLog, SipEndpoint
from voice_server.sip.message import Request, Response, SipParseError, parse_name_addr, parse_uri
from voice_server.sip.outbound import OutboundDialer
from voice_server.sip.routing import LineDirectory, admit_caller
from voice_server.sip.rtp_stream import PortPool, RtcpSocket, RtpStream, SipTransport, media_summary, run_media_clock
from voice_server.sip.trunks import Trunk, parse_trunks

log = logging.getLogger(__name__)

BIND_ATTEMPTS = 8
MAX_SETUPS = 64  # INVITEs being admitted at once (DB lookups); more are answered 503 at once
DIALOG_METHODS = frozenset({"BYE", "INFO", "ACK", "INVITE", "CANCEL", "OPTIONS"})


@dataclass(eq=False)
class SipCall:
    """One call and everything it owns."""

    call_id: str
    local_tag: str
    flow: Flow
    invite: Request
    dialog: d.Dialog
    port: int
    transport: SipTransport = field(default_factory=SipTransport)
    media: RtpStream | None = None
    conversation: Conversation | None = None
    runner: asyncio.Task[None] | None = None
    trunk: Trunk | None = None  # the trunk it came in or went out through (its networks are the peer's too)
    answered: bool = False  # a final response was sent to the INVITE
    confirmed: bool = False  # the ACK came (false again while a re-INVITE awaits its ACK)
    established: bool = False  # the first ACK came: media may flow
    cancelled: bool = False
    awaiting_answer: bool = False  # INVITE without SDP: our offer went in the 200, the answer comes in the ACK
    ended: asyncio.Event = field(default_factory=asyncio.Event)
    bye_from_us: bool = False
    sdp_version: int = 1


class SipCallManager:
    """Every live SIP call of the server; created and closed by the app's lifespan (`start`/`aclose`)."""

    def __init__(self, res: Resources) -> None:
        self.res = res
        settings = res.settings
        address = settings.sip_address
        assert address is not None, "SIP is off in the settings"
        self.host, port = address
        self.public_host = settings.sip_public_host or (self.host if self.host not in ("0.0.0.0", "::") else None)
        transports = {t.strip() for t in settings.sip_transports.split(",") if t.strip()}
        rejections = RejectionLog(count=res.metrics.sip_rejected.inc)
        limits = EndpointLimits(settings.sip_t1_ms / 1000.0, float(settings.sip_tcp_idle_s),
                                settings.sip_tcp_max_connections, settings.sip_tcp_max_per_source)
        self.endpoint = SipEndpoint(self, self.host, port, transports, rejections, limits)
        self.invites = guard.InviteLimiter(settings.sip_invite_rate, settings.sip_invite_burst)
        self.media_budget = guard.MediaBudget()
        self.trunks: list[Trunk] = parse_trunks(settings.sip_trunks)
        self.digest = {t.name: DigestServer(settings.sip_realm, t.algorithms) for t in self.trunks if t.username}
        self.lines = LineDirectory(res.db, res.keys)
        self.ports = PortPool(*settings.rtp_port_range)
        self.max_calls = settings.sip_max_calls
        self.media_timeout_s = float(settings.sip_media_timeout_s)
        self.ring_s = settings.sip_ring_ms / 1000.0
        self.calls: dict[str, SipCall] = {}
        self._setups: set[asyncio.Task[None]] = set()
        self._admitting: dict[str, tuple[str, Flow]] = {}  # Call-ID → INVITE branch and flow, while admitted
        self._cancelled: set[str] = set()  # Call-IDs CANCELled during admission
        self._clock: asyncio.Task[None] | None = None
        self.metrics = res.metrics
        self.dialer = OutboundDialer(self)

    # ------------------------------------------------------------------------------------------- lifetime

    async def start(self) -> None:
        """Bind the listener and start the media clock.

        Raises:
            OSError: When the SIP address cannot be bound.
        """
        await self.endpoint.start()
        self._clock = asyncio.create_task(run_media_clock(self._media_due, self.hang_up, self.media_timeout_s),
                                          name="sip-media-clock")
        transports = ",".join(sorted(self.endpoint.transports))
        log.info("sip: listening on %s:%d (%s)", self.host, self.endpoint.port, transports)

    async def aclose(self) -> None:
        """Hang up every call (BYE), stop dialling, stop the listener and the media clock."""
        await cancel_and_wait(*self._setups, timeout=3.0)
        for outbound in self.dialer.calls.values():
            outbound.hang_up.set()
        for call in list(self.calls.values()):
            self._end(call, send_bye=call.confirmed)
        runners = [c.runner for c in self.calls.values() if c.runner is not None]
        if runners:
            await asyncio.wait(runners, timeout=10.0)  # each records its last turn and sends its BYE
            await cancel_and_wait(*runners, timeout=3.0)
        await self.dialer.aclose()
        if self._clock is not None:
            await cancel_and_wait(self._clock, timeout=2.0)
        await self.endpoint.aclose()

    @property
    def port(self) -> int:
        return self.endpoint.port

    @property
    def busy(self) -> bool:
        """Whether the call cap is reached: calls being admitted, ringing, answered but not acknowledged, live,
        and outbound calls being dialled all count."""
        return len(self._setups) + len(self.calls) + self.dialer.dialling >= self.max_calls

    # ----------------------------------------------------------------------------------------- requests

    def handle_request(self, request: Request, flow: Flow) -> None:
        """A new request (retransmissions were absorbed by the endpoint)."""
        method = request.method
        call = self.calls.get(request.call_id)
        in_dialog = request.to.tag is not None
        if method == "INVITE" and not in_dialog and not self._within_rate(request, flow):
            return
        refusal = d.early_refusal(request) if method not in ("ACK", "CANCEL") else None
        if refusal is not None:  # §8.2 checks before any method logic
            self._reply(request, flow, refusal.status, refusal.reason, extra=refusal.extra)  # no tag of a call: a
            # stranger must not learn it by sending a bad request with its Call-ID
            self.endpoint.rejections.reject(flow.addr[0], f"{method} {refusal.why} ({refusal.status})")
            return
        if method == "INVITE" and not in_dialog:
            if call is not None:  # same Call-ID, new branch without To tag: a forked/looped INVITE
                self._reply(request, flow, 482, "Loop Detected")
                return
            self._begin_invite(request, flow)
        elif method == "ACK":  # only ACKs that `ack_matches` passed get here (the endpoint asks first)
            if call is not None:
                self._on_ack(call, request)
        elif method == "CANCEL":
            self._on_cancel(request, flow, call)
        elif method == "OPTIONS":
            self._reply(request, flow, 200, "OK", extra=d.capabilities())
        elif method in ("BYE", "INFO", "INVITE"):
            status = self._dialog_status(call, request, flow)
            if status != 200 or call is None:
                self._reply(request, flow, status, "Forbidden" if status == 403 else "Call/Transaction Does Not Exist")
                self.endpoint.rejections.reject(flow.addr[0], f"{method} " + ("from an address that is not the "
                                                "dialog's peer (403)" if status == 403 else "for no dialog (481)"))
            elif method == "BYE":
                self._reply(request, flow, 200, "OK", call=call)
                log.info("sip: call %s hung up by the caller", _short(call.call_id))
                self._end(call, send_bye=False)
            elif method == "INFO":
                self._on_info(call, request, flow)
            else:
                self._on_reinvite(call, request, flow)
        elif method in d.KNOWN_UNSUPPORTED:
            self._reply(request, flow, 405, "Method Not Allowed", extra=d.capabilities())
            self.endpoint.rejections.reject(flow.addr[0], f"{method} (405)")
        else:
            self._reply(request, flow, 501, "Not Implemented", extra=d.capabilities())
            self.endpoint.rejections.reject(flow.addr[0], f"{method[:20]} (501)")

    def ack_matches(self, ack: Request, flow: Flow) -> bool:
        """Whether ``ack`` is in the dialog of a call (tags) and from its peer: only then may it confirm it."""
        return self._dialog_status(self.calls.get(ack.call_id), ack, flow) == 200

    def flow_in_use(self, flow: Flow) -> bool:
        """Whether a call, or an INVITE being admitted, would answer or send requests on ``flow``."""
        return any(c.flow is flow for c in self.calls.values()) or any(f is flow for _, f in self._admitting.values())

    def _dialog_status(self, call: SipCall | None, request: Request, flow: Flow) -> int:
        """200 when ``request`` may act on ``call``, 481 when it is not in its dialog, 403 when not from its peer."""
        if call is None:
            return 481
        return guard.dialog_status(request, flow.addr[0], call.dialog, flow_ip=call.flow.addr[0], trunk=call.trunk)

    def _within_rate(self, request: Request, flow: Flow) -> bool:
        """The source's INVITE rate (`guard.InviteLimiter`); False after answering 503 or dropping it."""
        verdict = self.invites.check(flow.addr[0], time.monotonic())
        if verdict.admission is guard.Admission.ADMIT:
            return True
        if verdict.first:  # one line per episode: the rest are only counted
            self.endpoint.rejections.reject(flow.addr[0], "INVITEs over the rate limit (503, then dropped)")
        else:
            self.endpoint.rejections.count(flow.addr[0])
        if verdict.admission is guard.Admission.REFUSE:
            self._reply(request, flow, 503, "Service Unavailable", extra=[("retry-after", str(verdict.retry_after))])
        return False

    def ack_timeout(self, call_id: str) -> None:
        """The caller never acknowledged our 200 OK (§13.3.1.4): end the call with a BYE."""
        call = self.calls.get(call_id)
        if call is not None and not call.confirmed:
            log.info("sip: call %s: no ACK for the 200 OK, hanging up", _short(call_id))
            self._end(call, send_bye=True)

    def _reply(self, request: Request, flow: Flow, status: int, reason: str, *, call: SipCall | None = None,
               extra: list[tuple[str, str]] | None = None, body: bytes = b"") -> None:
        tag = call.local_tag if call is not None else d.new_tag()
        response = d.response(request, status, reason, to_tag=tag, extra=extra, body=body)
        self.endpoint.respond(request, response, flow)

    def _reject(self, request: Request, flow: Flow, status: int, reason: str, why: str,
                extra: list[tuple[str, str]] | None = None) -> None:
        self.endpoint.rejections.reject(flow.addr[0], f"INVITE to {request.uri[:80]}: {why} ({status})")
        self._reply(request, flow, status, reason, extra=extra)

    # ------------------------------------------------------------------------------------ INVITE (UAS)

    def _begin_invite(self, request: Request, flow: Flow) -> None:
        self._reply(request, flow, 100, "Trying")
        if len(self._setups) >= MAX_SETUPS or self.busy:
            self._reject(request, flow, 503, "Service Unavailable", "too many calls", extra=[("retry-after", "30")])
            return
        self._admitting[request.call_id] = (request.vias[0].branch, flow)
        task = asyncio.create_task(self._admit(request, flow), name="sip-invite")
        self._setups.add(task)
        task.add_done_callback(self._setups.discard)

    async def _admit(self, request: Request, flow: Flow) -> None:
        try:
            await self._admit_inner(request, flow)
            if request.call_id in self._cancelled and request.call_id not in self.calls:
                self._reply(request, flow, 487, "Request Terminated")
        except Exception as exc:  # one line (rate-limited): an INVITE must not buy a traceback in the log
            self.endpoint.rejections.failure(flow.addr[0], f"INVITE {_short(request.call_id)}", exc)
            call = self.calls.get(request.call_id)
            if call is None or not call.answered:  # every INVITE gets a final answer
                self._reply(request, flow, 500, "Server Internal Error", call=call)
            if call is not None and not call.answered:
                self._end(call, send_bye=False)
        finally:
            self._admitting.pop(request.call_id, None)
            self._cancelled.discard(request.call_id)

    async def _admit_inner(self, request: Request, flow: Flow) -> None:
        trunk, refusal = admit_caller(self.trunks, self.digest, flow.addr[0], request.headers.get("authorization"))
        if refusal is not None:
            self._reject(request, flow, refusal.status, refusal.reason, refusal.why, extra=refusal.extra)
            return
        tag = d.new_tag()
        try:
            target = parse_uri(request.uri).user
            caller = d.caller_id(request, trusted=trunk is not None)
            dialog = d.Dialog.from_invite(request, tag)
        except SipParseError:
            self._reject(request, flow, 400, "Bad Request", "unparseable Request-URI, From or Contact")
            return
        line = await self.lines.lookup(target)
        if line is None:
            self._reject(request, flow, 404, "Not Found", "unknown user or extension")
            return
        if not line.admits_caller(caller):
            self._reject(request, flow, 403, "Forbidden", f"caller {caller[:32]!r} not on the line's allow-list")
            with contextlib.suppress(Exception):  # a refusal needs no audit row to stand; it is logged anyway
                await self.res.audit.record(AuditEvent("SIP INVITE", "denied", None, line.user_id,
                                                       f"caller={caller[:32]}", 403, flow.addr[0]))
            return
        negotiated: sdp.Negotiated | None = None
        if request.body:
            try:
                negotiated = sdp.negotiate(sdp.parse(request.body))
            except sdp.NoCommonCodec as exc:
                self._reject(request, flow, 488, "Not Acceptable Here", str(exc),
                             extra=[("warning", '305 soma "Incompatible media format"')])
                return
            except sdp.SdpError as exc:
                self._reject(request, flow, 400, "Bad Request", f"bad SDP ({exc})")
                return
        if request.call_id in self._cancelled:
            return  # CANCELled while we looked the line up: `_admit` answers 487
        port = self.ports.take()
        if port is None:
            self._reject(request, flow, 503, "Service Unavailable", "no free RTP port")
            return
        call = SipCall(request.call_id, tag, flow, request, dialog, port, trunk=trunk)
        self.calls[call.call_id] = call
        call.runner = asyncio.create_task(self._run(call, negotiated, line.principal()), name="sip-call")

    async def _run(self, call: SipCall, negotiated: sdp.Negotiated | None, principal: Any) -> None:
        """Set the call up, run its session until it ends, then release everything."""
        lifetime: SessionLifetime | None = None
        try:
            await self._open_media(call, negotiated)
            self._reply(call.invite, call.flow, 180, "Ringing", call=call)
            if self.ring_s > 0:
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(self.ring_s):
                        await call.ended.wait()  # a CANCEL (or shutdown) while ringing
            if call.ended.is_set():
                return
            avatar = await _avatar_for(self.res, principal)
            call.conversation = await open_conversation(self.res, principal, avatar, "sip", call.transport)
            lifetime = self._lifetime(call, call.conversation)
            if call.cancelled or call.ended.is_set():
                return
            # Audited before the call is answered: no conversation runs unrecorded (a failure refuses it, 503).
            conversation = call.conversation.context.conversation_id
            try:
                await self.res.audit.record(AuditEvent("SIP INVITE", "ok", principal.user_id, principal.user_id,
                                                       f"conversation_id={conversation}", 200, call.flow.addr[0]))
            except Exception as exc:
                raise ApiError(503, "audit_unavailable", "the call cannot be recorded") from exc
            self._reply(call.invite, call.flow, 200, "OK", call=call, extra=d.answer_headers(self._contact(call)),
                        body=self._local_sdp(call))
            call.answered = True
            codec = "offer in 200" if call.awaiting_answer or call.media is None else call.media.negotiated.codec
            log.info("sip: call %s answered for %s (%s)", _short(call.call_id), principal.username, codec)
            await self._converse(call, lifetime)
        except ApiError as exc:
            self._reject(call.invite, call.flow, 503, "Service Unavailable", exc.message[:80])
        except OSError as exc:
            self._reject(call.invite, call.flow, 503, "Service Unavailable", f"RTP port unusable ({exc.errno})")
        finally:
            await self._release(call, lifetime)

    def _lifetime(self, call: SipCall, conversation: Conversation) -> SessionLifetime:
        """The lifetime of the call's session; `_release` ends it (once the conversation is open, always)."""
        return SessionLifetime(conversation, call.transport, name=f"sip: call {_short(call.call_id)}")

    async def _converse(self, call: SipCall, lifetime: SessionLifetime) -> None:
        """Run the call's session until it ends or the call does (`_release` then ends the lifetime)."""
        lifetime.start("sip-session")
        lifetime.watch(call.ended.wait(), "sip-call-ended")
        await lifetime.wait()

    async def adopt(self, call_id: str, local_tag: str, flow: Flow, invite: Request, dialog: d.Dialog, port: int,
                    negotiated: sdp.Negotiated, principal: Principal, greeting: str,
                    trunk: Trunk | None = None) -> None:
        """Run an answered outbound call like an inbound one (the avatar speaks first: ``greeting`` is its cue);
        returns when it has ended and everything is released. Takes over ``port``. We sent the ACK, so the
        dialog is confirmed; requests of the far end must come from ``flow``'s address, the callee's Contact
        or ``trunk``'s networks."""
        call = SipCall(call_id, local_tag, flow, invite, dialog, port, trunk=trunk, answered=True, confirmed=True,
                       established=True)
        call.runner = asyncio.current_task()
        self.calls[call_id] = call
        lifetime: SessionLifetime | None = None
        try:
            await self._open_media(call, negotiated)
            avatar = await _avatar_for(self.res, principal)
            call.conversation = await open_conversation(self.res, principal, avatar, "sip", call.transport)
            lifetime = self._lifetime(call, call.conversation)
            call.transport.feed_text(greeting)
            if not call.ended.is_set():
                await self._converse(call, lifetime)
        except (ApiError, OSError) as exc:
            log.info("sip: outbound call %s could not start its session (%s); hanging up", _short(call_id), exc)
            self._end(call, send_bye=True)
        finally:
            await self._release(call, lifetime)

    def hang_up(self, call_id: str) -> bool:
        """End a live call from our side (BYE); False when there is no such call."""
        call = self.calls.get(call_id)
        if call is None:
            return False
        self._end(call, send_bye=True)
        return True

    def hang_up_user(self, user_id: uuid.UUID) -> int:
        """End every call of one user, in or out (their account is being erased); returns how many."""
        mine = [c for c in self.calls.values() if c.conversation and c.conversation.context.user_id == user_id]
        for call in mine:
            self._end(call, send_bye=True)
        for out in self.dialer.calls.values():
            if out.user.user_id == user_id:
                out.hang_up.set()
        return len(mine)

    def handle_response(self, response: Response, flow: Flow) -> None:
        """Responses to our requests: outbound INVITEs go to the dialer; BYE answers need nothing more."""
        self.dialer.on_response(response, flow)

    async def _open_media(self, call: SipCall, negotiated: sdp.Negotiated | None) -> None:
        if negotiated is None:  # no offer: we offer both codecs in the 200 and learn the answer from the ACK
            call.awaiting_answer = True
            negotiated = sdp.Negotiated("PCMU", 0, 101, (call.flow.addr[0], 0), "sendrecv")
        loop = asyncio.get_running_loop()
        stream = RtpStream(negotiated, call.transport, signaling_ip=call.flow.addr[0], on_dtmf=self._count_dtmf,
                           budget=self.media_budget)
        for attempt in range(BIND_ATTEMPTS):
            try:
                await loop.create_datagram_endpoint(lambda: stream, local_addr=(self.host, call.port))
                break
            except OSError as exc:
                # Another socket holds it (the range overlaps the kernel's ephemeral ports, which any outgoing
                # connection may take): try the next port of the range rather than refusing the call.
                if exc.errno != errno.EADDRINUSE or attempt == BIND_ATTEMPTS - 1:
                    raise
                busy, call.port = call.port, self.ports.take() or 0
                self.ports.give_back(busy)  # to the back of the queue: it is probably free again later
                if call.port == 0:
                    raise
        call.media = stream
        try:
            await loop.create_datagram_endpoint(lambda: RtcpSocket(stream), local_addr=(self.host, call.port + 1))
        except OSError as exc:  # RTCP is optional (RFC 3550 reports): a call without it still works
            log.debug("sip: call %s: no RTCP port (%s)", _short(call.call_id), exc)
        if call.awaiting_answer:
            stream.set_hold(True)  # nowhere to send yet

    async def _release(self, call: SipCall, lifetime: SessionLifetime | None) -> None:
        if call.cancelled and not call.answered:
            self._reply(call.invite, call.flow, 487, "Request Terminated", call=call)
            call.answered = True
        if lifetime is not None:  # ends the session (its turn in progress recorded) and the conversation
            await lifetime.end()
        else:
            call.transport.close()
        if call.media is not None:
            call.media.close()
        self.ports.give_back(call.port)
        self.endpoint.txns.forget_dialog(call.call_id)
        self.calls.pop(call.call_id, None)
        log.info("sip: call %s ended (%s)", _short(call.call_id), media_summary(call.media))

    def _end(self, call: SipCall, *, send_bye: bool) -> None:
        """Make ``call`` end (its runner releases everything); BYE the caller if we are the one hanging up."""
        if call.ended.is_set():
            return
        if send_bye and call.answered and not call.bye_from_us:
            call.bye_from_us = True
            self.endpoint.send_request(call.dialog.request("BYE", self._via(call), self._contact(call)), call.flow)
        call.ended.set()

    # ------------------------------------------------------------------------------- in-dialog requests

    def _on_ack(self, call: SipCall, ack: Request) -> None:
        call.confirmed = True
        if not call.established:  # the caller has confirmed the dialog: media may start (not before)
            call.established = True
            if call.media is not None:
                call.media.begin()
        if call.awaiting_answer and call.media is not None:
            call.awaiting_answer = False
            try:
                negotiated = sdp.negotiate(sdp.parse(ack.body))
            except sdp.SdpError as exc:  # an unusable answer: §13.2.2.4 says BYE
                log.info("sip: call %s: unusable SDP answer in the ACK (%s); hanging up", _short(call.call_id), exc)
                self._end(call, send_bye=True)
                return
            call.media.update(negotiated)

    def _on_cancel(self, request: Request, flow: Flow, call: SipCall | None) -> None:
        """§9.2: a CANCEL matches the INVITE's transaction (Call-ID and branch) and must come from its source."""
        branch = request.vias[0].branch
        admitting = self._admitting.get(request.call_id)
        invite = (call.invite.vias[0].branch, call.flow) if call is not None else admitting
        if invite is None or invite[0] != branch:
            self._reply(request, flow, 481, "Call/Transaction Does Not Exist")
            return
        if invite[1].addr[0] != flow.addr[0]:
            self._reply(request, flow, 403, "Forbidden")
            self.endpoint.rejections.reject(flow.addr[0], "CANCEL from an address that did not send the INVITE")
            return
        self._reply(request, flow, 200, "OK", call=call)
        if call is None:
            self._cancelled.add(request.call_id)  # `_admit_inner` stops at its next step and `_admit` answers 487
        elif not call.answered:
            call.cancelled = True
            call.ended.set()
        else:
            return  # too late: the call was answered (the caller hangs up with BYE)
        log.info("sip: call %s cancelled by the caller before it was answered", _short(request.call_id))

    def _on_info(self, call: SipCall, request: Request, flow: Flow) -> None:
        digit = d.info_digit(request)
        if digit is None:
            self._reply(request, flow, 415, "Unsupported Media Type", call=call,
                        extra=[("accept", "application/dtmf-relay, application/dtmf")])
            return
        self._reply(request, flow, 200, "OK", call=call)
        call.transport.feed_dtmf(digit)
        self._count_dtmf(digit)

    def _on_reinvite(self, call: SipCall, request: Request, flow: Flow) -> None:
        """Hold/resume or a codec/address change (RFC 3264 §8); no body: we offer again, the ACK answers."""
        if call.media is None or not call.confirmed:
            self._reply(request, flow, 491, "Request Pending", call=call)
            return
        contact = request.headers.get("contact")
        try:
            if contact:
                parse_name_addr(contact)  # validated before anything changes (`refresh_target` below)
        except SipParseError:
            self._reply(request, flow, 400, "Bad Contact", call=call)
            return
        if request.body:
            try:
                negotiated = sdp.negotiate(sdp.parse(request.body))
            except sdp.NoCommonCodec:
                self._reply(request, flow, 488, "Not Acceptable Here", call=call)
                return
            except sdp.SdpError:
                self._reply(request, flow, 400, "Bad Request", call=call)
                return
            call.media.update(negotiated)
        else:
            call.awaiting_answer = True
        call.dialog.refresh_target(request)
        call.sdp_version += 1
        self._reply(request, flow, 200, "OK", call=call, extra=d.answer_headers(self._contact(call)),
                    body=self._local_sdp(call))
        call.confirmed = False  # until this re-INVITE's ACK
        call.flow = flow
        log.info("sip: call %s re-INVITE: %s %s", _short(call.call_id), call.media.negotiated.codec,
                 "on hold" if call.media.hold else "active")

    # -------------------------------------------------------------------------------------------- media

    def _media_due(self) -> list[tuple[str, RtpStream]]:
        """The streams the media clock ticks: confirmed calls only (nothing is sent before the ACK: until then
        the SDP address is the word of a caller who may not even exist)."""
        return [(c.call_id, c.media) for c in self.calls.values()
                if c.media is not None and c.established and not c.ended.is_set()]

    def _count_dtmf(self, digit: str) -> None:
        log.info("sip: DTMF %s", digit)
        self.metrics.sip_dtmf.inc()

    # ---------------------------------------------------------------------------------------- addressing

    def _advertised(self, call: SipCall) -> str:
        return self.public_host or call.flow.local[0]

    def _contact(self, call: SipCall) -> str:
        host = self._advertised(call)
        host = f"[{host}]" if ":" in host else host
        return f"<sip:soma@{host}:{self.endpoint.port};transport={call.flow.transport}>"

    def _via(self, call: SipCall) -> str:
        host = self._advertised(call)
        return f"SIP/2.0/{call.flow.transport.upper()} {host}:{self.endpoint.port};branch={d.new_branch()};rport"

    def _local_sdp(self, call: SipCall) -> bytes:
        assert call.media is not None
        neg = call.media.negotiated
        codecs = [(neg.payload_type, neg.codec)] if not call.awaiting_answer else [(0, "PCMU"), (8, "PCMA")]
        dtmf = neg.dtmf_pt if not call.awaiting_answer else 101
        return sdp.build(self._advertised(call), call.port, session_id=call.port, version=call.sdp_version,
                         codecs=codecs, dtmf_pt=dtmf, direction=neg.direction)


async def _avatar_for(res: Any, principal: Any) -> Any:
    from voice_server.avatar.directory import avatars_for

    return (await avatars_for(principal, res.persona))[0]


def _short(call_id: str) -> str:
    """Call-IDs in logs are shortened: enough to correlate, not a full identifier of the caller's device."""
    return call_id[:12]


def new_call_id() -> str:
    """A Call-ID for requests we originate."""
    return secrets.token_hex(12)


__all__ = ["SipCall", "SipCallManager", "parse_name_addr"]
