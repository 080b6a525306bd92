"""A minimal SIP phone (UAC over UDP) with G.711 media: the caller in the acceptance tests and the benchmark.

It places a call (answering digest challenges), sends 8 kHz audio paced at 20 ms (silence between
utterances, like a phone), sends RFC 4733 DTMF, records every RTP packet it receives with its arrival time,
and hangs up. It uses the same sans-I/O pieces as the server (message, SDP, digest, RTP), so the tests
exercise the wire formats from both ends. Not a general-purpose user agent: one call per phone.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import secrets
import time
from dataclasses import dataclass, field
from typing import cast

import numpy as np

from pipeline.frames import Pcm
from voice_server.sip import sdp
from voice_server.sip.auth import client_authorization
from voice_server.sip.dialog import new_branch, new_tag
from voice_server.sip.message import Headers, Request, Response, SipParseError, parse, parse_name_addr
from voice_server.sip.rtp import DTMF_EVENTS, FRAME_SAMPLES, G711, RtpSender, parse_packet

MAX_RECORDED_PACKETS = 50 * 600  # ten minutes of received RTP
_NO_AUDIO = np.zeros(0, np.int16)
Addr = tuple[str, int]


@dataclass(slots=True)
class Heard:
    """One received RTP packet: arrival (``time.monotonic``), header fields and decoded audio."""

    at: float
    seq: int
    timestamp: int
    marker: bool
    pcm: Pcm


@dataclass(slots=True)
class CallResult:
    """How an INVITE ended: the final status and the time from INVITE to that response."""

    status: int
    setup_s: float
    responses: list[int] = field(default_factory=list)


class _Udp(asyncio.DatagramProtocol):
    def __init__(self, on_data: collections.abc.Callable[[bytes, Addr], None]) -> None:
        self.on_data = on_data
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.DatagramTransport, transport)

    def datagram_received(self, data: bytes, addr: tuple[str | object, ...]) -> None:
        self.on_data(data, (str(addr[0]), int(str(addr[1]))))


class SipPhone:
    """One phone, one call. ``async with SipPhone(server) as phone: await phone.call("alice")``.

    Args:
        server: The SIP server's ``(host, port)``.
        codec: ``PCMU`` or ``PCMA`` (offered alone, with telephone-event 101), or ``None`` to offer nothing in
            the INVITE (the server then offers in its 200 and we answer in the ACK).
        send_silence: Send silent packets between utterances (a phone does; False tests the media timeout).
        caller: The From user (caller ID).
        record_audio: Decode and keep received audio; False keeps only arrival times and sequence numbers
            (many idle calls in one benchmark process).
    """

    def __init__(self, server: Addr, *, codec: str | None = "PCMU", send_silence: bool = True,
                 caller: str = "phone", host: str = "127.0.0.1", record_audio: bool = True) -> None:
        self.server, self.codec_name, self.send_silence = server, codec, send_silence
        self.caller, self.host, self.record_audio = caller, host, record_audio
        self.last_voiced_sent = 0.0  # monotonic time the last frame with speech in it was sent
        self.call_id = secrets.token_hex(10) + "@soma-phone"
        self.tag = new_tag()
        self.cseq = 1
        self.heard: list[Heard] = []
        self.requests: list[Request] = []  # requests the server sent us (BYE)
        self._responses: asyncio.Queue[Response] = asyncio.Queue(64)
        self._sip: _Udp | None = None
        self._rtp: _Udp | None = None
        self._outgoing: collections.deque[Pcm] = collections.deque(maxlen=50 * 120)
        self._sender: asyncio.Task[None] | None = None
        self._rtp_out = RtpSender.new()
        self.codec: G711 | None = None
        self.payload_type = 0
        self.remote_rtp: Addr | None = None
        self.to_header = ""
        self.remote_target = ""
        self.hung_up = asyncio.Event()
        self.sent_frames = 0
        self._sdp_version = 1

    async def __aenter__(self) -> SipPhone:
        loop = asyncio.get_running_loop()
        _, self._sip = await loop.create_datagram_endpoint(lambda: _Udp(self._on_sip), local_addr=(self.host, 0))
        _, self._rtp = await loop.create_datagram_endpoint(lambda: _Udp(self._on_rtp), local_addr=(self.host, 0))
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._sender is not None:
            self._sender.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._sender
        for proto in (self._sip, self._rtp):
            if proto is not None and proto.transport is not None:
                proto.transport.close()

    @property
    def sip_port(self) -> int:
        assert self._sip is not None and self._sip.transport is not None
        return int(self._sip.transport.get_extra_info("sockname")[1])

    @property
    def rtp_port(self) -> int:
        assert self._rtp is not None and self._rtp.transport is not None
        return int(self._rtp.transport.get_extra_info("sockname")[1])

    # ------------------------------------------------------------------------------------------ signaling

    async def call(self, user: str, *, username: str | None = None, password: str | None = None,
                   wait_s: float = 30.0, cancel_after: float | None = None) -> CallResult:
        """INVITE ``sip:user@server`` and wait for the final response (ACKing it; answering one 401/407).

        Args:
            cancel_after: Send CANCEL this many seconds after the first provisional response.
        """
        uri = f"sip:{user}@{self.server[0]}:{self.server[1]}"
        start = time.monotonic()
        result = CallResult(0, 0.0)
        authorization: tuple[str, str] | None = None
        async with asyncio.timeout(wait_s):
            while True:
                invite = self._request("INVITE", uri, body=self._offer(), auth=authorization)
                self._send(invite)
                cancelled = False
                resend = 0.5  # Timer A: over UDP the INVITE is resent (T1, doubling) until something answers
                while True:
                    if not result.responses and resend < 8:
                        try:
                            resp = await asyncio.wait_for(self._responses.get(), resend)
                        except TimeoutError:
                            self._send(invite)
                            resend *= 2
                            continue
                    else:
                        resp = await self._responses.get()
                    if resp.cseq.method != "INVITE" or resp.cseq.number != self.cseq:
                        continue
                    result.responses.append(resp.status)
                    if resp.status < 200:
                        if cancel_after is not None and not cancelled and resp.status > 100:
                            cancelled = True
                            await asyncio.sleep(cancel_after)
                            self._send(self._cancel(invite))
                        continue
                    break
                result.status, result.setup_s = resp.status, time.monotonic() - start
                if resp.status >= 300:
                    self._send(self._ack(invite, resp))
                    if resp.status in (401, 407) and authorization is None and username and password:
                        name = "www-authenticate" if resp.status == 401 else "proxy-authenticate"
                        challenges = resp.headers.all(name)
                        header = "authorization" if resp.status == 401 else "proxy-authorization"
                        authorization = (header, client_authorization(challenges[0], username=username,
                                                                      password=password, method="INVITE", uri=uri))
                        self.cseq += 1
                        continue
                    return result
                self.to_header = resp.headers.get("to") or ""
                contact = resp.headers.get("contact")
                self.remote_target = parse_name_addr(contact).uri if contact else uri
                answer = sdp.negotiate(sdp.parse(resp.body))
                ack_body = b""
                if self.codec_name is None:  # the server offered: answer with its first codec
                    ack_body = sdp.build(self.host, self.rtp_port, session_id=1, version=1,
                                         codecs=[(answer.payload_type, answer.codec)], dtmf_pt=answer.dtmf_pt)
                self._start_media(answer)
                self._send(self._ack(invite, resp, body=ack_body))
                return result

    async def bye(self, wait_s: float = 5.0) -> int:
        """Hang up; returns the BYE's final status."""
        self.cseq += 1
        request = self._request("BYE", self.remote_target, to=self.to_header)
        self._send(request)
        status = await self._final("BYE", wait_s)
        self.remote_rtp = None
        return status

    async def info_dtmf(self, digit: str, wait_s: float = 5.0) -> int:
        """Send one key press as SIP INFO (``application/dtmf-relay``); returns the final status."""
        self.cseq += 1
        body = f"Signal={digit}\r\nDuration=160\r\n".encode()
        request = self._request("INFO", self.remote_target, to=self.to_header, body=body)
        request.headers.set("content-type", "application/dtmf-relay")
        self._send(request)
        return await self._final("INFO", wait_s)

    async def reinvite(self, direction: str = "sendrecv", wait_s: float = 5.0, *, codec: str | None = None) -> int:
        """Re-INVITE with our stream set to ``direction`` (``sendonly`` = hold, ``sendrecv`` = resume), or
        switching to ``codec``; the phone sends and decodes with the new codec once the 200 arrives."""
        assert self.codec is not None
        self.cseq += 1
        self._sdp_version += 1
        name = codec or self.codec.codec
        pt = sdp.CODECS[name]
        body = sdp.build(self.host, self.rtp_port, session_id=1, version=self._sdp_version,
                         codecs=[(pt, name)], dtmf_pt=101, direction=direction)
        invite = self._request("INVITE", self.remote_target, to=self.to_header, body=body)
        self._send(invite)
        async with asyncio.timeout(wait_s):
            while True:
                resp = await self._responses.get()
                if resp.cseq.method == "INVITE" and resp.cseq.number == self.cseq and resp.status >= 200:
                    self._send(self._ack(invite, resp))
                    if resp.status < 300 and name != self.codec.codec:
                        self.codec, self.payload_type = G711(name), pt
                    return resp.status

    async def _final(self, method: str, wait_s: float) -> int:
        async with asyncio.timeout(wait_s):
            while True:
                resp = await self._responses.get()
                if resp.cseq.method == method and resp.cseq.number == self.cseq and resp.status >= 200:
                    return resp.status

    async def options(self, wait_s: float = 5.0) -> Response:
        """Send OPTIONS outside a dialog; returns the response."""
        uri = f"sip:{self.server[0]}:{self.server[1]}"
        self._send(self._request("OPTIONS", uri))
        async with asyncio.timeout(wait_s):
            while True:
                resp = await self._responses.get()
                if resp.cseq.method == "OPTIONS":
                    return resp

    # ---------------------------------------------------------------------------------------------- media

    def say(self, pcm: Pcm) -> None:
        """Queue 8 kHz int16 audio to send (after what is already queued)."""
        for i in range(0, len(pcm), FRAME_SAMPLES):
            frame = pcm[i : i + FRAME_SAMPLES]
            self._outgoing.append(np.pad(frame, (0, FRAME_SAMPLES - len(frame))))

    def send_dtmf(self, digit: str, *, duration_ms: int = 100, redundancy: int = 3) -> None:
        """Send one RFC 4733 key press now (start, updates and ``redundancy`` end packets)."""
        assert self._rtp is not None and self._rtp.transport is not None and self.remote_rtp is not None
        event = DTMF_EVENTS.index(digit)
        ts = self._rtp_out.timestamp
        steps = max(1, duration_ms // 20)
        for i in range(steps):
            dur = (i + 1) * FRAME_SAMPLES
            payload = bytes([event, 10]) + dur.to_bytes(2, "big")
            self._rtp.transport.sendto(self._rtp_out.event(101, payload, ts, marker=i == 0), self.remote_rtp)
        end = bytes([event, 0x80 | 10]) + (steps * FRAME_SAMPLES).to_bytes(2, "big")
        for _ in range(redundancy):
            self._rtp.transport.sendto(self._rtp_out.event(101, end, ts, marker=False), self.remote_rtp)

    def heard_audio(self, since: float = 0.0) -> Pcm:
        """The received audio (arrival after ``since``) as one array."""
        chunks = [h.pcm for h in self.heard if h.at >= since]
        return np.concatenate(chunks) if chunks else np.zeros(0, np.int16)

    @property
    def queued_s(self) -> float:
        """Seconds of audio still waiting to be sent."""
        return len(self._outgoing) * 0.02

    def _start_media(self, answer: sdp.Negotiated) -> None:
        self.codec = G711(answer.codec)
        self.payload_type = answer.payload_type
        self.remote_rtp = answer.remote
        self._sender = asyncio.create_task(self._send_media(), name="phone-rtp")

    async def _send_media(self) -> None:
        assert self._rtp is not None and self._rtp.transport is not None and self.codec is not None
        loop = asyncio.get_running_loop()
        due = loop.time()
        while self.remote_rtp is not None:
            if self._outgoing:
                pcm = self._outgoing.popleft()
                packet = self._rtp_out.packet(self.payload_type, self.codec.encode(pcm), voiced=True)
                self._rtp.transport.sendto(packet, self.remote_rtp)
                self.sent_frames += 1
                if int(np.abs(pcm.astype(np.int32)).max(initial=0)) > 300:
                    self.last_voiced_sent = time.monotonic()
            elif self.send_silence:
                packet = self._rtp_out.packet(self.payload_type, self.codec.silence, voiced=False)
                self._rtp.transport.sendto(packet, self.remote_rtp)
            else:
                self._rtp_out.skip()
            due += 0.02
            await asyncio.sleep(max(0.0, due - loop.time()))

    # -------------------------------------------------------------------------------------------- private

    def _offer(self) -> bytes:
        if self.codec_name is None:
            return b""
        pt = sdp.CODECS.get(self.codec_name, 18)  # an unknown name offers G.729 (18): the 488 test
        name = self.codec_name if self.codec_name in sdp.CODECS else "G729"
        return sdp.build(self.host, self.rtp_port, session_id=1, version=1, codecs=[(pt, name)], dtmf_pt=101)

    def _request(self, method: str, uri: str, *, body: bytes = b"", to: str | None = None,
                 auth: tuple[str, str] | None = None, cseq: int | None = None,
                 branch: str | None = None) -> Request:
        headers = Headers()
        headers.items += [
            ("via", f"SIP/2.0/UDP {self.host}:{self.sip_port};branch={branch or new_branch()};rport"),
            ("max-forwards", "70"),
            ("from", f"<sip:{self.caller}@{self.host}>;tag={self.tag}"),
            ("to", to or f"<{uri.split(';')[0]}>"),
            ("call-id", self.call_id),
            ("cseq", f"{cseq or self.cseq} {method}"),
            ("contact", f"<sip:{self.caller}@{self.host}:{self.sip_port}>"),
        ]
        if auth is not None:
            headers.items.append(auth)
        if body:
            headers.items.append(("content-type", "application/sdp"))
        return Request(headers, body, method=method, uri=uri)

    def _ack(self, invite: Request, resp: Response, body: bytes = b"") -> Request:
        # A failure's ACK reuses the INVITE's branch (same transaction); a 2xx's ACK is a new transaction.
        branch = invite.vias[0].branch if resp.status >= 300 else None
        ack = self._request("ACK", invite.uri if resp.status >= 300 else self.remote_target, body=body,
                            to=resp.headers.get("to"), cseq=self.cseq, branch=branch)
        return ack

    def _cancel(self, invite: Request) -> Request:
        return self._request("CANCEL", invite.uri, cseq=self.cseq, branch=invite.vias[0].branch)

    def _send(self, request: Request) -> None:
        assert self._sip is not None and self._sip.transport is not None
        self._sip.transport.sendto(request.serialize(), self.server)

    def _on_sip(self, data: bytes, addr: Addr) -> None:
        try:
            message = parse(data)
        except SipParseError:
            return
        if isinstance(message, Response):
            with contextlib.suppress(asyncio.QueueFull):
                self._responses.put_nowait(message)
            return
        self.requests.append(message)
        if message.method in ("BYE", "OPTIONS", "INFO"):
            response = Response(Headers([(k, v) for k, v in message.headers if k in ("via", "from", "to", "call-id",
                                                                                     "cseq")]),
                                b"", status=200, reason="OK")
            assert self._sip is not None and self._sip.transport is not None
            self._sip.transport.sendto(response.serialize(), addr)
            if message.method == "BYE":
                self.remote_rtp = None
                self.hung_up.set()

    def _on_rtp(self, data: bytes, addr: Addr) -> None:
        if self.codec is None or len(self.heard) >= MAX_RECORDED_PACKETS:
            return
        try:
            packet = parse_packet(data)
        except ValueError:
            return
        if packet.payload_type != self.payload_type:
            return
        pcm = self.codec.decode(packet.payload) if self.record_audio else _NO_AUDIO
        self.heard.append(Heard(time.monotonic(), packet.sequence_number, packet.timestamp, bool(packet.marker), pcm))
