"""Hostile SDP offers against a real server (ci models): each is refused with a clear 4xx JSON error and leaves
no call behind, a call that never connects gives its slot back, and a normal call still connects afterwards.
"""

from __future__ import annotations

import asyncio
import re

import httpx
import numpy as np
from aiortc import RTCSessionDescription

from tests.conftest import ServerProcess, new_user
from tests.eventually import eventually_async
from tests.server.test_webrtc_calls import RATE, Caller, Microphone, calls_url
from tests.server_api import auth, metric

LIVE = 'soma_live_conversations{channel="webrtc"}'


def _lines(sdp: str) -> list[str]:
    return sdp.rstrip("\r\n").split("\r\n")


def _join(lines: list[str]) -> str:
    return "\r\n".join(lines) + "\r\n"


def hostile_variants(good: str) -> dict[str, tuple[str, int, str]]:
    """Offers derived from a real aiortc offer, as the fuzzing run built them: name → (offer, status, code)."""
    lines = _lines(good)
    audio_at = next(i for i, line in enumerate(lines) if line.startswith("m=audio"))
    data_at = next(i for i, line in enumerate(lines) if line.startswith("m=application"))
    audio = lines[audio_at:data_at]
    second = [line.replace("a=mid:0", "a=mid:9") for line in audio]
    return {
        "two audio sections": (_join(lines[:data_at] + second + lines[data_at:]), 400, "unsupported_media"),
        "audio without a=mid": (_join([x for x in lines if x != "a=mid:0"]), 400, "invalid_sdp"),
        "30 KB section": (_join(lines + ["a=x-junk:" + "y" * 30_000]), 413, "request_too_large"),
        "2 KB attribute": (_join([*lines[:data_at], "a=x-junk:" + "y" * 2_000, *lines[data_at:]]), 400, "invalid_sdp"),
        "no fingerprint": (_join([x for x in lines if not x.startswith("a=fingerprint")]), 400, "invalid_sdp"),
        "no ICE password": (_join([x for x in lines if not x.startswith("a=ice-pwd")]), 400, "invalid_sdp"),
        "Unicode digit port": (re.sub(r"m=audio [0-9]+", "m=audio ²", good, count=1), 400, "invalid_sdp"),
        "fmtp without rtpmap": (good.replace("a=rtpmap:0 PCMU/8000", "a=fmtp:0 x=1"), 400, "invalid_sdp"),
        "video section": (_join(lines + ["m=video 9 UDP/TLS/RTP/SAVPF 96", "a=mid:v"]), 400, "unsupported_media"),
        "setup holdconn": (good.replace("a=setup:actpass", "a=setup:holdconn"), 400, "invalid_sdp"),
    }


async def post_offer(client: httpx.AsyncClient, server: ServerProcess, token: str, sdp: str) -> httpx.Response:
    """POST an offer, waiting out the per-user offer rate limit (5 a second) rather than counting it."""
    headers = {**auth(token), "Content-Type": "application/sdp"}
    for _ in range(5):
        r = await client.post(calls_url(server), params={"model": "soma"}, content=sdp.encode(), headers=headers)
        if r.status_code != 429 or r.json()["error"]["code"] != "rate_limited":
            return r
        await asyncio.sleep(1.1)
    return r


async def connects(client: httpx.AsyncClient, server: ServerProcess, token: str) -> None:
    """A normal call connects (``session.created`` on its data channel) and hangs up cleanly."""
    caller = Caller(Microphone(np.zeros(RATE, np.int16)))
    try:
        r = await post_offer(client, server, token, await caller.offer())
        assert r.status_code == 201, r.text
        await caller.pc.setRemoteDescription(RTCSessionDescription(r.text, "answer"))
        await caller.wait_for("session.created", 15)
        hung_up = await client.delete(server.base_url + r.headers["location"], headers=auth(token))
        assert hung_up.status_code == 204
    finally:
        await caller.close()


async def test_hostile_offers_get_4xx_json_errors_and_calls_still_connect(model_server: ServerProcess) -> None:
    """The fuzzing run's offers (two audio sections, no mid, 30 KB, no fingerprint, a '²' port, ...) are each a
    400/413 in the API's error shape with the reason, none leaves a call or a task behind, and a call placed
    afterwards connects."""
    _, token = new_user(model_server, "hostile")
    log_start = len(model_server.log_text())
    template = Caller(Microphone(np.zeros(RATE, np.int16)))
    good = await template.offer()
    await template.close()
    async with httpx.AsyncClient(timeout=30) as client:
        for name, (offer, status, code) in hostile_variants(good).items():
            r = await post_offer(client, model_server, token, offer)
            assert r.status_code == status, (name, r.text)
            error = r.json()["error"]
            assert error["code"] == code and error["type"] == "invalid_request_error", (name, error)
            assert error["message"] and len(error["message"]) < 300, (name, error)
        assert metric(model_server, LIVE) == 0
        await connects(client, model_server, token)
    log = model_server.log_text()[log_start:]
    assert "unhandled error" not in log, "a hostile offer was a 500"
    assert "could not be answered" not in log, "a hostile offer got past the validator into aiortc"


async def test_calls_that_never_connect_give_their_slots_back(model_server: ServerProcess) -> None:
    """Answered calls whose peer never completes ICE (it went away with the answer unread) fill the caller's
    slots only until the connect timeout: then they are released, and the caller can call again."""
    _, token = new_user(model_server, "ghost")
    async with httpx.AsyncClient(timeout=30) as client:
        for _ in range(4):  # the per-user limit
            ghost = Caller(Microphone(np.zeros(RATE, np.int16)))
            r = await post_offer(client, model_server, token, await ghost.offer())
            assert r.status_code == 201, r.text
            await ghost.close()  # never applies the answer
        full = Caller(None)
        full.pc.addTransceiver("audio")
        r = await post_offer(client, model_server, token, await full.offer())
        await full.close()
        assert r.status_code == 429 and r.json()["error"]["code"] == "too_many_calls"
        # CONNECT_TIMEOUT_S (30 s) and the teardown.
        await eventually_async(lambda: metric(model_server, LIVE) == 0, timeout_s=45, interval=0.5,
                               what="calls that never connected to give back their slots")
        await connects(client, model_server, token)
