"""The attacker of `bench.abuse`: hostile traffic against one `soma serve`, run in its own process.

Everything goes to loopback addresses only (the server, and a UDP sink on 127.0.0.9 that stands for the "third
party" a spoofed SDP names). Each attack is bounded in count and time and stops by itself. The result is a
plain dict of counts, so the parent process can report it without trusting anything the attacker measured
about the call.
"""

from __future__ import annotations

import asyncio
import io
import json
import resource
import socket
import time
import uuid
import zipfile
from collections import Counter
from dataclasses import dataclass
from typing import Any

import httpx
import websockets

SINK_HOST = "127.0.0.9"  # the address a hostile SDP asks the server to send RTP to
LEGIT_TCP_SOURCE = "127.0.0.2"  # another loopback address: a legitimate TCP client beside the idle flood


@dataclass(frozen=True)
class AttackPlan:
    """How much of each attack to send."""

    invites: int
    idle_tcp: int
    imports: int
    realtime_events: int
    hold_s: float  # how long the idle TCP connections are held open
    only: tuple[str, ...] = ()  # a subset of invites, tcp, imports, realtime, http (diagnosis); empty = all


@dataclass(frozen=True)
class Target:
    """Where the server is and who the attacker signed in as."""

    base_url: str
    sip_host: str
    sip_port: int
    token: str
    callee: str  # the SIP user the INVITE flood calls (an existing user: the worst case)


# ----------------------------------------------------------------------------------------------- SIP


def _invite(target: Target, n: int, local_port: int, sink_port: int) -> bytes:
    body = (
        "v=0\r\n"
        f"o=- {n} 1 IN IP4 {SINK_HOST}\r\n"
        "s=-\r\n"
        f"c=IN IP4 {SINK_HOST}\r\n"
        "t=0 0\r\n"
        f"m=audio {sink_port} RTP/AVP 0 101\r\n"
        "a=rtpmap:0 PCMU/8000\r\n"
        "a=rtpmap:101 telephone-event/8000\r\n"
        "a=sendrecv\r\n"
    ).encode()
    head = (
        f"INVITE sip:{target.callee}@{target.sip_host}:{target.sip_port} SIP/2.0\r\n"
        f"Via: SIP/2.0/UDP 127.0.0.1:{local_port};branch=z9hG4bK-flood-{n}-{uuid.uuid4().hex[:8]}\r\n"
        "Max-Forwards: 70\r\n"
        f"From: <sip:attacker@127.0.0.1>;tag=flood{n}\r\n"
        f"To: <sip:{target.callee}@{target.sip_host}>\r\n"
        f"Call-ID: flood-{n}-{uuid.uuid4().hex}\r\n"
        "CSeq: 1 INVITE\r\n"
        f"Contact: <sip:attacker@127.0.0.1:{local_port}>\r\n"
        "Content-Type: application/sdp\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    )
    return head.encode() + body


def _status_of(data: bytes) -> str:
    first = data.split(b"\r\n", 1)[0].decode("latin-1", "replace")
    parts = first.split(" ", 2)
    return parts[1] if len(parts) > 1 and first.startswith("SIP/2.0") else "other"


async def invite_flood(target: Target, count: int, sink: socket.socket) -> dict[str, Any]:
    """``count`` never-ACKed INVITEs from one source, as fast as the socket takes them (~2 s in all), whose SDP
    names the sink; counts the final answers and the RTP packets that reached the sink."""
    sip = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sip.bind(("127.0.0.1", 0))
    sip.setblocking(False)
    local_port = sip.getsockname()[1]
    sink_port = sink.getsockname()[1]
    statuses: Counter[str] = Counter()
    rtp = 0
    started = time.monotonic()
    for n in range(count):
        sip.sendto(_invite(target, n, local_port, sink_port), (target.sip_host, target.sip_port))
        if n % 50 == 49:
            await asyncio.sleep(0.05)
    deadline = time.monotonic() + 8.0
    while time.monotonic() < deadline:  # collect answers and reflected media for a while after the flood
        got = False
        for sock, is_sip in ((sip, True), (sink, False)):
            try:
                data, _ = sock.recvfrom(65536)
            except BlockingIOError:
                continue
            got = True
            if is_sip:
                statuses[_status_of(data)] += 1
            else:
                rtp += 1
        if not got:
            await asyncio.sleep(0.01)
    sip.close()
    return {"invite_statuses": dict(statuses), "reflected_rtp_packets": rtp,
            "invite_flood_s": round(time.monotonic() - started, 2)}


async def idle_tcp(target: Target, count: int, hold_s: float) -> dict[str, Any]:
    """``count`` TCP connections to the SIP port that never send a byte, held ``hold_s``; meanwhile a legitimate
    OPTIONS over TCP from another loopback source, timed."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, max(soft, count + 256)), hard))
    opened = 0
    conns: list[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = []
    for _ in range(count):
        try:
            conns.append(await asyncio.wait_for(asyncio.open_connection(target.sip_host, target.sip_port), 2.0))
        except (OSError, TimeoutError):
            continue
        opened += 1
    await asyncio.sleep(1.0)
    options_ms, options_status = await _tcp_options(target)
    await asyncio.sleep(max(0.0, hold_s - 1.0))
    still_open = sum(1 for reader, writer in conns if not reader.at_eof() and not writer.is_closing())
    for _, writer in conns:
        writer.close()
    return {"idle_tcp_opened": opened, "idle_tcp_still_open": still_open, "legit_tcp_options_status": options_status,
            "legit_tcp_options_ms": options_ms}


async def _tcp_options(target: Target) -> tuple[float | None, str]:
    try:
        started = time.monotonic()
        reader, writer = await asyncio.wait_for(
            asyncio.open_connection(target.sip_host, target.sip_port, local_addr=(LEGIT_TCP_SOURCE, 0)), 5.0
        )
        port = writer.get_extra_info("sockname")[1]
        writer.write((
            f"OPTIONS sip:{target.sip_host}:{target.sip_port} SIP/2.0\r\n"
            f"Via: SIP/2.0/TCP {LEGIT_TCP_SOURCE}:{port};branch=z9hG4bK-legit-{uuid.uuid4().hex[:10]}\r\n"
            "Max-Forwards: 70\r\nFrom: <sip:legit@127.0.0.2>;tag=l1\r\n"
            f"To: <sip:{target.sip_host}>\r\nCall-ID: legit-{uuid.uuid4().hex}\r\nCSeq: 1 OPTIONS\r\n"
            "Content-Length: 0\r\n\r\n"
        ).encode())
        await writer.drain()
        line = await asyncio.wait_for(reader.readline(), 5.0)
        elapsed = (time.monotonic() - started) * 1000
        writer.close()
        return round(elapsed, 1), _status_of(line)
    except (OSError, TimeoutError) as exc:
        return None, type(exc).__name__


# ------------------------------------------------------------------------------------------- imports


def _nested_json(depth: int) -> bytes:
    return b'{"name":"x","type":"personal_chat","id":1,"messages":[' + b"[" * depth + b"]" * depth + b"]}"


def _zip_bomb() -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("_chat.txt", b"\0" * (200 * 1024 * 1024))  # 200 MiB of zeros, ~200 KB compressed
    return buf.getvalue()


def hostile_imports_bodies() -> list[tuple[str, bytes]]:
    """The hostile files, cycled through by `hostile_imports`."""
    whatsapp_line = b"12/01/2024, 10:00 - Alex: " + b"a" * (4 * 1024 * 1024) + b"\n"
    return [
        ("result.json", _nested_json(100_000)),
        ("result.json", _nested_json(20_000)),
        ("archive.zip", _zip_bomb()),
        ("chat.txt", whatsapp_line),
        ("result.json", b'{"messages": [' + b'{"id": 1, "text": "' + b"\xff\xfe" * 1000 + b'"}]}'),
        ("voice.ogg", b"OggS" + b"\0" * 4000),
        ("video.mp4", b"\0\0\0\x18ftypmp42" + b"\x01" * 8000),
        ("data.csv", b'"' + b"x" * (2 * 1024 * 1024) + b"\n"),
        ("export.zip", b"PK\x03\x04" + b"\0" * 100),
        ("result.json", b'{"messages": [{"id": ' + b"9" * 5000 + b"}]}"),
    ]


async def hostile_imports(target: Target, count: int, http: httpx.AsyncClient) -> dict[str, Any]:
    """``count`` hostile uploads to ``POST /v1/imports`` (one at a time): the answers' status codes."""
    bodies = hostile_imports_bodies()
    statuses: Counter[str] = Counter()
    for n in range(count):
        name, body = bodies[n % len(bodies)]
        try:
            r = await http.post("/v1/imports", params={"me": "Alex", "name": name}, content=body)
            statuses[str(r.status_code)] += 1
        except httpx.HTTPError as exc:
            statuses[type(exc).__name__] += 1
    ended: Counter[str] = Counter()
    deadline = time.monotonic() + 180.0
    while time.monotonic() < deadline:  # how the accepted ones ended (none may end `done`: all are hostile)
        rows = (await http.get("/v1/imports", params={"limit": 500})).json()["data"]
        ended = Counter(str(row["status"]) for row in rows)
        if not ended.keys() & {"queued", "running"}:
            break
        await asyncio.sleep(1.0)
    return {"import_statuses": dict(statuses), "import_final_statuses": dict(ended)}


# ---------------------------------------------------------------------------------- realtime and HTTP


def realtime_bad_events() -> list[str]:
    """Malformed or hostile Realtime client events (the fuzzing run's findings among them)."""
    return [
        "{not json",
        "[]",
        json.dumps({"type": f"made.up.{uuid.uuid4().hex[:6]}"}),
        '{"type":"response.create","response":{"output_modalities":5}}',
        '{"type":"session.update","session":{"instructions":' + "7" * 4400 + "}}",
        '{"type":"conversation.item.create","item":{"type":"message","role":"user",'
        '"content":[{"type":"input_text","text":"\\ud800"}]}}',
        json.dumps({"type": "session.update", "session": {"output_modalities": ["smell"]}}),
        json.dumps({"type": "input_audio_buffer.append", "audio": "@@@"}),
        "[" * 20_000 + "]" * 20_000,
        json.dumps({"type": "conversation.item.create",
                    "item": {"type": "message", "role": "user",
                             "content": [{"type": "input_text", "text": "\U0001f600" * 3990}]}}),
    ]


async def realtime_flood(target: Target, count: int) -> dict[str, Any]:
    """``count`` bad events over the Realtime WebSocket (reconnecting when closed), ~200 a second: how many
    got an ``error`` event, how many closes."""
    url = target.base_url.replace("http", "ws", 1) + "/v1/realtime"
    events = realtime_bad_events()
    sent = errors = closes = 0
    while sent < count:
        try:
            async with websockets.connect(url, additional_headers={"Authorization": f"Bearer {target.token}"},
                                          max_size=None) as ws:
                while sent < count:
                    await ws.send(events[sent % len(events)])
                    sent += 1
                    if sent % 20 == 0:
                        await asyncio.sleep(0.1)
                    while True:
                        try:
                            message = await asyncio.wait_for(ws.recv(), 0.001)
                        except TimeoutError:
                            break
                        if isinstance(message, str) and '"type":"error"' in message.replace(" ", ""):
                            errors += 1
        except websockets.ConnectionClosed:
            closes += 1
        except OSError:
            closes += 1
            await asyncio.sleep(0.5)
    return {"realtime_bad_events_sent": sent, "realtime_error_events": errors, "realtime_closes": closes}


HOSTILE_OFFERS = [
    "v=0\r\no=- 1 1 IN IP4 0.0.0.0\r\ns=-\r\nt=0 0\r\nm=audio 9 UDP/TLS/RTP/SAVPF 111\r\nc=IN IP4 0.0.0.0\r\n"
    "a=mid:0\r\nm=audio 9 UDP/TLS/RTP/SAVPF 111\r\nc=IN IP4 0.0.0.0\r\na=mid:1\r\n",
    "v=0\r\no=- 1 1 IN IP4 0.0.0.0\r\ns=-\r\nt=0 0\r\nm=audio 9 UDP/TLS/RTP/SAVPF 111\r\nc=IN IP4 0.0.0.0\r\n"
    "a=rtpmap:111 opus/48000/2\r\n",
    "v=0\r\n" + "a=x:" + "y" * 30_000 + "\r\n",
    "not an sdp at all",
    "v=0\r\no=- 1 1 IN IP4 0.0.0.0\r\ns=-\r\nt=0 0\r\nm=audio ² UDP/TLS/RTP/SAVPF 111\r\n",
]


async def hostile_http(target: Target, http: httpx.AsyncClient, rounds: int) -> dict[str, Any]:
    """Hostile WebRTC offers and JSON bodies (lone surrogates, huge numbers): the answers' status codes."""
    statuses: Counter[str] = Counter()
    bodies = [
        b'{"model":"soma","messages":[{"role":"user","content":"\\ud800"}]}',
        b'{"model":"soma","messages":[{"role":"user","content":"hi"}],"max_tokens":' + b"9" * 5000 + b"}",
        b'{"model":"soma","messages":[]}',
        b"{not json",
    ]
    for n in range(rounds):
        requests = [
            http.post("/v1/realtime/calls", content=HOSTILE_OFFERS[n % len(HOSTILE_OFFERS)].encode(),
                      headers={"Content-Type": "application/sdp"}),
            http.post("/v1/chat/completions", content=bodies[n % len(bodies)],
                      headers={"Content-Type": "application/json"}),
        ]
        for what, coro in zip(("offer", "chat"), requests, strict=True):
            try:
                statuses[f"{what} {(await coro).status_code}"] += 1
            except httpx.HTTPError as exc:
                statuses[f"{what} {type(exc).__name__}"] += 1
    return {"hostile_http_statuses": dict(statuses)}


# -------------------------------------------------------------------------------------------- entry


async def attack(target: Target, plan: AttackPlan) -> dict[str, Any]:
    """Every attack at once; returns their merged counts."""
    sink = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sink.bind((SINK_HOST, 0))
    sink.setblocking(False)
    headers = {"Authorization": f"Bearer {target.token}"}
    async with httpx.AsyncClient(base_url=target.base_url, headers=headers, timeout=60) as http:
        attacks = {
            "invites": lambda: invite_flood(target, plan.invites, sink),
            "tcp": lambda: idle_tcp(target, plan.idle_tcp, plan.hold_s),
            "imports": lambda: hostile_imports(target, plan.imports, http),
            "realtime": lambda: realtime_flood(target, plan.realtime_events),
            "http": lambda: hostile_http(target, http, 20),
        }
        chosen = [name for name in attacks if name in plan.only] if plan.only else list(attacks)
        parts = await asyncio.gather(*(attacks[name]() for name in chosen), return_exceptions=True)
    sink.close()
    merged: dict[str, Any] = {"attacks": chosen}
    for name, part in zip(chosen, parts, strict=True):
        if isinstance(part, BaseException):  # one attack failing must not lose the others' counts
            merged[f"attack_error_{name}"] = f"{type(part).__name__}: {part}"
        else:
            merged.update(part)
    return merged


def attack_process(target: Target, plan: AttackPlan, out: Any) -> None:
    """A `multiprocessing` target: run `attack` and put its result (or the error) on ``out``."""
    try:
        out.put(asyncio.run(attack(target, plan)))
    except Exception as exc:  # reported by the parent; the bench must not hang on a dead attacker
        out.put({"attack_error": f"{type(exc).__name__}: {exc}"})
