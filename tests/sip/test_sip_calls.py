"""Phone calls against a real `soma serve` (ci models): real sipp scenarios and the project's own SIP phone.

sipp streams an espeak-spoken question as raw G.711 (`rtp_stream`), the server transcribes it, the avatar
answers over RTP, and the conversation is stored. The project's phone (`tests.sip_phone`) is the second
client: it records the reply's RTP so its audio can be re-transcribed and its timing checked.
"""

from __future__ import annotations

import asyncio
import re
import socket
import time
from collections.abc import Iterator
from typing import Any

import httpx
import numpy as np
import pytest
from aiortc.rtp import RtcpPacket, RtcpSrPacket

from models.registry import ModelSet, load_models
from pipeline.audio import resample
from tests.audio_fixtures import spoken
from tests.eventually import eventually_async
from tests.server_api import auth
from tests.sip.conftest import (
    LoopbackCapture,
    SipServer,
    free_udp_port,
    is_root,
    needs_sipp,
    question_8k,
    run_sipp,
)
from tests.sip_phone import SipPhone
from voice_server.sip.rtp import G711, parse_packet

pytestmark = [pytest.mark.models, pytest.mark.slow]


def spoken_8k(text: str) -> np.ndarray:
    return spoken(text, 8000)
VOICED = 300  # |sample| above this is speech, not comfort silence or concealment residue


@pytest.fixture(scope="module")
def asr() -> Iterator[ModelSet]:
    """The ci recogniser in the test process, to re-transcribe what the caller heard."""
    models = load_models(None, "ci", roles=["asr"])
    yield models
    models.close()


async def transcribe(models: ModelSet, pcm8k: np.ndarray) -> str:
    assert models.asr is not None
    audio16 = resample(pcm8k.astype(np.float32) / 32768.0, 8000, 16000).astype(np.float32)
    return (await models.asr.atranscribe_utterance(audio16)).text.strip()


def voiced(pcm: np.ndarray) -> bool:
    return bool(len(pcm)) and int(np.abs(pcm.astype(np.int32)).max()) > VOICED


def conversations(server: SipServer, token: str) -> list[dict[str, Any]]:
    headers = auth(token)
    listing = httpx.get(server.srv.base_url + "/v1/conversations", headers=headers, timeout=10).json()["data"]
    out = []
    for item in listing:
        out.append(httpx.get(f"{server.srv.base_url}/v1/conversations/{item['id']}", headers=headers,
                             timeout=10).json())
    return out


def audit_trail(server: SipServer, token: str) -> list[dict[str, Any]]:
    headers = auth(token)
    trail: list[dict[str, Any]] = httpx.get(server.srv.base_url + "/v1/me/audit", headers=headers).json()["data"]
    return trail


async def reply_heard(phone: SipPhone, since: float, *, quiet_s: float = 1.2, timeout_s: float = 30.0) -> np.ndarray:
    """Wait for the avatar's reply after ``since`` and until it has been quiet for ``quiet_s``."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        loud = [h.at for h in phone.heard if h.at >= since and voiced(h.pcm)]
        if loud and time.monotonic() - loud[-1] > quiet_s:
            break
        await asyncio.sleep(0.1)
    return phone.heard_audio(since)


# ------------------------------------------------------------------------------------------- sipp calls


@needs_sipp
@pytest.mark.parametrize("codec", ["pcmu", "pcma"])
async def test_sipp_call_is_transcribed_answered_and_stored(
    sip_server: SipServer, speech_dir: Any, asr: ModelSet, codec: str
) -> None:
    """A sipp call streaming a spoken question gets a spoken reply on its media port, and the turn is stored."""
    user, token = sip_server.user("sipp")
    media_port = free_udp_port()
    capture = LoopbackCapture(media_port) if is_root() else None
    if capture is not None:
        capture.__enter__()
    try:
        result = await asyncio.to_thread(run_sipp, sip_server, f"speak_{codec}", speech_dir, user=user,
                                         media_port=media_port, pause_ms=9000)
    finally:
        if capture is not None:
            capture.__exit__(None, None, None)
    assert result.returncode == 0, result.stdout + result.errors
    sip_calls = [c for c in conversations(sip_server, token) if c["channel"] == "sip"]
    turns = [t for c in sip_calls for t in c["turns"]]
    assert turns and "france" in turns[0]["user_text"].lower(), turns
    assert turns[0]["reply_text"].strip()
    audited = [(e["action"], e["outcome"], e["resource"]) for e in audit_trail(sip_server, token)]
    assert ("SIP INVITE", "ok", f"conversation_id={sip_calls[0]['id']}") in audited  # the call is audited
    if capture is None:
        pytest.skip("reply RTP was not captured: loopback capture needs root (the phone tests check it)")
    g711 = G711("PCMU" if codec == "pcmu" else "PCMA")
    pcm = np.concatenate([g711.decode(parse_packet(p).payload) for _, p in capture.packets])
    assert voiced(pcm), "no reply audio reached sipp's media port"
    assert await transcribe(asr, pcm), "the reply audio sipp received is not speech"


@needs_sipp
async def test_options_gets_200_with_allow(sip_server: SipServer, speech_dir: Any) -> None:
    """OPTIONS (a trunk's keep-alive) is answered 200 with the Allow list."""
    result = await asyncio.to_thread(run_sipp, sip_server, "options", speech_dir, user="soma")
    assert result.returncode == 0, result.stdout + result.errors


@needs_sipp
async def test_an_offer_without_g711_gets_488(sip_server: SipServer, speech_dir: Any) -> None:
    """An offer with only G.729 is refused with 488 (and the ACK for it is absorbed)."""
    user, _ = sip_server.user("codec")
    result = await asyncio.to_thread(run_sipp, sip_server, "unsupported_codec", speech_dir, user=user)
    assert result.returncode == 0, result.stdout + result.errors


@needs_sipp
async def test_dtmf_pound_interrupts_and_digits_reach_the_conversation(
    sip_server: SipServer, speech_dir: Any
) -> None:
    """RFC 4733 digits from sipp's pcaps: # stops the avatar's reply, then 1 2 reach it as one text turn."""
    if not is_root():
        pytest.skip("sipp's play_pcap_audio opens a raw socket: needs root")
    user, token = sip_server.user("dtmf")
    before = sip_server.metric("soma_sip_dtmf_total")
    result = await asyncio.to_thread(run_sipp, sip_server, "dtmf", speech_dir, user=user, pause_ms=4200)
    assert result.returncode == 0, result.stdout + result.errors
    assert sip_server.metric("soma_sip_dtmf_total") - before == 3
    turns = [t for c in conversations(sip_server, token) if c["channel"] == "sip" for t in c["turns"]]
    assert "france" in turns[0]["user_text"].lower()
    assert turns[0]["interrupted"], "the # key did not stop the reply"
    assert any(t["user_text"] == "the caller pressed 1 2" for t in turns), [t["user_text"] for t in turns]


@needs_sipp
async def test_twenty_simultaneous_sipp_calls(sip_server: SipServer, speech_dir: Any) -> None:
    """20 concurrent sipp calls all complete with RTP both ways; afterwards no call, port or task is left."""
    user, _ = sip_server.user("load")
    await asyncio.sleep(1.0)
    tasks_before = sip_server.metric("soma_asyncio_tasks")
    log_before = len(sip_server.srv.log_text())
    result = await asyncio.to_thread(run_sipp, sip_server, "speak_pcmu", speech_dir, user=user, calls=20, limit=20,
                                     pause_ms=25000, timeout_s=120)
    assert result.returncode == 0, result.stdout + result.errors
    await eventually_async(lambda: sip_server.metric("soma_live_conversations", 'channel="sip"') == 0, timeout_s=15,
                           what="no SIP call left live")

    ended = re.findall(r"ended \(rtp in=(\d+) out=(\d+) voiced_out=(\d+)", sip_server.srv.log_text()[log_before:])
    assert len(ended) == 20, ended
    assert all(int(i) > 50 and int(o) > 50 for i, o, _ in ended), ended
    answered = sum(int(v) > 0 for _, _, v in ended)
    assert answered == 20, f"only {answered}/20 calls heard the avatar speak: {ended}"
    await eventually_async(lambda: sip_server.metric("soma_asyncio_tasks"), until=lambda n: n <= tasks_before + 2,
                           timeout_s=10, what="the call's tasks to end")
    # Thread pools (models, database, default executor) grow lazily up to their bounds during the first burst;
    # a leak would grow with every call, so a second burst must not add threads.
    threads_after_load = sip_server.metric("soma_threads")
    again = await asyncio.to_thread(run_sipp, sip_server, "speak_pcmu", speech_dir, user=user, calls=5, limit=5,
                                    pause_ms=3000)
    assert again.returncode == 0, again.stdout + again.errors
    await eventually_async(lambda: sip_server.metric("soma_live_conversations", 'channel="sip"') == 0, timeout_s=15,
                           what="no SIP call left live")
    assert sip_server.metric("soma_threads") <= threads_after_load
    low, high = sip_server.rtp_ports
    for port in range(low, low + 60, 2):  # every port the calls used is free again
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.bind(("127.0.0.1", port))


# ---------------------------------------------------------------------------------- the project's phone


@pytest.mark.parametrize("codec", ["PCMU", "PCMA"])
async def test_phone_hears_a_reply_it_can_transcribe(sip_server: SipServer, asr: ModelSet, codec: str) -> None:
    """The reply reaches the caller as speech (re-transcribed non-empty), with one marker per talk-spurt start
    and continuous sequence numbers; the conversation is stored on the sip channel."""
    user, token = sip_server.user("phone")
    async with SipPhone(sip_server.addr, codec=codec) as phone:
        rtcp = LoopbackCapture(phone.rtp_port + 1) if is_root() else None
        if rtcp is not None:
            rtcp.__enter__()
        result = await phone.call(user)
        assert result.status == 200 and result.responses[:2] == [100, 180]
        await asyncio.sleep(0.3)
        question = question_8k()
        phone.say(question)
        spoken_until = time.monotonic() + len(question) / 8000
        heard = await reply_heard(phone, spoken_until)
        assert voiced(heard), "no reply audio"
        assert await transcribe(asr, heard)
        seqs = [h.seq for h in phone.heard]
        assert all((b - a) % 65536 == 1 for a, b in zip(seqs, seqs[1:], strict=False)), "sequence gaps"
        first_voiced = next(i for i, h in enumerate(phone.heard) if voiced(h.pcm))
        spurts = [i for i, h in enumerate(phone.heard) if h.marker]
        assert spurts and spurts[0] <= first_voiced, "no marker bit at the start of the reply's talk-spurt"
        assert await phone.bye() == 200
        if rtcp is not None:  # RTCP sender reports every 5 s on RTP port + 1, with a block about our stream
            rtcp.__exit__(None, None, None)
            reports = [p for _, data in rtcp.packets for p in RtcpPacket.parse(data) if isinstance(p, RtcpSrPacket)]
            assert reports and reports[-1].sender_info.packet_count > 100
            assert reports[-1].reports and reports[-1].reports[0].ssrc == phone._rtp_out.ssrc
    await eventually_async(lambda: any(c["turns"] for c in conversations(sip_server, token)), timeout_s=5,
                           what="a stored turn")
    (conv,) = conversations(sip_server, token)
    assert conv["channel"] == "sip" and conv["ended_at"] is not None
    assert "france" in conv["turns"][0]["user_text"].lower() and conv["turns"][0]["heard_text"]


async def test_hanging_up_mid_reply_releases_everything(sip_server: SipServer) -> None:
    """BYE while the avatar speaks: the call's session, port and tasks are gone within seconds; the
    interrupted turn is stored with only what was heard."""
    user, token = sip_server.user("hangup")
    await asyncio.sleep(0.5)
    tasks_before = sip_server.metric("soma_asyncio_tasks")
    async with SipPhone(sip_server.addr) as phone:
        assert (await phone.call(user)).status == 200
        port = phone.remote_rtp[1] if phone.remote_rtp else 0
        phone.say(question_8k())
        await eventually_async(lambda: any(voiced(h.pcm) for h in phone.heard), timeout_s=30,
                               what="the avatar to speak")
        await asyncio.sleep(0.3)
        assert await phone.bye() == 200
    await eventually_async(lambda: sip_server.metric("soma_live_conversations", 'channel="sip"') == 0, timeout_s=10,
                           what="no SIP call left live")
    await eventually_async(lambda: sip_server.metric("soma_asyncio_tasks"), until=lambda n: n <= tasks_before + 1,
                           timeout_s=10, what="the call's tasks to end")
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", port))  # the call's RTP port is released
    turn = conversations(sip_server, token)[0]["turns"][0]
    assert turn["interrupted"] and len(turn["heard_text"]) < len(turn["reply_text"])


async def test_pound_key_stops_the_avatar_within_a_packet_or_two(sip_server: SipServer) -> None:
    """An RFC 4733 # from the phone silences the reply within 150 ms (the playout fade and one frame in flight)."""
    user, _ = sip_server.user("pound")
    async with SipPhone(sip_server.addr) as phone:
        assert (await phone.call(user)).status == 200
        phone.say(question_8k())
        await eventually_async(lambda: any(voiced(h.pcm) for h in phone.heard), timeout_s=30,
                               what="the avatar to speak")
        await asyncio.sleep(0.4)
        pressed = time.monotonic()
        phone.send_dtmf("#")
        await asyncio.sleep(1.5)
        late = [h.at - pressed for h in phone.heard if h.at > pressed + 0.15 and voiced(h.pcm)]
        assert not late, f"voice still arriving {late[:3]} s after #"
        assert await phone.bye() == 200


async def test_info_dtmf_reaches_the_conversation(sip_server: SipServer) -> None:
    """SIP INFO (application/dtmf-relay) digits are the fallback for phones without RFC 4733."""
    user, token = sip_server.user("info")
    async with SipPhone(sip_server.addr) as phone:
        assert (await phone.call(user)).status == 200
        for digit in "42":
            assert (await phone.info_dtmf(digit)) == 200
        await eventually_async(lambda: any(t["user_text"] == "the caller pressed 4 2"
                                           for c in conversations(sip_server, token) for t in c["turns"]),
                               timeout_s=30, what="the INFO digits as a turn")
        assert await phone.bye() == 200


async def test_reinvite_hold_stops_media_and_resume_restarts_it(sip_server: SipServer) -> None:
    """A re-INVITE with a=sendonly (hold) stops our RTP; sendrecv again (resume) restarts it."""
    user, _ = sip_server.user("hold")
    async with SipPhone(sip_server.addr) as phone:
        assert (await phone.call(user)).status == 200
        await asyncio.sleep(0.5)
        assert (await phone.reinvite("sendonly")) == 200
        await asyncio.sleep(0.3)
        held = len(phone.heard)
        await asyncio.sleep(1.0)
        assert len(phone.heard) == held, "RTP kept coming while on hold"
        assert (await phone.reinvite("sendrecv")) == 200
        await asyncio.sleep(1.0)
        assert len(phone.heard) > held + 30
        assert await phone.bye() == 200


async def test_reinvite_switches_the_codec(sip_server: SipServer) -> None:
    """A re-INVITE offering only PCMA moves the call from PCMU to PCMA: our RTP then carries payload type 8."""
    user, _ = sip_server.user("recodec")
    async with SipPhone(sip_server.addr, codec="PCMU") as phone:
        assert (await phone.call(user)).status == 200
        await asyncio.sleep(0.3)
        assert (await phone.reinvite(codec="PCMA")) == 200
        await asyncio.sleep(0.5)
        switched = len(phone.heard)
        await asyncio.sleep(0.5)
        assert len(phone.heard) > switched + 15, "no PCMA packets after the codec change"
        assert await phone.bye() == 200


async def test_talking_over_the_avatar_interrupts_it(sip_server: SipServer) -> None:
    """Barge-in over a phone line: the caller speaks while the avatar talks; its audio stops within 600 ms of
    the interruption's start (VAD onset, over the jitter buffer and 8 kHz audio)."""
    user, _ = sip_server.user("barge")
    async with SipPhone(sip_server.addr) as phone:
        assert (await phone.call(user)).status == 200
        phone.say(spoken_8k("Tell me a long story about a fox who lived by a river."))
        await eventually_async(lambda: any(voiced(h.pcm) for h in phone.heard), timeout_s=30,
                               what="the avatar to speak")
        spoke = next(h.at for h in phone.heard if voiced(h.pcm))

        def mid_sentence() -> bool:
            # Interrupt speech, not a pause between its sentences (a short reply can end within a fixed wait).
            now = time.monotonic()
            return now - spoke > 0.6 and any(now - 0.1 < h.at and voiced(h.pcm) for h in phone.heard[-10:])

        await eventually_async(mid_sentence, timeout_s=20, interval=0.02, what="the avatar mid-sentence")
        interruption = spoken_8k("Wait, stop, I have another question for you.")
        phone.say(interruption)
        started = time.monotonic()
        await asyncio.sleep(len(interruption) / 8000)
        loud = [h.at - started for h in phone.heard if started < h.at < started + len(interruption) / 8000
                and voiced(h.pcm)]
        assert any(started - 0.3 < h.at < started and voiced(h.pcm) for h in phone.heard), "not talking over it"
        stopped_after = max(loud, default=0.0)
        assert stopped_after < 0.6, f"the avatar kept talking {stopped_after:.2f} s into the interruption"
        assert await phone.bye() == 200


async def test_silent_caller_is_hung_up_after_the_media_timeout(sip_server: SipServer) -> None:
    """A caller that sends no RTP at all is sent a BYE after sip_media_timeout_s (6 s on this server)."""
    user, _ = sip_server.user("silent")
    async with SipPhone(sip_server.addr, send_silence=False) as phone:
        assert (await phone.call(user)).status == 200
        started = time.monotonic()
        await asyncio.wait_for(phone.hung_up.wait(), 15)
        assert 5.5 < time.monotonic() - started < 10
        assert any(r.method == "BYE" for r in phone.requests)


async def test_an_invite_without_sdp_gets_our_offer(sip_server: SipServer) -> None:
    """No SDP in the INVITE: the 200 carries our offer (PCMU, PCMA, telephone-event), the ACK the answer."""
    user, _ = sip_server.user("nosdp")
    async with SipPhone(sip_server.addr, codec=None) as phone:
        assert (await phone.call(user)).status == 200
        await eventually_async(lambda: len(phone.heard) > 20, timeout_s=5, what="RTP after the answer in the ACK")
        assert await phone.bye() == 200


async def test_shutdown_hangs_up_live_calls_cleanly(tmp_path: Any) -> None:
    """SIGTERM with a call up: the caller gets a BYE, the server exits 0 and no task outlives its cancellation."""
    from tests.sip.conftest import start_sip_server

    server = start_sip_server(tmp_path, models=True)
    try:
        user, _ = server.user("shutdown")
        async with SipPhone(server.addr) as phone:
            assert (await phone.call(user)).status == 200
            phone.say(question_8k())
            await asyncio.sleep(1.0)
            code = await asyncio.to_thread(server.srv.stop, 60)
            assert phone.hung_up.is_set(), "no BYE from the server at shutdown"
        assert code == 0, server.srv.log_text()[-2000:]
        log = server.srv.log_text()
        assert "did not stop within" not in log and "Traceback" not in log, log[-3000:]
    finally:
        server.srv.stop()
