"""The SIP listener: UDP and TCP sockets, framing, transactions, rejections of malformed input.

`SipEndpoint` moves bytes only. It parses each message (`voice_server.sip.message`), lets the transaction
table (`voice_server.sip.transactions`) absorb retransmissions and resend unacknowledged final responses, and
hands every new request to its `RequestHandler` (the call manager) together with a `Flow` to answer on. What
cannot be parsed is answered ``400`` when enough of it is readable to address a response, and dropped
otherwise; either way it is logged once (rate-limited per source, so a flood cannot fill the log).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol, cast

from pipeline.tasks import cancel_and_wait
from voice_server.sip.message import (
    MAX_MESSAGE_BYTES,
    Request,
    Response,
    SipParseError,
    frame_stream,
    parse,
)
from voice_server.sip.transactions import AckTimeout, Kind, Resend, ServerTransactions

log = logging.getLogger(__name__)

MAX_TCP_CONNECTIONS = 256
TCP_IDLE_S = 300.0
_BYE_RETRIES = (0.5, 1.0, 2.0, 4.0)  # Timer E-style spacing for the few requests we originate (BYE)


@dataclass(eq=False)
class Flow:
    """Where a request came from and how to answer it (the socket it arrived on, RFC 3261 §18.2.2 / RFC 3581).

    Attributes:
        transport: ``udp`` or ``tcp``.
        addr: The peer's source address (responses and our in-dialog requests go here: NAT-friendly).
        local: Our address as the peer reached it (for Via and Contact).
    """

    transport: str
    addr: tuple[str, int]
    local: tuple[str, int]
    _send: Callable[[bytes], None] = field(repr=False)
    closed: bool = False

    @property
    def reliable(self) -> bool:
        return self.transport == "tcp"

    def send(self, data: bytes) -> None:
        """Send bytes to the peer (dropped silently if the connection is gone)."""
        if not self.closed:
            self._send(data)


class RequestHandler(Protocol):
    """What the endpoint hands new requests to (the call manager)."""

    def handle_request(self, request: Request, flow: Flow) -> None: ...

    def handle_response(self, response: Response, flow: Flow) -> None: ...

    def ack_timeout(self, call_id: str) -> None: ...


class RejectionLog:
    """Logs each rejected message once, at most `burst` per source per `window_s`, then one summary line."""

    def __init__(self, *, burst: int = 10, window_s: float = 10.0, count: Callable[[], None] | None = None) -> None:
        self.burst, self.window_s = burst, window_s
        self._count = count
        self._seen: dict[str, tuple[float, int]] = {}
        self.total = 0

    def reject(self, source: str, what: str) -> None:
        """Count one rejection of something from ``source``; ``what`` must not contain secrets."""
        self.total += 1
        if self._count is not None:
            self._count()
        now = time.monotonic()
        start, count = self._seen.get(source, (now, 0))
        if now - start > self.window_s:
            if count > self.burst:
                log.warning("sip: %d more rejections from %s were not logged", count - self.burst, source)
            start, count = now, 0
        count += 1
        if len(self._seen) > 4096:
            self._seen.clear()
        self._seen[source] = (start, count)
        if count <= self.burst:
            log.info("sip: rejected %s from %s", what, source)


class SipEndpoint:
    """Owns the SIP sockets and the transaction timer. `start`, then `aclose` at shutdown.

    Args:
        handler: Receives new requests and ACK timeouts.
        host, port: Where to bind (UDP and/or TCP).
        transports: ``{"udp", "tcp"}`` or a subset.
    """

    def __init__(self, handler: RequestHandler, host: str, port: int, transports: set[str],
                 rejections: RejectionLog | None = None) -> None:  # fmt: skip
        self.handler = handler
        self.host, self.port, self.transports = host, port, transports
        self.txns = ServerTransactions()
        self.rejections = rejections or RejectionLog()
        self._udp: asyncio.DatagramTransport | None = None
        self._tcp: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._timer: asyncio.Task[None] | None = None
        self._wake = asyncio.Event()
        self._client: dict[str, tuple[bytes, Flow, int]] = {}  # branch → our request awaiting a response
        self.local: tuple[str, int] = (host, port)

    async def start(self) -> None:
        """Bind the sockets.

        Raises:
            OSError: When the address is in use or not ours.
        """
        loop = asyncio.get_running_loop()
        if "udp" in self.transports:
            udp, _ = await loop.create_datagram_endpoint(lambda: _UdpProtocol(self), local_addr=(self.host, self.port))
            self._udp = udp
            self.port = int(udp.get_extra_info("sockname")[1])  # port 0 (tests): the kernel's pick
        if "tcp" in self.transports:
            try:
                self._tcp = await asyncio.start_server(self._tcp_client, self.host, self.port, limit=MAX_MESSAGE_BYTES)
            except OSError:
                if self._udp is not None:
                    self._udp.close()
                raise
            if self._udp is None:
                self.port = int(self._tcp.sockets[0].getsockname()[1])
        self.local = (self.host, self.port)
        self._timer = asyncio.create_task(self._run_timers(), name="sip-timers")

    async def aclose(self) -> None:
        """Close the sockets and stop every task of the endpoint."""
        if self._tcp is not None:
            self._tcp.close()
        tasks = [t for t in (self._timer, *self._tasks) if t is not None]
        await cancel_and_wait(*tasks, timeout=3.0)
        if self._udp is not None:
            self._udp.close()

    # --------------------------------------------------------------------------------------- receiving

    def receive(self, data: bytes, flow: Flow) -> None:
        """One complete message from ``flow``."""
        if not data.strip():
            return  # CRLF keep-alive (RFC 5626)
        try:
            message = parse(data, stream=flow.reliable)
        except SipParseError as exc:
            self.rejections.reject(flow.addr[0], f"malformed message ({exc})")
            bad = _lenient_400(data, str(exc))
            if bad is not None:
                flow.send(bad)
            return
        if isinstance(message, Response):
            self._on_response(message)
            self.handler.handle_response(message, flow)
            return
        branch = message.vias[0].branch
        received = self.txns.receive(message.method, branch, message.call_id, flow.addr, time.monotonic(),
                                     reliable=flow.reliable)  # fmt: skip
        match received.kind:
            case Kind.RETRANSMISSION:
                if received.resend is not None:
                    flow.send(received.resend)
            case Kind.ACK_NON2XX | Kind.STRAY_ACK:
                pass
            case Kind.NEW | Kind.ACK_2XX:
                self.handler.handle_request(message, flow)
        self._wake.set()

    def respond(self, request: Request, response: Response, flow: Flow) -> None:
        """Send ``response`` and record it in the request's transaction (for retransmission/absorption)."""
        via = request.headers.all("via")
        if via and not flow.reliable:
            # RFC 3581: tell the peer where its request came from; we answer to that address.
            top = via[0]
            top = re.sub(r";rport(?=;|$)", f";rport={flow.addr[1]}", top)
            if ";received=" not in top:
                top += f";received={flow.addr[0]}"
            for i, (k, _v) in enumerate(response.headers.items):
                if k == "via":
                    response.headers.items[i] = ("via", top)
                    break
        data = response.serialize()
        flow.send(data)
        if request.method != "ACK":
            self.txns.respond(request.method, request.vias[0].branch, response.status, data, time.monotonic())
            self._wake.set()

    def send_request(self, request: Request, flow: Flow) -> None:
        """Send a request we originate (BYE), retransmitted over UDP until a response or four tries."""
        data = request.serialize()
        flow.send(data)
        if not flow.reliable:
            self._client[request.vias[0].branch] = (data, flow, 0)
            task = asyncio.create_task(self._retransmit(request.vias[0].branch), name="sip-client-retransmit")
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    def udp_flow(self, addr: tuple[str, int]) -> Flow | None:
        """A flow for requests we originate towards ``addr`` over our UDP socket (``None`` without UDP)."""
        udp = self._udp
        if udp is None:
            return None
        return Flow("udp", addr, self.local, lambda b: udp.sendto(b, addr))

    def _on_response(self, response: Response) -> None:
        vias = response.vias
        if vias:
            self._client.pop(vias[0].branch, None)

    async def _retransmit(self, branch: str) -> None:
        for delay in _BYE_RETRIES:
            await asyncio.sleep(delay)
            entry = self._client.get(branch)
            if entry is None:
                return
            entry[1].send(entry[0])
        self._client.pop(branch, None)

    async def _run_timers(self) -> None:
        """Transaction timers: resend final responses, report missing ACKs, forget old transactions."""
        while True:
            deadline = self.txns.next_deadline()
            self._wake.clear()
            delay = None if deadline is None else max(0.0, deadline - time.monotonic())
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(delay):
                    await self._wake.wait()
            for action in self.txns.tick(time.monotonic()):
                if isinstance(action, Resend):
                    if self._udp is not None:
                        self._udp.sendto(action.data, action.addr)
                elif isinstance(action, AckTimeout):
                    self.handler.ack_timeout(action.call_id)

    # -------------------------------------------------------------------------------------------- TCP

    async def _tcp_client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        if len(self._tasks) >= MAX_TCP_CONNECTIONS:
            writer.close()
            return
        if task is not None:
            self._tasks.add(task)
        peer = writer.get_extra_info("peername")
        local = writer.get_extra_info("sockname")
        flow = Flow("tcp", (str(peer[0]), int(peer[1])), (str(local[0]), int(local[1])), writer.write)
        buffer = bytearray()
        try:
            while True:
                async with asyncio.timeout(TCP_IDLE_S):
                    chunk = await reader.read(4096)
                if not chunk:
                    return
                buffer += chunk
                while True:
                    try:
                        message = frame_stream(buffer)
                    except SipParseError as exc:
                        self.rejections.reject(flow.addr[0], f"unframeable TCP stream ({exc})")
                        return  # framing is lost: the only safe thing is to close
                    if message is None:
                        break
                    try:
                        self.receive(message, flow)
                    except Exception:  # one bad message must not end the connection's other calls
                        log.exception("sip: failed to handle a message from %s", flow.addr[0])
        except (TimeoutError, ConnectionError):
            return
        finally:
            flow.closed = True
            writer.close()
            if task is not None:
                self._tasks.discard(task)


class _UdpProtocol(asyncio.DatagramProtocol):
    def __init__(self, endpoint: SipEndpoint) -> None:
        self.endpoint = endpoint
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's UDP transport does not subclass asyncio.DatagramTransport, but has its interface.
        self.transport = cast(asyncio.DatagramTransport, transport)

    def datagram_received(self, data: bytes, addr: tuple[str | object, ...]) -> None:
        udp = self.transport
        if udp is None:
            return
        source = (str(addr[0]), int(str(addr[1])))
        flow = Flow("udp", source, self.endpoint.local, lambda b: udp.sendto(b, source))
        try:
            self.endpoint.receive(data, flow)
        except Exception:  # one bad message must never take the listener down
            log.exception("sip: failed to handle a message from %s", source[0])

    def error_received(self, exc: Exception) -> None:
        log.debug("sip udp error: %s", exc)


def _lenient_400(data: bytes, reason: str) -> bytes | None:
    """A ``400`` for a request we could not parse, when its Via and the other addressing headers are readable."""
    try:
        text = data[:MAX_MESSAGE_BYTES].decode("utf-8", errors="strict")
    except UnicodeDecodeError:
        return None
    lines = text.replace("\r\n", "\n").split("\n")
    if not lines or lines[0].startswith("SIP/") or " SIP/2.0" not in lines[0] or lines[0].startswith("ACK "):
        return None
    keep = []
    for line in lines[1:60]:
        name = line.partition(":")[0].strip().lower()
        if name in ("via", "v", "from", "f", "to", "t", "call-id", "i", "cseq") and len(line) < 1024:
            keep.append(line.strip())
    if not any(k.lower().startswith(("via:", "v:")) for k in keep):
        return None
    phrase = re.sub(r"[^A-Za-z0-9 ,.()-]", "", reason)[:60] or "Bad Request"
    return ("\r\n".join([f"SIP/2.0 400 {phrase}", *keep, "Content-Length: 0"]) + "\r\n\r\n").encode()
