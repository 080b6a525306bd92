"""Outbound calls: the avatar phones a sipp "phone" through the configured trunk, answers its digest challenge,
speaks first when answered, and hangs up on request."""

from __future__ import annotations

import asyncio
import shutil
import subprocess
import time
from pathlib import Path

import httpx
import numpy as np
import pytest

from tests.server_api import user_client
from tests.sip.conftest import SCENARIOS, LoopbackCapture, SipServer, free_udp_port, is_root, needs_sipp
from voice_server.sip.rtp import G711, parse_packet

pytestmark = [pytest.mark.models, pytest.mark.slow]


def api(server: SipServer, token: str) -> httpx.Client:
    return user_client(server.srv.base_url, token, timeout=10)


@needs_sipp
async def test_the_avatar_calls_out_authenticates_and_speaks_first(sip_server: SipServer, speech_dir: Path) -> None:
    """POST /v1/calls/outbound → INVITE, 401 → digest retry (checked by sipp), 180 → ringing, 200 → answered;
    the avatar's greeting reaches the callee's media port; DELETE → BYE, which sipp answers."""
    user, token = sip_server.user("outbound")
    media_port = free_udp_port()
    sipp = await asyncio.create_subprocess_exec(
        shutil.which("sipp") or "sipp", "-sf", str(SCENARIOS / "uas_auth.xml"), "-p", str(sip_server.outbound_port),
        "-i", "127.0.0.1", "-mp", str(media_port), "-m", "1", "-nostdin", "-timeout", "90s", "-trace_err",
        cwd=speech_dir, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
    )
    capture = LoopbackCapture(media_port) if is_root() else None
    try:
        if capture is not None:
            capture.__enter__()
        await asyncio.sleep(1.0)  # sipp binds its port
        with api(sip_server, token) as http:
            placed = http.post("/v1/calls/outbound", json={"to": "sip:phone@127.0.0.1", "reason": "a check-in"})
            assert placed.status_code == 202, placed.text
            call_id = placed.json()["id"]
            states = []
            deadline = time.monotonic() + 20
            while time.monotonic() < deadline:
                state = http.get(f"/v1/calls/outbound/{call_id}").json()
                states.append(state["state"])
                if state["state"] in ("answered", "failed"):
                    break
                await asyncio.sleep(0.05)
            assert state["state"] == "answered" and state["status"] == 200, (state, sipp.returncode)
            await asyncio.sleep(8.0)  # the avatar greets the callee
            assert http.delete(f"/v1/calls/outbound/{call_id}").status_code == 204
            out, _ = await asyncio.wait_for(sipp.communicate(), 30)
            assert sipp.returncode == 0, out.decode(errors="replace")[-2000:]
            assert http.get(f"/v1/calls/outbound/{call_id}").json()["state"] == "ended"
            conversations = http.get("/v1/conversations").json()["data"]
            turns = http.get(f"/v1/conversations/{conversations[0]['id']}").json()["turns"]
            assert conversations[0]["channel"] == "sip" and turns and turns[0]["reply_text"].strip()
            assert http.post("/v1/calls/outbound", json={"to": "mailto:x"}).status_code in (400, 422)
            assert http.post("/v1/calls/outbound", json={"to": "sip:x@y", "trunk": "nope"}).status_code == 409
    finally:
        if capture is not None:
            capture.__exit__(None, None, None)
        if sipp.returncode is None:
            sipp.kill()
            await sipp.wait()
    if capture is None:
        pytest.skip("the greeting's RTP was not captured: loopback capture needs root")
    g711 = G711("PCMU")
    pcm = np.concatenate([g711.decode(parse_packet(p).payload) for _, p in capture.packets])
    assert int(np.abs(pcm.astype(np.int32)).max()) > 300, "the avatar did not speak first"
