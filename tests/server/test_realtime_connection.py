"""Realtime protocol state on virtual time with fake models: event order, ids, cancel and barge-in truncation,
manual commits, pacing of client audio. The same classes run under the real server in test_openai_sdk.py."""

from __future__ import annotations

import asyncio
import base64
import json
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pytest

from pipeline.frames import AudioIn, TextIn
from pipeline.session import DefaultContext, Session, SessionModels
from tests.pipeline.fakes import FakeAsr, FakeLlm, FakeTts, FakeVad, run_virtual, tone
from voice_server.realtime import protocol as p
from voice_server.realtime import transport as rt
from voice_server.realtime.connection import RealtimeConnection

LONG = "Once upon a time a little fox lived by a river and every morning she ran along the bank to find stones."
RATE = 24_000


@dataclass
class Harness:
    """A connection wired to a real `Session` with fake models, recording every server event with its time."""

    conn: RealtimeConnection
    session: Session
    events: list[tuple[float, dict[str, Any]]] = field(default_factory=list)

    def types(self) -> list[str]:
        return [e["type"] for _, e in self.events]

    def of(self, kind: str) -> list[dict[str, Any]]:
        return [e for _, e in self.events if e["type"] == kind]

    def first(self, kind: str) -> tuple[float, dict[str, Any]]:
        return next((t, e) for t, e in self.events if e["type"] == kind)

    async def send(self, **event: Any) -> None:
        await self.conn.handle(json.dumps(event))

    async def say(self, text: str) -> None:
        await self.send(type="conversation.item.create", item={"type": "message", "role": "user",
                        "content": [{"type": "input_text", "text": text}]})
        await self.send(type="response.create")

    async def until(self, kind: str, limit_s: float = 30.0, count: int = 1) -> dict[str, Any]:
        """The newest event of ``kind`` once there are ``count`` of them (virtual time: the wait is free)."""
        async with asyncio.timeout(limit_s):
            while True:
                found = self.of(kind)
                if len(found) >= count:
                    return found[-1]
                await asyncio.sleep(0.01)


def run(
    script: Callable[[Harness], Awaitable[None]], *, reply: str = "Sure, happy to help.", texts: tuple[str, ...] = ()
) -> Harness:
    """Run ``script`` against a fresh connection + session on a virtual-time loop."""

    async def main() -> Harness:
        loop = asyncio.get_running_loop()
        holder: list[Harness] = []
        asr = FakeAsr(list(texts))

        async def transcribe(audio: Any) -> str:
            return (await asr.atranscribe_utterance(audio)).text

        def emit(event: dict[str, Any]) -> None:
            holder[0].events.append((loop.time(), event))

        tts = FakeTts()
        conn = RealtimeConnection(model="soma", persona="You are kind.", emit=emit, transcribe=transcribe,
                                  voices={"fast": tts, "quality": None})
        models = SessionModels(llm=FakeLlm(reply), vad=FakeVad(), asr=asr, tts=tts)
        context = DefaultContext("You are kind.")
        session = Session(conn.transport, models, context=context)
        harness = Harness(conn, session)
        holder.append(harness)
        conn.attach(session, context)
        tasks = [asyncio.create_task(session.run()), asyncio.create_task(conn.transport.pump_output(conn.on_audio))]
        await script(harness)
        conn.transport.close()
        await asyncio.wait_for(tasks[0], 10)
        tasks[1].cancel()
        await asyncio.gather(tasks[1], return_exceptions=True)
        return harness

    return run_virtual(main())


def b64(pcm: np.ndarray) -> str:
    return base64.b64encode(pcm.astype("<i2").tobytes()).decode()


def test_text_turn_follows_the_openai_event_order() -> None:
    """A typed message + response.create yields the GA event sequence with consistent ids, text deltas that
    add up to the reply, and the reply in the session's history."""

    async def script(h: Harness) -> None:
        await h.send(type="session.update", session={"type": "realtime", "output_modalities": ["text"]})
        await h.say("Hello there")
        await h.until("response.done")

    h = run(script)
    types = [t for t in h.types() if t != "response.output_text.delta"]
    assert types == [
        "session.created", "session.updated", "conversation.item.added", "conversation.item.done",
        "response.created", "response.output_item.added", "conversation.item.added", "response.content_part.added",
        "response.output_text.done", "response.content_part.done", "response.output_item.done",
        "conversation.item.done", "response.done",
    ]
    deltas = h.of("response.output_text.delta")
    assert "".join(d["delta"] for d in deltas) == "Sure, happy to help."
    done = h.of("response.done")[0]["response"]
    assert done["status"] == "completed" and done["id"] == h.of("response.created")[0]["response"]["id"]
    assert {d["response_id"] for d in deltas} == {done["id"]}
    assert done["output"][0]["content"][0] == {"type": "output_text", "text": "Sure, happy to help."}
    assert list(h.session.history)[-2:] == [
        {"role": "user", "content": "Hello there"},
        {"role": "assistant", "content": "Sure, happy to help."},
    ]
    assert len({e["event_id"] for _, e in h.events}) == len(h.events)


def test_response_cancel_keeps_only_sent_text() -> None:
    """response.cancel mid-reply ends it as cancelled/client_cancelled; the history and response.done hold
    exactly the text that was sent, which is less than the full reply."""

    async def script(h: Harness) -> None:
        await h.send(type="session.update", session={"type": "realtime", "output_modalities": ["text"]})
        await h.say("Tell me a story")
        await h.until("response.output_text.delta")
        await asyncio.sleep(0.1)
        await h.send(type="response.cancel")
        await h.until("response.done")

    h = run(script, reply=LONG)
    sent = "".join(d["delta"] for d in h.of("response.output_text.delta"))
    done = h.of("response.done")[0]["response"]
    assert done["status"] == "cancelled" and done["status_details"]["reason"] == "client_cancelled"
    assert 0 < len(sent) < len(LONG)
    assert done["output"][0]["content"][0]["text"] == sent.strip()
    assert list(h.session.history)[-1] == {"role": "assistant", "content": sent.strip()}


def test_spoken_turn_with_server_vad() -> None:
    """A whole utterance appended at once is fed at real-time pace: speech start/stop, the transcript, then
    a spoken response with audio deltas and its transcript."""

    async def script(h: Harness) -> None:
        await h.send(type="input_audio_buffer.append", audio=b64(tone(1.0, 2000, RATE)))
        await h.until("response.done")

    h = run(script, texts=("What time is it?",))
    t_start, started = h.first("input_audio_buffer.speech_started")
    t_stop, stopped = h.first("input_audio_buffer.speech_stopped")
    assert started["item_id"] == stopped["item_id"]
    assert t_stop - t_start >= 0.8  # paced: a second of audio takes about a second
    completed = h.of("conversation.item.input_audio_transcription.completed")[0]
    assert completed["transcript"] == "What time is it?" and completed["item_id"] == started["item_id"]
    audio = h.of("response.output_audio.delta")
    pcm = np.concatenate([np.frombuffer(base64.b64decode(a["delta"]), "<i2") for a in audio])
    assert len(pcm) / RATE > 0.5 and np.abs(pcm).max() > 1000
    transcript = "".join(d["delta"] for d in h.of("response.output_audio_transcript.delta"))
    assert transcript == "Sure, happy to help."
    done = h.of("response.done")[0]["response"]
    assert done["status"] == "completed"
    assert done["output"][0]["content"][0] == {"type": "output_audio", "transcript": "Sure, happy to help."}


def test_barge_in_cancels_the_response_with_the_heard_transcript() -> None:
    """Speaking over the avatar cancels its response (reason turn_detected) and only the heard words stay."""

    async def script(h: Harness) -> None:
        await h.send(type="input_audio_buffer.append", audio=b64(tone(0.8, 2000, RATE)))
        await h.until("response.output_audio.delta")
        await asyncio.sleep(1.5)
        await h.send(type="input_audio_buffer.append", audio=b64(tone(1.0, 4000, RATE)))
        await h.until("response.done")
        await asyncio.sleep(0.5)

    h = run(script, reply=LONG, texts=("Tell me a story.", "Wait, stop."))
    done = h.of("response.done")[0]["response"]
    assert done["status"] == "cancelled" and done["status_details"]["reason"] == "turn_detected"
    heard = done["output"][0]["content"][0]["transcript"]
    assert heard and LONG.startswith(heard) and len(heard) < len(LONG)
    assert {"role": "assistant", "content": heard} in list(h.session.history)


def test_manual_commit_transcribes_and_waits_for_response_create() -> None:
    """With turn_detection null, audio waits for commit; the transcript becomes a user item; the avatar
    answers only on response.create."""

    async def script(h: Harness) -> None:
        await h.send(type="session.update", session={"type": "realtime", "audio": {"input": {"turn_detection": None}}})
        await h.send(type="input_audio_buffer.append", audio=b64(tone(0.6, 2000, RATE)))
        await asyncio.sleep(2.0)
        assert not h.of("input_audio_buffer.speech_started")  # nothing reaches the VAD
        await h.send(type="input_audio_buffer.commit")
        assert not h.of("response.created")
        await h.send(type="response.create")
        await h.until("response.done")

    h = run(script, texts=("Call my sister.",))
    completed = h.of("conversation.item.input_audio_transcription.completed")[0]
    assert completed["transcript"] == "Call my sister."
    assert h.of("response.done")[0]["response"]["status"] == "completed"
    assert {"role": "user", "content": "Call my sister."} in list(h.session.history)


def test_protocol_misuse_gets_errors_and_the_connection_keeps_working() -> None:
    """Out-of-order events (cancel with nothing active, commit under server VAD, a second response while one
    runs) each get an error; a normal turn then still works."""

    async def script(h: Harness) -> None:
        await h.send(type="session.update", session={"type": "realtime", "output_modalities": ["text"]})
        await h.send(type="response.cancel")
        await h.send(type="input_audio_buffer.commit")
        await h.say("First")
        await h.say("Second")
        await h.until("response.done")

    h = run(script)
    codes = [e["error"]["code"] for e in h.of("error")]
    assert codes == ["response_cancel_not_active", "commit_not_allowed",
                     "conversation_already_has_active_response"]
    assert len(h.of("response.done")) == 1


@pytest.mark.parametrize(
    ("event", "code"),
    [
        ("{", "invalid_json"),
        ("[]", "invalid_event"),
        ('{"type": 3}', "missing_type"),
        ('{"type": "nope"}', "unknown_event"),
        ('{"type": "output_audio_buffer.clear"}', "unsupported_event"),
        ('{"type": "conversation.item.truncate"}', "invalid_value"),
        ('{"type": "conversation.item.truncate", "item_id": "i", "audio_end_ms": -1}', "invalid_value"),
        ('{"type": "conversation.item.delete", "item_id": 7}', "invalid_value"),
        ('{"type": "input_audio_buffer.append", "audio": "***"}', "invalid_audio"),
        ('{"type": "input_audio_buffer.append", "audio": "AAAA"}', "invalid_audio"),
        ('{"type": "input_audio_buffer.append"}', "invalid_value"),
        ('{"type": "conversation.item.create", "item": {"role": "assistant", "content": []}}', "unsupported_item"),
        ('{"type": "conversation.item.create", "item": {"role": "user", "content": [{"type": "input_image"}]}}',
         "unsupported_content"),
        ('{"type": "session.update", "session": {"output_modalities": ["video"]}}', "invalid_value"),
        ('{"type": "session.update", "session": {"audio": {"input": {"format": {"type": "audio/pcmu"}}}}}',
         "unsupported_audio_format"),
        ('{"type": "session.update", "session": {"audio": {"input": {"turn_detection": {"type": "server_vad", '
         '"create_response": false}}}}}', "unsupported_parameter"),
        ('{"type": "session.update", "session": {"audio": {"output": {"voice": "alloy"}}}}', "invalid_value"),
        ('{"type": "response.create", "response": {"tools": [{"type": "function"}]}}', "unsupported_parameter"),
        ('{"type": "response.create", "response": {"conversation": "none"}}', "unsupported_parameter"),
        ('{"type": "session.update", "session": {"tools": [{"type": "function", "name": "f"}]}}',
         "unsupported_parameter"),
        ('{"type": "session.update", "session": {"max_output_tokens": 100}}', "unsupported_parameter"),
        ('{"type": "session.update", "session": {"prompt": {"id": "pmpt_1"}}}', "unsupported_parameter"),
        ('{"type": "response.create", "response": {"input": []}}', "unsupported_parameter"),
        ('{"type": "response.create", "response": {"max_output_tokens": 5}}', "unsupported_parameter"),
        ('{"type": "response.create", "response": {"metadata": {"k": 1}}}', "invalid_value"),
        ('{"type": "response.create", "response": {"instructions": 5}}', "invalid_value"),
        ('{"type": "session.update", "session": {"audio": {"input": {"turn_detection": {"type": "server_vad", '
         '"silence_duration_ms": 10}}}}}', "invalid_value"),
        ('{"type": "session.update", "session": {"audio": {"input": {"turn_detection": {"type": "server_vad", '
         '"idle_timeout_ms": 100}}}}}', "invalid_value"),
        ('{"type": "session.update", "session": {"audio": {"input": {"turn_detection": {"type": "semantic_vad", '
         '"idle_timeout_ms": 5000}}}}}', "unsupported_parameter"),
        ('{"type": "session.update", "session": {"audio": {"input": {"turn_detection": {"type": "semantic_vad", '
         '"eagerness": "eager"}}}}}', "invalid_value"),
        ("[" * 100_000 + "]" * 100_000, "invalid_json"),
    ],
)
def test_parser_rejects_bad_events_with_a_code(event: str, code: str) -> None:
    """Each malformed or unsupported client event maps to a specific error code."""
    with pytest.raises(p.ProtocolError) as info:
        p.parse_client_event(event, p.SessionSettings())
    assert info.value.code == code


def test_parser_keeps_the_event_id_for_errors() -> None:
    """The client's event_id comes back in the error so it can match the failure to its event."""
    with pytest.raises(p.ProtocolError) as info:
        p.parse_client_event('{"type": "response.create", "event_id": "e1", "response": {"x": 1}}', p.SessionSettings())
    assert info.value.event_id == "e1"
    assert p.error_event(info.value)["error"]["event_id"] == "e1"


def test_transport_paces_bulk_audio_and_pads_silence_after_it() -> None:
    """3 s appended at once reach the session at real-time pace (first frames at once, the last ~2.8 s later);
    then 2 s of silence follow so the VAD can end the turn; typed text is not held behind audio."""

    async def main() -> tuple[list[tuple[float, Any]], float]:
        loop = asyncio.get_running_loop()
        transport = rt.RealtimeTransport(lambda e: None, input_rate=RATE, output_rate=RATE)
        assert transport.append_audio(np.full(3 * RATE, 1000, np.int16))
        got: list[tuple[float, Any]] = []

        async def consume() -> None:
            async for frame in transport.inputs():
                got.append((loop.time(), frame))
                if len(got) == 10:
                    transport.push_text("hi")

        task = asyncio.create_task(consume())
        await asyncio.sleep(8.0)
        transport.close()
        await task
        return got, loop.time()

    got, _ = run_virtual(main())
    audio = [(t, f) for t, f in got if isinstance(f, AudioIn)]
    real = [(t, f) for t, f in audio if f.pcm.any()]
    assert len(real) == 150  # 3 s in 20 ms frames
    assert real[0][0] == pytest.approx(0.0) and 2.7 <= real[-1][0] <= 3.0
    padding = [t for t, f in audio if not f.pcm.any()]
    assert 99 <= len(padding) <= 101 and padding[-1] - real[-1][0] <= 2.4  # 2 s (+ lead, jitter grace, float steps)
    text_t = next(t for t, f in got if isinstance(f, TextIn))
    assert text_t < 0.5


def test_transport_refuses_audio_beyond_30_s_ahead() -> None:
    """Appending more than 30 s ahead of real time is refused (bounded memory), without losing what is queued."""
    transport = rt.RealtimeTransport(lambda e: None, input_rate=RATE, output_rate=RATE)
    assert transport.append_audio(np.zeros(29 * RATE, np.int16))
    assert not transport.append_audio(np.zeros(2 * RATE, np.int16))
    assert transport.append_audio(np.zeros(RATE, np.int16))
