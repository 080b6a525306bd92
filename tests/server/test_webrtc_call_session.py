"""WebRTC calls placed with a session config, as the official ``openai`` SDK sends it, against a real
``soma serve`` over HTTPS (its generated certificate) with the ci models.

``client.realtime.calls.create(sdp=…, session={…})`` posts a ``multipart/form-data`` form (fields ``sdp`` and
``session``); without ``session`` it posts the bare offer as ``application/sdp``. A real aiortc peer completes
each call, so what reaches the ``oai-events`` data channel is what a browser would see.
"""

from __future__ import annotations

import asyncio
import json
import secrets
import ssl
from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx
import numpy as np
import openai
import pytest
from aiortc import RTCSessionDescription

from tests.conftest import ServerProcess, start_server
from tests.server.test_webrtc_calls import RATE, Caller, Microphone, typed_turn
from tests.server_api import auth
from voice_server.api.call_routes import MAX_FORM_BYTES
from voice_server.realtime.protocol import MAX_INSTRUCTIONS_CHARS
from voice_server.webrtc.offer import MAX_OFFER_BYTES
from voice_server.webrtc.session_config import MAX_SESSION_BYTES

pytestmark = [pytest.mark.models, pytest.mark.slow]

INSTRUCTIONS = "You are Quill, a terse assistant. Answer in one short sentence."


@pytest.fixture(scope="module")
def tls_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """Soma's default deployment: HTTPS with the certificate it generated, the ci models, open sign-up."""
    server = start_server(tmp_path_factory.mktemp("tls-calls"), tls=True, models=True, SOMA_SIGNUP="open",
                          timeout=180)
    yield server
    server.stop()


@pytest.fixture
def tls(tls_server: ServerProcess) -> ssl.SSLContext:
    """Trust in exactly the server's own certificate."""
    return ssl.create_default_context(cafile=str(tls_server.data_dir / "tls" / "cert.pem"))


@pytest.fixture
async def sdk(tls_server: ServerProcess, tls: ssl.SSLContext) -> AsyncIterator[tuple[openai.AsyncOpenAI, str]]:
    """The official async client of a fresh user, trusting the server's certificate; and the user's token."""
    account = {"username": "rtcsdk" + secrets.token_hex(4), "password": "password-" + secrets.token_hex(6)}
    async with httpx.AsyncClient(verify=tls, timeout=30) as http:
        signup = await http.post(tls_server.base_url + "/v1/auth/signup", json=account)
    token = signup.json()["token"]["access_token"]
    client = openai.AsyncOpenAI(base_url=tls_server.base_url + "/v1", api_key=token, max_retries=0, timeout=60,
                                http_client=openai.DefaultAsyncHttpxClient(verify=tls))
    yield client, token
    await client.close()


def live_calls(server: ServerProcess, tls: ssl.SSLContext) -> float:
    text = httpx.get(server.base_url + "/metrics", verify=tls, timeout=10).text
    prefix = 'soma_live_conversations{channel="webrtc"}'
    return sum(float(line.split()[-1]) for line in text.splitlines() if line.startswith(prefix))


def webrtc_conversations(server: ServerProcess, tls: ssl.SSLContext, token: str) -> list[dict[str, Any]]:
    r = httpx.get(server.base_url + "/v1/conversations", headers=auth(token), verify=tls,
                  timeout=10)
    return [c for c in r.json()["data"] if c["channel"] == "webrtc"]


async def hang_up(server: ServerProcess, tls: ssl.SSLContext, token: str, location: str) -> None:
    async with httpx.AsyncClient(verify=tls, timeout=30) as client:
        r = await client.delete(server.base_url + location, headers=auth(token))
        assert r.status_code == 204, r.text


async def test_the_sdks_session_config_shapes_the_call_from_its_first_event(
    tls_server: ServerProcess, tls: ssl.SSLContext, sdk: tuple[openai.AsyncOpenAI, str]
) -> None:
    """``calls.create(sdp=, session=)``: the call is answered, the data channel opens with ``session.created``
    then ``session.updated`` carrying the config — before the reply to an event the client sent the moment
    the channel opened — and a typed turn is answered as text, as configured."""
    client, token = sdk
    caller = Caller(Microphone(np.zeros(RATE, np.int16)))
    # Sent the instant the channel opens: the config from the offer must still be applied first.
    early = {"type": "session.update", "session": {"type": "realtime", "audio": {"output": {"voice": "quality"}}}}
    caller.channel.on("open", lambda: caller.channel.send(json.dumps(early)))
    session = {"type": "realtime", "model": "soma", "output_modalities": ["text"], "instructions": INSTRUCTIONS}
    try:
        raw = await client.realtime.calls.with_raw_response.create(
            sdp=await caller.offer(), session=session, extra_query={"model": "soma"}  # type: ignore[arg-type]
        )
        assert raw.status_code == 201
        location = raw.headers["location"]
        assert location.startswith("/v1/realtime/calls/rtc_")
        answer = raw.parse()  # the SDK's binary content: the SDP answer
        assert raw.headers["content-type"].startswith("application/sdp") and answer.text.startswith("v=0")
        await caller.pc.setRemoteDescription(RTCSessionDescription(answer.text, "answer"))

        async with asyncio.timeout(15):
            while sum(e["type"] == "session.updated" for e in caller.events) < 2:
                caller.got_event.clear()
                await caller.got_event.wait()
        created, configured = caller.events[:2]
        by_client = [e for e in caller.events if e["type"] == "session.updated"][1]
        assert created["type"] == "session.created" and created["session"]["output_modalities"] == ["audio"]
        assert configured["type"] == "session.updated"
        assert configured["session"]["output_modalities"] == ["text"]
        assert configured["session"]["instructions"] == INSTRUCTIONS
        assert configured["session"]["audio"]["output"]["voice"] == "avatar"  # the voice its person chose
        assert configured["session"]["id"] == created["session"]["id"]
        # The client's own update came after, on top of the config (a session.update changes what it names).
        assert by_client["type"] == "session.updated" and by_client["session"]["audio"]["output"]["voice"] == "quality"
        assert by_client["session"]["output_modalities"] == ["text"]
        assert not [e for e in caller.events if e["type"] == "error"]

        done = await typed_turn(caller, "Hello, who are you?")
        assert done["response"]["status"] == "completed"
        assert done["response"]["output_modalities"] == ["text"]
        assert done["response"]["output"][0]["content"][0]["type"] == "output_text"
        kinds = {e["type"] for e in caller.events}
        assert "response.output_text.delta" in kinds and "response.output_text.done" in kinds
        assert not kinds & {"response.output_audio_transcript.delta", "output_audio_buffer.started"}
        await hang_up(tls_server, tls, token, location)
    finally:
        await caller.close()
    (conversation,) = webrtc_conversations(tls_server, tls, token)
    assert conversation["turns"] == 1


async def test_the_sdk_without_session_sends_the_plain_offer(
    tls_server: ServerProcess, tls: ssl.SSLContext, sdk: tuple[openai.AsyncOpenAI, str]
) -> None:
    """``calls.create(sdp=)`` alone posts ``application/sdp`` as before: the call starts with the default
    session and no ``session.updated``."""
    client, token = sdk
    caller = Caller(Microphone(np.zeros(RATE, np.int16)))
    try:
        raw = await client.realtime.calls.with_raw_response.create(sdp=await caller.offer())
        assert raw.status_code == 201
        await caller.pc.setRemoteDescription(RTCSessionDescription(raw.parse().text, "answer"))
        created = await caller.wait_for("session.created", 15)
        assert created["session"]["output_modalities"] == ["audio"]
        done = await typed_turn(caller, "Hi!")
        assert done["response"]["output_modalities"] == ["audio"]
        assert [e["type"] for e in caller.events if e["type"].startswith("session.")] == ["session.created"]
        await hang_up(tls_server, tls, token, raw.headers["location"])
    finally:
        await caller.close()


async def test_an_invalid_session_config_creates_nothing(
    tls_server: ServerProcess, tls: ssl.SSLContext, sdk: tuple[openai.AsyncOpenAI, str]
) -> None:
    """A config the data channel would refuse as a ``session.update`` fails the offer with that refusal's
    code (400, OpenAI's error shape), and no call or conversation is left behind."""
    client, token = sdk
    caller = Caller(Microphone(np.zeros(RATE, np.int16)))
    offer = await caller.offer()  # a good offer: only the config is wrong
    cases: list[tuple[dict[str, Any], str, str]] = [
        ({"type": "realtime", "output_modalities": ["video"]}, "invalid_value", "session.output_modalities"),
        ({"type": "realtime", "audio": {"output": {"voice": "alloy"}}}, "invalid_value", "session.audio.output.voice"),
        ({"type": "realtime", "audio": {"input": {"format": {"type": "audio/pcmu"}}}}, "unsupported_audio_format",
         "session.audio.input.format.type"),
        ({"type": "realtime", "instructions": 42}, "invalid_value", "session.instructions"),
        # Within the parser's 32,000 characters but over the token limit: refused before the call, too.
        ({"type": "realtime", "instructions": "lorem ipsum " * 2500}, "text_too_long", "session.instructions"),
    ]
    try:
        for session, code, param in cases:
            with pytest.raises(openai.BadRequestError) as info:
                await client.realtime.calls.create(sdp=offer, session=session)  # type: ignore[arg-type]
            assert info.value.status_code == 400
            body = info.value.body
            assert isinstance(body, dict)
            assert (body["type"], body["code"], body["param"]) == ("invalid_request_error", code, param), body
            assert body["message"]
        assert live_calls(tls_server, tls) == 0
        assert webrtc_conversations(tls_server, tls, token) == []
    finally:
        await caller.close()


async def test_malformed_and_oversized_forms_are_refused(
    tls_server: ServerProcess, tls: ssl.SSLContext, sdk: tuple[openai.AsyncOpenAI, str]
) -> None:
    """Forms that do not parse, hold a file or an unknown field, lack the offer, carry a session config that is
    not a JSON object, or exceed a bound get a 400/413 in the error shape; other content types a 415 that
    names both accepted ones. None of them leaves a call behind."""
    _, token = sdk
    caller = Caller(Microphone(np.zeros(RATE, np.int16)))
    offer = await caller.offer()
    url = tls_server.base_url + "/v1/realtime/calls"
    bearer = auth(token)
    good_session = json.dumps({"type": "realtime"})

    def fields(**parts: tuple[str | None, str, str]) -> dict[str, tuple[str | None, str, str]]:
        return parts

    form_cases: list[tuple[Any, int, str]] = [
        (fields(session=(None, good_session, "application/json")), 400, "missing_sdp"),
        (fields(sdp=("offer.sdp", offer, "application/sdp")), 400, "invalid_multipart"),  # a file part
        (fields(sdp=(None, offer, "application/sdp"), voice=(None, "x", "text/plain")), 400, "invalid_multipart"),
        (fields(sdp=(None, offer, "application/sdp"), session=(None, "[1, 2]", "application/json")), 400,
         "invalid_session"),
        (fields(sdp=(None, offer, "application/sdp"), session=(None, "{not json", "application/json")), 400,
         "invalid_session"),
        (fields(sdp=(None, offer, "application/sdp"), session=(None, "1" * 5000, "application/json")), 400,
         "invalid_session"),
        (fields(sdp=(None, offer, "application/sdp"),
                session=(None, json.dumps({"instructions": "x" * MAX_SESSION_BYTES}), "application/json")), 413,
         "request_too_large"),
        (fields(sdp=(None, "v=0\r\n" + "a=x\r\n" * (MAX_OFFER_BYTES // 5), "application/sdp")), 413,
         "request_too_large"),
        (fields(sdp=(None, "hello", "application/sdp"), session=(None, good_session, "application/json")), 400,
         "invalid_sdp"),
    ]
    raw_cases: list[tuple[bytes, str, int, str]] = [
        (b"--b\r\nnot a part", "multipart/form-data", 400, "invalid_multipart"),  # no boundary parameter
        (b"--b\r\nContent-Disposition: form-data\r\n\r\nv=0\r\n--b--\r\n", "multipart/form-data; boundary=b",
         400, "invalid_multipart"),  # a part without a name
        (b"--b\r\nContent-Disposition: form-data; name=\"sdp\"\r\n\r\n\xff\xfe\r\n--b--\r\n",
         "multipart/form-data; boundary=b", 400, "invalid_multipart"),  # not UTF-8
        (b"--b\r\n" + b"x" * (MAX_FORM_BYTES + 1), "multipart/form-data; boundary=b", 413, "request_too_large"),
        (offer.encode(), "text/plain", 415, "unsupported_media_type"),
        (b"sdp=v%3D0", "application/x-www-form-urlencoded", 415, "unsupported_media_type"),
    ]
    try:
        async with httpx.AsyncClient(verify=tls, timeout=30) as http:
            for files, status, code in form_cases:
                r = await http.post(url, params={"model": "soma"}, files=files, headers=bearer)
                assert r.status_code == status, (list(files), r.text)
                error = r.json()["error"]
                assert error["code"] == code and error["message"], (list(files), error)
            for body, content_type, status, code in raw_cases:
                r = await http.post(url, params={"model": "soma"}, content=body,
                                    headers={**bearer, "Content-Type": content_type})
                assert r.status_code == status, (content_type, body[:40], r.text)
                assert r.json()["error"]["code"] == code, r.text
                if status == 415:
                    assert "application/sdp" in r.json()["error"]["message"]
                    assert "multipart/form-data" in r.json()["error"]["message"]
        assert live_calls(tls_server, tls) == 0
        assert webrtc_conversations(tls_server, tls, token) == []
    finally:
        await caller.close()


@pytest.fixture(autouse=True)
def _quiet_aiortc(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level("WARNING", logger="aioice")


def test_the_bounds_hold_a_full_session_config() -> None:
    """A config with the longest instructions the parser accepts, every character escaped as ``\\uXXXX``, fits
    the session bound, and the form bound holds both fields at theirs."""
    longest = {"type": "realtime", "instructions": "\u4e2d" * MAX_INSTRUCTIONS_CHARS, "output_modalities": ["text"]}
    assert len(json.dumps(longest)) < MAX_SESSION_BYTES - 1024
    assert MAX_FORM_BYTES > MAX_OFFER_BYTES + MAX_SESSION_BYTES
