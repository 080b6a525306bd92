"""Regressions for an attacker's fuzzing run against `soma serve`'s SIP listener, each reproduced against a real
server: a stranger ending or steering a live call with its Call-ID alone (in and out), RTP aimed at whatever
address an unacknowledged SDP names, the call cap overrun by never-ACKed INVITEs, INVITE floods, idle TCP
connections locking TCP clients out, and Unicode digits buying a traceback (and no answer) per datagram.

Strangers, floods and victims live on other loopback addresses (127.0.0.2, 127.0.0.3, 127.0.1.x, 127.0.2.x):
Linux routes all of 127/8 to the loopback interface, so each is a distinct source to the server.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import secrets
import shutil
import time
from collections.abc import Iterator
from typing import cast

import pytest

from tests.eventually import eventually_async
from tests.server_api import user_client
from tests.sip.conftest import SipServer, free_udp_port, start_sip_server
from tests.sip_phone import SipPhone
from voice_server.sip import dialog as d
from voice_server.sip import sdp
from voice_server.sip.message import Request, Response, SipParseError, parse, response_to

pytestmark = [pytest.mark.models, pytest.mark.slow]

MAX_CALLS = 4
T1_MS = 100  # Timer H (an unacknowledged 200 OK) = 64·T1 = 6.4 s
INVITE_BURST = 10
TCP_PER_SOURCE, TCP_TOTAL, TCP_IDLE_S = 8, 24, 2
STRANGER, VICTIM = "127.0.0.2", "127.0.0.3"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SipServer]:
    """The ci models (so calls are answered 200), a small call cap, short T1, tight TCP limits and INVITE rate;
    one trunk: callers from 127.0.0.1 and 127.0.1.0/24, outbound calls through a proxy the tests play."""
    proxy = free_udp_port()
    trunk = {"name": "loop", "allow": ["127.0.0.1/32", "127.0.1.0/24"], "proxy": f"127.0.0.1:{proxy}"}
    srv = start_sip_server(
        tmp_path_factory.mktemp("sip-abuse"), models=True, outbound_port=proxy, SOMA_SIP_TRUNKS=json.dumps([trunk]),
        SOMA_SIP_MAX_CALLS=str(MAX_CALLS), SOMA_SIP_T1_MS=str(T1_MS), SOMA_SIP_RING_MS="1000",
        SOMA_SIP_INVITE_RATE="5", SOMA_SIP_INVITE_BURST=str(INVITE_BURST), SOMA_SIP_TCP_IDLE_S=str(TCP_IDLE_S),
        SOMA_SIP_TCP_MAX_CONNECTIONS=str(TCP_TOTAL), SOMA_SIP_TCP_MAX_PER_SOURCE=str(TCP_PER_SOURCE),
    )
    yield srv
    srv.srv.stop()
    shutil.rmtree(srv.srv.data_dir, ignore_errors=True)


class Peer(asyncio.DatagramProtocol):
    """A raw UDP socket on one loopback address: sends what a test writes, keeps every SIP message it gets and
    counts every datagram (for a victim's RTP)."""

    def __init__(self) -> None:
        self.transport: asyncio.DatagramTransport | None = None
        self.messages: list[Request | Response] = []
        self.raw: list[bytes] = []  # every datagram, parseable or not (a 400 may echo an unparseable CSeq)
        self.datagrams = 0

    @classmethod
    async def bind(cls, host: str = "127.0.0.1", port: int = 0) -> Peer:
        _, peer = await asyncio.get_running_loop().create_datagram_endpoint(cls, local_addr=(host, port))
        return peer

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.DatagramTransport, transport)

    def datagram_received(self, data: bytes, addr: tuple[str | object, ...]) -> None:
        self.datagrams += 1
        if len(self.raw) < 10_000:
            self.raw.append(data)
        with contextlib.suppress(SipParseError):
            self.messages.append(parse(data))

    @property
    def addr(self) -> tuple[str, int]:
        assert self.transport is not None
        host, port = self.transport.get_extra_info("sockname")[:2]
        return str(host), int(port)

    def send(self, data: bytes, to: tuple[str, int]) -> None:
        assert self.transport is not None
        self.transport.sendto(data, to)

    def responses(self, call_id: str, method: str = "INVITE") -> list[Response]:
        return [m for m in self.messages if isinstance(m, Response) and m.call_id == call_id and
                m.cseq.method == method]

    def statuses(self, call_id: str, method: str = "INVITE") -> list[int]:
        return [r.status for r in self.responses(call_id, method)]

    def requests(self, method: str) -> list[Request]:
        return [m for m in self.messages if isinstance(m, Request) and m.method == method]

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()


def sip(method: str, peer: Peer, *, uri: str, call_id: str, from_tag: str, to: str, cseq: int = 1,
        branch: str | None = None, body: bytes = b"", content_type: str = "application/sdp") -> bytes:
    """A request as a raw UAC at ``peer`` writes it."""
    host, port = peer.addr
    lines = [f"{method} {uri} SIP/2.0", f"Via: SIP/2.0/UDP {host}:{port};branch={branch or d.new_branch()};rport",
             "Max-Forwards: 70", f"From: <sip:caller@{host}>;tag={from_tag}", f"To: {to}", f"Call-ID: {call_id}",
             f"CSeq: {cseq} {method}", f"Contact: <sip:caller@{host}:{port}>"]
    if body:
        lines.append(f"Content-Type: {content_type}")
    return ("\r\n".join([*lines, f"Content-Length: {len(body)}"]) + "\r\n\r\n").encode() + body


def invite(peer: Peer, server: SipServer, user: str, call_id: str, *, media: tuple[str, int],
           branch: str | None = None) -> bytes:
    """An INVITE from ``peer`` whose SDP asks for RTP at ``media``."""
    offer = sdp.build(media[0], media[1], session_id=1, version=1, codecs=[(0, "PCMU")], dtmf_pt=101)
    return sip("INVITE", peer, uri=f"sip:{user}@127.0.0.1:{server.sip_port}", call_id=call_id, from_tag="t" + call_id,
               to=f"<sip:{user}@127.0.0.1>", branch=branch, body=offer)


async def all_answered(sent: dict[tuple[Peer, str], bytes], server: SipServer, timeout_s: float = 20.0) -> bool:
    """Whether every INVITE of ``sent`` ((peer, Call-ID) → its bytes) gets a final response within ``timeout_s``;
    like a UAC's Timer A, one that has had no response at all is resent every 0.5 s (UDP may drop a burst)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if all(any(st >= 200 for st in p.statuses(c)) for p, c in sent):
            return True
        for (peer, call_id), data in sent.items():
            if not peer.statuses(call_id):
                peer.send(data, server.addr)
        await asyncio.sleep(0.5)
    return False


async def no_live_calls(server: SipServer) -> None:
    await eventually_async(lambda: server.metric("soma_live_conversations", 'channel="sip"') == 0, timeout_s=15,
                           interval=0.05, what="no SIP call left live")


def log_lines(server: SipServer, pattern: str) -> list[str]:
    return re.findall(r"(?m)^.*" + pattern + ".*$", server.srv.log_text())


# ------------------------------------------------------------------------- 1. strangers in a live dialog


async def test_a_stranger_cannot_end_or_steer_a_live_call(server: SipServer) -> None:
    """BYE/INFO/re-INVITE with only the live call's Call-ID → 481; with the right tags but from a foreign address
    → 403; neither ends the call nor presses a key; the caller's own BYE still gets 200."""
    user, _ = server.user("victim")
    stranger = await Peer.bind(STRANGER)
    try:
        async with SipPhone(server.addr) as phone:
            assert (await phone.call(user)).status == 200
            dtmf_before = server.metric("soma_sip_dtmf_total")
            our_to = phone.to_header  # carries the server's tag, as a sniffer on the path would see it
            attempts = [  # (method, From tag, To, expected)
                ("BYE", "guess", "<sip:x@127.0.0.1>", 481),
                ("INFO", "guess", "<sip:x@127.0.0.1>", 481),
                ("BYE", phone.tag, "<sip:x@127.0.0.1>", 481),  # the caller's tag but no (or a wrong) server tag
                ("BYE", phone.tag, our_to, 403),
                ("INFO", phone.tag, our_to, 403),
                ("INVITE", phone.tag, our_to, 403),
            ]
            for i, (method, from_tag, to, expected) in enumerate(attempts):
                body, kind = b"", "application/sdp"
                if method == "INFO":
                    body, kind = b"Signal=#\r\nDuration=160\r\n", "application/dtmf-relay"
                elif method == "INVITE":
                    body = sdp.build(VICTIM, 40000, session_id=2, version=9, codecs=[(0, "PCMU")], dtmf_pt=None)
                stranger.send(sip(method, stranger, uri=phone.remote_target, call_id=phone.call_id, from_tag=from_tag,
                                  to=to, cseq=100 + i, body=body, content_type=kind), server.addr)
                await eventually_async(lambda m=method: stranger.statuses(phone.call_id, m), timeout_s=5, interval=0.05,
                                       what=f"an answer to the stranger's {method} to {to}")
                assert stranger.statuses(phone.call_id, method)[-1] == expected, (method, from_tag, to)
                stranger.messages.clear()
            heard = len(phone.heard)
            await eventually_async(lambda: len(phone.heard) > heard + 10, timeout_s=5, interval=0.05,
                                   what="the call's media to go on")
            assert not phone.hung_up.is_set()
            assert server.metric("soma_sip_dtmf_total") == dtmf_before, "a stranger's INFO pressed a key"
            assert await phone.bye() == 200
    finally:
        stranger.close()


async def test_cancel_must_come_from_the_invites_source(server: SipServer) -> None:
    """A CANCEL with the ringing INVITE's Call-ID and branch from another address → 403 and the call rings on;
    the caller's own CANCEL → 200 and 487."""
    user, _ = server.user("ringing")
    caller, stranger = await Peer.bind(), await Peer.bind(STRANGER)
    try:
        call_id, branch = "cancel-" + secrets.token_hex(6), d.new_branch()
        uri, to = f"sip:{user}@127.0.0.1:{server.sip_port}", f"<sip:{user}@127.0.0.1>"
        caller.send(invite(caller, server, user, call_id, media=caller.addr, branch=branch), server.addr)
        await eventually_async(lambda: caller.statuses(call_id), until=lambda statuses: 180 in statuses, timeout_s=10,
                               interval=0.05, what="180 Ringing")
        stranger.send(sip("CANCEL", stranger, uri=uri, call_id=call_id, from_tag="t" + call_id, to=to, branch=branch),
                      server.addr)
        await eventually_async(lambda: stranger.statuses(call_id, "CANCEL"), until=lambda st: st == [403], timeout_s=5,
                               interval=0.05, what="403 to the stranger's CANCEL")
        assert not [s for s in caller.statuses(call_id) if s >= 300]
        caller.send(sip("CANCEL", caller, uri=uri, call_id=call_id, from_tag="t" + call_id, to=to, branch=branch),
                    server.addr)
        await eventually_async(lambda: caller.statuses(call_id, "CANCEL") == [200] and 487 in caller.statuses(call_id),
                               timeout_s=10, interval=0.05, what="200 to the caller's CANCEL and 487 to its INVITE")
        final = caller.responses(call_id)[-1]
        caller.send(sip("ACK", caller, uri=uri, call_id=call_id, from_tag="t" + call_id,
                        to=final.headers.get("to") or to, branch=branch), server.addr)
    finally:
        caller.close()
        stranger.close()


async def test_a_stranger_cannot_answer_fail_or_end_an_outbound_call(server: SipServer) -> None:
    """Outbound (we are the UAC): a 486 and a 200 for our INVITE from an address outside the trunk are ignored;
    once answered, the far end's BYE needs the dialog's tags (481) and the trunk's address (403)."""
    user, token = server.user("dialer")
    proxy, stranger = await Peer.bind("127.0.0.1", server.outbound_port), await Peer.bind(STRANGER)
    http = user_client(server.srv.base_url, token, timeout=10)
    try:
        await no_live_calls(server)
        placed = http.post("/v1/calls/outbound", json={"to": "sip:phone@127.0.0.1"})
        assert placed.status_code == 202, placed.text
        call_id = placed.json()["id"]
        await eventually_async(lambda: proxy.requests("INVITE"), timeout_s=10, interval=0.05,
                               what="the INVITE at the proxy")
        ours = proxy.requests("INVITE")[0]
        phone_tag = d.new_tag()
        for status in (486, 200):  # forged answers from outside the trunk
            forged = response_to(ours, status, "Forged", to_tag=phone_tag)
            stranger.send(forged.serialize(), server.addr)
        await asyncio.sleep(0.5)
        assert http.get(f"/v1/calls/outbound/{call_id}").json()["state"] == "calling"
        answer = response_to(ours, 200, "OK", to_tag=phone_tag)
        answer.headers.items += [("contact", f"<sip:phone@127.0.0.1:{server.outbound_port}>"),
                                 ("content-type", "application/sdp")]
        answer.body = sdp.build("127.0.0.1", proxy.addr[1], session_id=1, version=1, codecs=[(0, "PCMU")], dtmf_pt=None)
        proxy.send(answer.serialize(), server.addr)
        await eventually_async(lambda: http.get(f"/v1/calls/outbound/{call_id}").json()["state"],
                               until=lambda state: state == "answered", timeout_s=10, interval=0.05,
                               what="the outbound call answered")
        await eventually_async(lambda: proxy.requests("ACK"), timeout_s=10, interval=0.05, what="the ACK at the proxy")
        contact = ours.headers.get("contact") or ""
        target = contact.strip("<>")
        ours_from = ours.headers.get("from") or ""
        for i, (source, from_tag, to, expected) in enumerate([
            (stranger, "guess", "<sip:soma@127.0.0.1>", 481),
            (stranger, phone_tag, ours_from, 403),
        ]):
            source.send(sip("BYE", source, uri=target, call_id=call_id, from_tag=from_tag, to=to, cseq=10 + i),
                        server.addr)
            await eventually_async(lambda: stranger.statuses(call_id, "BYE"), timeout_s=5, interval=0.05,
                                   what="an answer to the stranger's BYE")
            assert stranger.statuses(call_id, "BYE") == [expected]
            stranger.messages.clear()
        assert http.get(f"/v1/calls/outbound/{call_id}").json()["state"] == "answered"
        proxy.send(sip("BYE", proxy, uri=target, call_id=call_id, from_tag=phone_tag, to=ours_from, cseq=20),
                   server.addr)
        await eventually_async(lambda: proxy.statuses(call_id, "BYE"), until=lambda st: st == [200], timeout_s=5,
                               interval=0.05, what="200 to our BYE")
        await eventually_async(lambda: http.get(f"/v1/calls/outbound/{call_id}").json()["state"],
                               until=lambda state: state == "ended", timeout_s=15, interval=0.05,
                               what="the outbound call ended")
    finally:
        http.close()
        proxy.close()
        stranger.close()


# ------------------------------------------------------------------------------ 2. media before the ACK


async def test_no_rtp_before_the_ack_and_little_to_an_address_that_never_answers(server: SipServer) -> None:
    """Three INVITEs whose SDP names a third address, answered 200 but not ACKed: not one RTP packet reaches it.
    Once ACKed, the three calls share one call's worth of packets towards it (it never sent RTP itself)."""
    await no_live_calls(server)
    user, _ = server.user("reflect")
    caller, victim = await Peer.bind(), await Peer.bind(VICTIM)
    try:
        call_ids = [f"reflect-{i}-" + secrets.token_hex(4) for i in range(3)]
        sent = {(caller, c): invite(caller, server, user, c, media=victim.addr) for c in call_ids}
        for data in sent.values():
            caller.send(data, server.addr)
        assert await all_answered(sent, server, 15) and all(200 in caller.statuses(c) for c in call_ids)
        await asyncio.sleep(1.5)  # 75 packets per call would have gone out by now
        assert victim.datagrams == 0, "RTP went to an address before its dialog was confirmed"
        oks = {c: caller.responses(c)[-1] for c in call_ids}
        for call_id, ok in oks.items():
            caller.send(sip("ACK", caller, uri=f"sip:soma@127.0.0.1:{server.sip_port}", call_id=call_id,
                            from_tag="t" + call_id, to=ok.headers.get("to") or ""), server.addr)
        await eventually_async(lambda: victim.datagrams > 0, timeout_s=5, interval=0.05,
                               what="media after the ACK")
        start, at = victim.datagrams, time.monotonic()
        await asyncio.sleep(2.0)
        rate = (victim.datagrams - start) / (time.monotonic() - at)
        assert rate < 70, f"{rate:.0f} packets/s to an address that never sent RTP (three calls would send 150)"
        for call_id, ok in oks.items():
            caller.send(sip("BYE", caller, uri=f"sip:soma@127.0.0.1:{server.sip_port}", call_id=call_id,
                            from_tag="t" + call_id, to=ok.headers.get("to") or "", cseq=2), server.addr)
        await eventually_async(lambda: all(caller.statuses(c, "BYE") == [200] for c in call_ids), timeout_s=5,
                               interval=0.05, what="200 to every BYE")
    finally:
        caller.close()
        victim.close()


# ------------------------------------------------------------------------- 3. the call cap and INVITE rate


async def test_unacknowledged_invites_never_exceed_the_call_cap_and_time_out(server: SipServer) -> None:
    """170 INVITEs from 17 sources (within the rate limit), none ever ACKed: at most `MAX_CALLS` are answered
    200, the rest 503 with Retry-After; after Timer H the server BYEs the un-ACKed ones and a new call fits."""
    await no_live_calls(server)
    user, _ = server.user("capped")
    peers = [await Peer.bind(f"127.0.1.{i}") for i in range(1, 18)]
    try:
        sent: dict[tuple[Peer, str], bytes] = {}
        for n in range(INVITE_BURST):
            for peer in peers:
                call_id = f"cap-{peer.addr[0]}-{n}"
                sent[peer, call_id] = invite(peer, server, user, call_id, media=(peer.addr[0], 9))
                peer.send(sent[peer, call_id], server.addr)
        every = list(sent)

        def final(peer: Peer, call_id: str) -> int:
            return next((s for s in peer.statuses(call_id) if s >= 200), 0)

        assert await all_answered(sent, server), [(c, p.statuses(c)) for p, c in every if not final(p, c)][:5]
        taken = [(p, c) for p, c in every if final(p, c) == 200]
        refused = [(p, c) for p, c in every if final(p, c) == 503]
        assert 1 <= len(taken) <= MAX_CALLS and len(taken) + len(refused) == len(every), len(taken)
        assert all(r.headers.get("retry-after") for p, c in refused for r in p.responses(c) if r.status == 503)
        answered_at = time.monotonic()
        # Timer H (64·T1 = 6.4 s here): each un-ACKed call is hung up with a BYE, and its slot is free again.
        await eventually_async(lambda: all(any(r.call_id == c for r in p.requests("BYE")) for p, c in taken),
                               timeout_s=15, interval=0.05, what="a BYE for every answered call")
        assert time.monotonic() - answered_at < 64 * T1_MS / 1000 + 5
        assert len(log_lines(server, "no ACK for the 200 OK")) >= len(taken)
    finally:
        for peer in peers:
            peer.close()
    await no_live_calls(server)
    async with SipPhone(server.addr) as phone:
        assert (await phone.call(user)).status == 200
        assert await phone.bye() == 200


async def test_an_invite_flood_from_one_source_is_refused_then_dropped_and_logged_once(server: SipServer) -> None:
    """60 INVITEs at once from one address: `INVITE_BURST` get through (100 Trying), as many more get 503 with
    Retry-After, the rest no answer at all; the log gets one line for the whole flood."""
    flooder = await Peer.bind("127.0.1.200")
    try:
        call_ids = [f"flood-{n}" for n in range(60)]
        for call_id in call_ids:
            flooder.send(invite(flooder, server, "nobody-" + call_id, call_id, media=flooder.addr), server.addr)
        await eventually_async(lambda: sum(bool(flooder.statuses(c)) for c in call_ids),
                               until=lambda answered: answered >= 2 * INVITE_BURST, timeout_s=10, interval=0.05,
                               what="answers to two bursts of INVITEs")
        await asyncio.sleep(1.0)  # stragglers
        through = [c for c in call_ids if 100 in flooder.statuses(c)]
        limited = [c for c in call_ids if flooder.statuses(c)[:1] == [503]]
        silent = [c for c in call_ids if not flooder.statuses(c)]
        assert INVITE_BURST <= len(through) <= INVITE_BURST + 2, len(through)
        assert INVITE_BURST - 2 <= len(limited) <= INVITE_BURST + 2, len(limited)
        assert len(silent) >= 60 - 2 * INVITE_BURST - 4, len(silent)
        assert all(flooder.responses(c)[0].headers.get("retry-after") for c in limited)
        assert len(log_lines(server, "INVITEs over the rate limit.*127\\.0\\.1\\.200")) == 1
    finally:
        flooder.close()


# ------------------------------------------------------------------------------------ 4. TCP lockout


async def test_idle_tcp_connections_cannot_lock_out_new_tcp_clients(server: SipServer) -> None:
    """Idle connections from one stranger (beyond its per-source cap) and from many sources (beyond the total
    cap) never keep a new client out: its OPTIONS over TCP is answered; idle ones are closed after the idle
    timeout; UDP works throughout."""
    writers: list[asyncio.StreamWriter] = []
    readers: list[asyncio.StreamReader] = []

    async def open_idle(source: str, count: int) -> None:
        for _ in range(count):
            reader, writer = await asyncio.open_connection(*server.addr, local_addr=(source, 0))
            readers.append(reader)
            writers.append(writer)

    async def closed_by_server(reader: asyncio.StreamReader, within_s: float) -> bool:
        try:
            return await asyncio.wait_for(reader.read(1), within_s) == b""
        except (TimeoutError, ConnectionError):
            return False

    try:
        await open_idle(STRANGER, 3 * TCP_PER_SOURCE)
        for source in (f"127.0.2.{i}" for i in range(1, 5)):
            await open_idle(source, TCP_PER_SOURCE)
        await asyncio.sleep(0.2)
        assert await tcp_options(server), "a new TCP client was locked out"
        assert await closed_by_server(readers[0], 1.0), "the stranger's oldest connection beyond its cap stays open"
        async with SipPhone(server.addr) as phone:
            assert (await phone.options()).status == 200
        assert await closed_by_server(readers[-1], TCP_IDLE_S + 2.0), "an idle connection outlived the idle timeout"
    finally:
        for writer in writers:
            writer.close()


async def tcp_options(server: SipServer, source: str = "127.0.0.1") -> bool:
    """Whether an OPTIONS over a new TCP connection from ``source`` is answered 200."""
    reader, writer = await asyncio.open_connection(*server.addr, local_addr=(source, 0))
    try:
        request = (f"OPTIONS sip:127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/TCP {source}:5999;branch={d.new_branch()}\r\n"
                   f"From: <sip:t@{source}>;tag=9\r\nTo: <sip:127.0.0.1>\r\nCall-ID: tcp-{secrets.token_hex(4)}\r\n"
                   "CSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n")
        writer.write(request.encode())
        await writer.drain()
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
        return head.startswith(b"SIP/2.0 200")
    finally:
        writer.close()


# ---------------------------------------------------------------------------------- 5. Unicode digits


@pytest.mark.parametrize(
    ("old", "new", "reason"),
    [
        (b"CSeq: 1 OPTIONS", "CSeq: ² OPTIONS", b"bad CSeq"),
        (b"CSeq: 1 OPTIONS", "CSeq: ١ OPTIONS", b"bad CSeq"),  # Arabic-Indic one: int() would take it
        (b"127.0.0.4:5999", "127.0.0.4:٥٩٩٩", b"bad port"),
        (b"Content-Length: 0", "Content-Length: ²", b"bad Content-Length"),
    ],
)
async def test_unicode_digits_get_400_and_one_log_line_not_a_traceback_each(
    server: SipServer, old: bytes, new: str, reason: bytes
) -> None:
    """200 datagrams with a Unicode digit in CSeq, a Via port or Content-Length: answered 400 with the reason;
    the log gets at most a burst of lines, never a traceback."""
    peer = await Peer.bind("127.0.0.4")
    try:
        good = (f"OPTIONS sip:127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.4:5999;branch={d.new_branch()}\r\n"
                "From: <sip:t@127.0.0.4>;tag=9\r\nTo: <sip:127.0.0.1>\r\nCall-ID: digits\r\nCSeq: 1 OPTIONS\r\n"
                "Content-Length: 0\r\n\r\n").encode()
        bad = good.replace(old, new.encode())
        log_before = len(server.srv.log_text().splitlines())
        for i in range(200):
            peer.send(bad, server.addr)
            if i % 20 == 19:
                await asyncio.sleep(0.01)  # a flood, but not one the kernel's socket buffer drops
        await eventually_async(lambda: len(peer.raw), until=lambda n: n >= 190, timeout_s=10,  # UDP: a few may be lost
                               interval=0.05, what="190 of the 200 answers")
        assert all(r.startswith(b"SIP/2.0 400 " + reason) for r in peer.raw), peer.raw[0][:80]
        await asyncio.sleep(0.3)
        new_lines = server.srv.log_text().splitlines()[log_before:]
        assert len([line for line in new_lines if "127.0.0.4" in line]) <= 12, new_lines[-5:]
        assert not [line for line in new_lines if "Traceback" in line]
    finally:
        peer.close()


@pytest.mark.parametrize("m_line", ["m=audio ٥٠٠٠ RTP/AVP 0", "m=audio 5000 RTP/AVP ²", "m=audio 5000 RTP/AVP ٠"])
async def test_unicode_digits_in_sdp_get_a_final_400(server: SipServer, m_line: str) -> None:
    """An INVITE whose SDP has a Unicode digit in the port or a payload type gets a final 400 (before: ``٥٠٠٠``
    was taken for 5000 and ``²`` left the INVITE without a final answer, with a traceback in the log)."""
    user, _ = server.user("sdp")
    peer = await Peer.bind()
    try:
        call_id = "sdp-" + secrets.token_hex(6)
        data = invite(peer, server, user, call_id, media=peer.addr)
        head, _, body = data.partition(b"\r\n\r\n")
        body = re.sub(rb"m=audio [^\r]*", m_line.encode(), body)
        head = re.sub(rb"Content-Length: \d+", b"Content-Length: %d" % len(body), head)
        log_before = len(server.srv.log_text())
        peer.send(head + b"\r\n\r\n" + body, server.addr)
        await eventually_async(lambda: [s for s in peer.statuses(call_id) if s >= 200], timeout_s=10, interval=0.05,
                               what="a final response")
        assert peer.statuses(call_id)[-1] == 400
        assert "Traceback" not in server.srv.log_text()[log_before:]
    finally:
        peer.close()
