"""The SIP listener: UDP and TCP sockets, framing, transactions, rejections of malformed input.

`SipEndpoint` moves bytes only. It parses each message (`voice_server.sip.message`), lets the transaction
table (`voice_server.sip.transactions`) absorb retransmissions and resend unacknowledged final responses, and
hands every new request to its `RequestHandler` (the call manager) together with a `Flow` to answer on. What
cannot be parsed is answered ``400`` when enough of it is readable to address a response, and dropped
otherwise; either way it is logged once (rate-limited per source, so a flood cannot fill the log). An
unexpected error while handling a message is logged the same way, as one line: a datagram must never be able to
buy a traceback in the log.

TCP connections are bounded (`EndpointLimits`): per source address and in total, and a connection that has
not completed a message for ``tcp_idle_s`` is closed unless a dialog still uses it. At either cap the oldest
idle connection that carries no dialog is closed to make room, so idle connections can never lock new clients
out; only when every connection carries a dialog is a new one refused.
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
from voice_server.sip.transactions import T1, AckTimeout, Kind, Resend, ServerTransactions

log = logging.getLogger(__name__)

TRACEBACK_EVERY_S = 3600.0  # an unexpected error's traceback is logged at most this often (the rest: one line)


@dataclass(frozen=True, slots=True)
class EndpointLimits:
    """Timers and bounds of one listener (from the settings; the defaults are RFC 3261's and ours).

    Attributes:
        t1: Round-trip estimate T1 in seconds; Timer H (an unacknowledged final response) is 64·T1.
        tcp_idle_s: A TCP connection with no complete message for this long is closed (unless in a dialog).
        tcp_max_connections: TCP connections open at once, all sources together.
        tcp_max_per_source: TCP connections open at once from one IP address.
    """

    t1: float = T1
    tcp_idle_s: float = 30.0
    tcp_max_connections: int = 256
    tcp_max_per_source: int = 32

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

    def ack_matches(self, ack: Request, flow: Flow) -> bool:
        """Whether an ACK belongs to a dialog awaiting it (tags and source); asked before the transaction layer
        lets it stop the 2xx's retransmissions and Timer H."""
        ...

    def flow_in_use(self, flow: Flow) -> bool:
        """Whether a call (or one being set up) still needs ``flow``: its TCP connection must stay open."""
        ...


@dataclass(eq=False)
class _Connection:
    """One accepted TCP connection and when it was last useful."""

    flow: Flow
    task: asyncio.Task[None]
    active: float  # loop time it was opened or last completed a message


class RejectionLog:
    """Logs each rejected message once, at most `burst` per source and `total_burst` for all sources together
    per `window_s`, then summary lines: neither one noisy peer nor a flood from many (spoofed) addresses can
    fill the log. Every rejection is counted (``count``: the metric)."""

    def __init__(self, *, burst: int = 10, total_burst: int = 100, window_s: float = 10.0,
                 count: Callable[[], None] | None = None) -> None:
        self.burst, self.total_burst, self.window_s = burst, total_burst, window_s
        self._count = count
        self._seen: dict[str, tuple[float, int]] = {}
        self._all = (-window_s, 0, 0)  # this window of all sources: start, lines logged, lines not logged
        self._traceback_at = -TRACEBACK_EVERY_S
        self.total = 0

    def reject(self, source: str, what: str) -> None:
        """Count one rejection of something from ``source``; ``what`` must not contain secrets."""
        if self._admit(source):
            log.info("sip: rejected %s from %s", what, source)

    def count(self, source: str) -> None:
        """Count a rejection without logging it (the rest of an episode already logged once)."""
        self.total += 1
        if self._count is not None:
            self._count()

    def failure(self, source: str, what: str, exc: BaseException) -> None:
        """An unexpected error while handling ``what`` from ``source``: one line, rate-limited like rejections;
        the traceback only once per `TRACEBACK_EVERY_S` (enough to find the bug, too rare to flood the log)."""
        if not self._admit(source):
            return
        now = time.monotonic()
        trace = now - self._traceback_at >= TRACEBACK_EVERY_S
        if trace:
            self._traceback_at = now
        log.warning("sip: failed to handle %s from %s (%s: %s)", what, source, type(exc).__name__,
                    str(exc)[:120], exc_info=exc if trace else None)

    def _admit(self, source: str) -> bool:
        """Count one event from ``source``; whether it may still be logged in this window."""
        self.count(source)
        now = time.monotonic()
        start, count = self._seen.get(source, (now, 0))
        if now - start > self.window_s:
            if count > self.burst and self._line(now):
                log.warning("sip: %d more rejections from %s were not logged", count - self.burst, source)
            start, count = now, 0
        count += 1
        if len(self._seen) > 4096:
            self._seen.clear()
        self._seen[source] = (start, count)
        return count <= self.burst and self._line(now)

    def _line(self, now: float) -> bool:
        """Whether one more line fits this window's budget for all sources (else it is counted as not logged)."""
        start, logged, dropped = self._all
        if now - start > self.window_s:
            if dropped:
                log.warning("sip: %d more rejections (from all sources) were not logged", dropped)
            start, logged, dropped = now, 0, 0
        fits = logged < self.total_burst
        self._all = (start, logged + fits, dropped + (not fits))
        return fits


class SipEndpoint:
    """Owns the SIP sockets and the transaction timer. `start`, then `aclose` at shutdown.

    Args:
        handler: Receives new requests and ACK timeouts.
        host, port: Where to bind (UDP and/or TCP).
        transports: ``{"udp", "tcp"}`` or a subset.
    """

    def __init__(self, handler: RequestHandler, host: str, port: int, transports: set[str],
                 rejections: RejectionLog | None = None, limits: EndpointLimits | None = None) -> None:
        self.handler = handler
        self.host, self.port, self.transports = host, port, transports
        self.limits = limits or EndpointLimits()
        self.txns = ServerTransactions(t1=self.limits.t1)
        self.rejections = rejections or RejectionLog()
        self._udp: asyncio.DatagramTransport | None = None
        self._tcp: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()  # our requests' retransmissions
        self._connections: dict[asyncio.Task[None], _Connection] = {}
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
        tasks = [t for t in (self._timer, *self._tasks, *self._connections) if t is not None]
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
            self._on_response(message, flow)
            self.handler.handle_response(message, flow)
            return
        branch = message.vias[0].branch
        in_dialog = message.method != "ACK" or self.handler.ack_matches(message, flow)
        received = self.txns.receive(message.method, branch, message.call_id, flow.addr, time.monotonic(),
                                     reliable=flow.reliable, in_dialog=in_dialog)
        match received.kind:
            case Kind.RETRANSMISSION:
                if received.resend is not None:
                    flow.send(received.resend)
            case Kind.ACK_NON2XX:
                pass
            case Kind.STRAY_ACK:
                if not in_dialog:
                    self.rejections.reject(flow.addr[0], "ACK outside its dialog")
            case Kind.NEW | Kind.ACK_2XX:
                self.handler.handle_request(message, flow)
        self._wake.set()

    def receive_safely(self, data: bytes, flow: Flow) -> None:
        """`receive`, with any unexpected error logged as one rate-limited line instead of escaping."""
        try:
            self.receive(data, flow)
        except Exception as exc:  # one bad message must never take the listener or a connection down
            self.rejections.failure(flow.addr[0], "a message", exc)

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
            self.txns.respond(request.method, request.vias[0].branch, response.status, data, time.monotonic(),
                              source=flow.addr[0])
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

    def _on_response(self, response: Response, flow: Flow) -> None:
        """A response stops our request's retransmissions, if it comes from where the request went."""
        entry = self._client.get(response.vias[0].branch)
        if entry is not None and entry[1].addr[0] == flow.addr[0]:
            del self._client[response.vias[0].branch]

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
        peer, local = writer.get_extra_info("peername"), writer.get_extra_info("sockname")
        if task is None or peer is None or local is None:
            writer.close()
            return
        source = str(peer[0])
        if not self._make_room(source):
            self.rejections.reject(source, "a TCP connection (every connection carries a call)")
            writer.close()
            return
        flow = Flow("tcp", (source, int(peer[1])), (str(local[0]), int(local[1])), writer.write)
        loop = asyncio.get_running_loop()
        connection = _Connection(flow, task, loop.time())
        self._connections[task] = connection
        try:
            await self._serve_tcp(reader, connection)
        except (TimeoutError, ConnectionError):
            return
        finally:
            flow.closed = True
            writer.close()
            self._connections.pop(task, None)

    async def _serve_tcp(self, reader: asyncio.StreamReader, connection: _Connection) -> None:
        """Read, frame and handle messages until EOF, lost framing, or idleness outside any dialog."""
        loop = asyncio.get_running_loop()
        flow, idle_s = connection.flow, self.limits.tcp_idle_s
        buffer = bytearray()  # bounded: `frame_stream` refuses a head or message over MAX_MESSAGE_BYTES
        while True:
            try:
                async with asyncio.timeout_at(connection.active + idle_s):
                    chunk = await reader.read(4096)
            except TimeoutError:
                if self.handler.flow_in_use(flow):  # a call's BYE may still have to travel on it
                    connection.active = loop.time()
                    continue
                log.debug("sip: closing TCP connection from %s: no complete message for %.0f s", flow.addr[0],
                          idle_s)
                return
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
                connection.active = loop.time()  # bytes alone do not count: a trickle must not hold it open
                self.receive_safely(message, flow)

    def _make_room(self, source: str) -> bool:
        """Whether a new connection from ``source`` may stay, closing an idle one at a cap to make room."""
        limits = self.limits
        mine = [c for c in self._connections.values() if c.flow.addr[0] == source]
        if len(mine) >= limits.tcp_max_per_source:
            return self._evict_idlest(mine)
        if len(self._connections) >= limits.tcp_max_connections:
            return self._evict_idlest(list(self._connections.values()))
        return True

    def _evict_idlest(self, candidates: list[_Connection]) -> bool:
        """Close the connection of ``candidates`` idle the longest that carries no dialog; False if none."""
        victim = next((c for c in sorted(candidates, key=lambda c: c.active) if not self.handler.flow_in_use(c.flow)),
                      None)
        if victim is None:
            return False
        self._connections.pop(victim.task, None)
        victim.flow.closed = True
        victim.task.cancel()  # its `finally` closes the socket
        log.debug("sip: closed an idle TCP connection from %s to make room", victim.flow.addr[0])
        return True

    @property
    def tcp_connections(self) -> int:
        """TCP connections open now."""
        return len(self._connections)


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
        self.endpoint.receive_safely(data, flow)

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
