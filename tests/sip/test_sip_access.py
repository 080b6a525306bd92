"""Who gets through: digest-authenticated trunks, caller-ID allow-lists, unknown extensions, CANCEL, and a
flood of malformed input while a real call is up (which must carry on unharmed)."""

from __future__ import annotations

import asyncio
import json
import os
import secrets
import shutil
import socket
import time
from collections.abc import Iterator
from typing import Any

import httpx
import numpy as np
import pytest

from tests.eventually import eventually_async
from tests.server_api import auth
from tests.sip.conftest import SipServer, needs_sipp, question_8k, run_sipp, start_sip_server
from tests.sip_phone import SipPhone

TRUNK_PASSWORD = "trunk-" + secrets.token_hex(8)


@pytest.fixture(scope="module")
def trunk_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SipServer]:
    """No models (calls that get past admission end in 503), one trunk: loopback with digest credentials;
    rings 1.5 s before answering so a CANCEL can arrive first."""
    trunks = [{"name": "pbx", "allow": ["127.0.0.1/32"], "username": "pbx", "password": TRUNK_PASSWORD}]
    srv = start_sip_server(tmp_path_factory.mktemp("sip-trunk"), models=False, SOMA_SIP_TRUNKS=json.dumps(trunks),
                           SOMA_LOG_LEVEL="debug")
    yield srv
    srv.srv.stop()
    shutil.rmtree(srv.srv.data_dir, ignore_errors=True)


@pytest.fixture(scope="module")
def ringing_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SipServer]:
    """No trunks, no models, rings 1.5 s before answering."""
    srv = start_sip_server(tmp_path_factory.mktemp("sip-ring"), models=False, SOMA_SIP_RING_MS="1500")
    yield srv
    srv.srv.stop()
    shutil.rmtree(srv.srv.data_dir, ignore_errors=True)


def set_line(server: SipServer, token: str, **body: Any) -> httpx.Response:
    return httpx.put(server.srv.base_url + "/v1/sip/line", json=body, headers=auth(token),
                     timeout=10)


async def test_a_trunk_with_credentials_challenges_and_checks_the_digest(trunk_server: SipServer) -> None:
    """No credentials → 401 with SHA-256 and MD5 challenges; a wrong password → 403; the right one gets in
    (here 503: this server has no models); the password never reaches the log."""
    user, _ = trunk_server.user("trunk")
    async with SipPhone(trunk_server.addr) as phone:
        assert (await phone.call(user)).status == 401
    async with SipPhone(trunk_server.addr) as phone:
        result = await phone.call(user, username="pbx", password="wrong-password")
        assert result.responses[-2:] == [100, 403] and 401 in result.responses
    async with SipPhone(trunk_server.addr) as phone:
        result = await phone.call(user, username="pbx", password=TRUNK_PASSWORD)
        assert result.status == 503, result.responses
    log = trunk_server.srv.log_text()
    assert "wrong digest credentials" in log and TRUNK_PASSWORD not in log and "wrong-password" not in log


async def test_unknown_extension_is_404_and_the_allow_list_is_403(ringing_server: SipServer) -> None:
    """The Request-URI user picks the line: unknown → 404; a caller not on the line's allow-list → 403; an
    allowed caller reaches it by extension (180, then 503 here: no models)."""
    user, token = ringing_server.user("line")
    extension = str(1000 + int.from_bytes(os.urandom(2), "big") % 8000)
    assert set_line(ringing_server, token, extension=extension, allowed_callers=["+49 30 111"]).status_code == 200
    async with SipPhone(ringing_server.addr, caller="+4930999") as phone:
        assert (await phone.call("9" + extension)).status == 404
    async with SipPhone(ringing_server.addr, caller="+4930999") as phone:
        assert (await phone.call(extension)).status == 403
    async with SipPhone(ringing_server.addr, caller="+4930111") as phone:
        result = await phone.call(extension)
        assert 180 in result.responses and result.status == 503
    other, other_token = ringing_server.user("other")
    assert set_line(ringing_server, other_token, extension=extension).status_code == 409


@needs_sipp
async def test_cancel_while_ringing_gets_487(ringing_server: SipServer, speech_dir: Any) -> None:
    """sipp CANCELs after 180: 200 for the CANCEL, 487 for the INVITE, and no call is left."""
    user, _ = ringing_server.user("cancel")
    result = await asyncio.to_thread(run_sipp, ringing_server, "cancel", speech_dir, user=user)
    assert result.returncode == 0, result.stdout + result.errors
    assert "cancelled by the caller" in ringing_server.srv.log_text()


def malformed(i: int, call_id: str) -> bytes:
    """The i-th hostile datagram: truncated, binary, huge, lying Content-Length, missing headers, bad SDP."""
    via = f"Via: SIP/2.0/UDP 127.0.0.1:5999;branch=z9hG4bKbad{i}"
    base = (f"INVITE sip:nobody@127.0.0.1 SIP/2.0\r\n{via}\r\nFrom: <sip:x@y>;tag=1\r\nTo: <sip:nobody@z>\r\n"
            f"Call-ID: {call_id}\r\nCSeq: 1 INVITE\r\n")
    kind = i % 8
    if kind == 0:
        return base.encode()[: 10 + i % 120]  # truncated
    if kind == 1:
        return os.urandom(1 + i % 1400)  # binary
    if kind == 2:
        return (base + "X-Huge: " + "a" * 60000 + "\r\n\r\n").encode()[:65000]  # huge header
    if kind == 3:
        return (base + "Content-Length: 500\r\n\r\nv=0\r\n").encode()  # Content-Length beyond the body
    if kind == 4:
        return base.replace(f"Call-ID: {call_id}\r\n", "").encode() + b"\r\n"  # missing Call-ID
    if kind == 5:
        sdp = b"v=0\r\nc=IN IP4 not-an-ip\r\nm=audio 99999 RTP/AVP x\r\n"
        return (base + f"Content-Type: application/sdp\r\nContent-Length: {len(sdp)}\r\n\r\n").encode() + sdp
    if kind == 6:
        return (base + "CSeq: banana\r\n\r\n").encode().replace(b"CSeq: 1 INVITE\r\n", b"")  # bad CSeq
    return ("\u00ff" * 50 + " sip:x SIP/2.0\r\n" + via + "\r\n\r\n").encode("latin-1")  # bad method token


async def test_a_flood_of_malformed_input_leaves_a_live_call_unharmed(sip_server: SipServer) -> None:
    """1,000 malformed datagrams at the SIP port and garbage/wrong-source RTP at the call's port: answered 400
    or ignored; the call still hears and answers a question afterwards."""
    user, _ = sip_server.user("flood")
    async with SipPhone(sip_server.addr) as phone:
        assert (await phone.call(user)).status == 200
        rtp_port = phone.remote_rtp[1] if phone.remote_rtp else 0
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as bad:
            bad.bind(("127.0.0.1", 0))
            bad.setblocking(False)
            for i in range(1000):
                bad.sendto(malformed(i, f"flood-{i}"), sip_server.addr)
                if i % 4 == 0:  # garbage and well-formed-but-foreign RTP from a source that is not the caller
                    payload = os.urandom(12 + i % 300) if i % 8 else bytes([0x80, 0, 0, 1]) + os.urandom(168)
                    bad.sendto(payload, ("127.0.0.1", rtp_port))
                if i % 50 == 49:
                    await asyncio.sleep(0.02)
            await asyncio.sleep(1.0)
            answers = []
            while True:
                try:
                    answers.append(bad.recv(65535))
                except BlockingIOError:
                    break
        assert all(a.startswith(b"SIP/2.0 ") for a in answers), "media or garbage came back to a stranger"
        statuses = {a.split(b" ", 2)[1] for a in answers}
        # 503: the flood's parseable INVITEs beyond the source's INVITE rate (sip_invite_rate/burst)
        assert b"400" in statuses and statuses <= {b"100", b"400", b"404", b"503"}, statuses
        question = question_8k()
        phone.say(question)
        since = time.monotonic() + len(question) / 8000
        await eventually_async(
            lambda: any(h.at > since and int(np.abs(h.pcm.astype(np.int32)).max()) > 300 for h in phone.heard),
            timeout_s=30, interval=0.1, what="the call to answer after the flood")
        assert await phone.bye() == 200
    options = await _options(sip_server)
    assert options.status == 200


async def _options(server: SipServer) -> Any:
    async with SipPhone(server.addr) as phone:
        return await phone.options()


async def test_tcp_transport_answers_options(sip_server: SipServer) -> None:
    """The listener also speaks SIP over TCP (Content-Length framing): OPTIONS → 200."""
    reader, writer = await asyncio.open_connection(*sip_server.addr)
    request = ("OPTIONS sip:127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/TCP 127.0.0.1:5999;branch=z9hG4bKtcp1\r\n"
               "From: <sip:t@127.0.0.1>;tag=9\r\nTo: <sip:127.0.0.1>\r\nCall-ID: tcp-1\r\nCSeq: 1 OPTIONS\r\n"
               "Content-Length: 0\r\n\r\n")
    writer.write(b"\r\n\r\n" + request.encode())  # keep-alive CRLFs first
    await writer.drain()
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
    assert head.startswith(b"SIP/2.0 200") and b"Allow: INVITE" in head
    writer.close()


@pytest.mark.parametrize(
    ("change", "status"),
    [
        ((b"Max-Forwards: 70", b"Max-Forwards: 0"), b"483"),
        ((b"Max-Forwards: 70", b"Max-Forwards: 70\r\nRequire: 100rel, timer"), b"420"),
        ((b"Content-Type: application/sdp", b"Content-Type: text/plain"), b"415"),
        ((b"INVITE sip:", b"SUBSCRIBE sip:"), b"405"),
        ((b"INVITE sip:", b"FROB sip:"), b"501"),
    ],
)
async def test_requests_we_cannot_serve_get_the_rfc_status(
    ringing_server: SipServer, change: tuple[bytes, bytes], status: bytes
) -> None:
    """§8.2: hop limit 0 → 483, a required extension → 420 (with Unsupported), a non-SDP body → 415, a known
    but unsupported method → 405 with Allow, an unknown one → 501."""
    from tests.sip.test_message import INVITE

    data = INVITE.replace(*change).replace(b"CSeq: 1 INVITE", b"CSeq: 1 " + data_method(INVITE.replace(*change)))
    data = data.replace(b"z9hG4bK-17446-1-0", b"z9hG4bK" + secrets.token_hex(6).encode())  # a new transaction
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        s.settimeout(5)
        s.sendto(data, ringing_server.addr)
        answer = s.recv(65535)
        if answer.startswith(b"SIP/2.0 100"):
            answer = s.recv(65535)
    assert answer.split(b" ", 2)[1] == status, answer[:200]
    if status == b"420":
        assert b"Unsupported: 100rel, timer" in answer
    if status == b"405":
        assert b"Allow: INVITE" in answer


def data_method(data: bytes) -> bytes:
    return data.split(b" ", 1)[0]
