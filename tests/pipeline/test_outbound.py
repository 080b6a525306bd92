"""The session's outbound lanes: bulk events are dropped when the transport falls behind, control events never."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

from pipeline.frames import LatencyMark, OutputEvent, ReplyDone, ReplyText, TurnState, UserTranscript, is_control
from pipeline.local_transport import LocalTransport
from pipeline.outbound import CONTROL_HIGH_WATER, CONTROL_LOW_WATER, OutboundEvents
from pipeline.session import Session, SessionConfig, SessionModels
from tests.pipeline.fakes import FakeLlm, run_virtual


def _drain(events: OutboundEvents, n: int) -> list[OutputEvent]:
    async def take() -> list[OutputEvent]:
        return [await events.get() for _ in range(n)]

    return run_virtual(take())


def test_full_bulk_lane_never_drops_a_reply_done() -> None:
    """With the bulk lane full, further text deltas are dropped, but the ReplyDone and turn state are queued
    and come out after the deltas that were kept, in emission order."""
    events = OutboundEvents(bulk_limit=3)
    for i in range(10):
        events.put(ReplyText(1, f"w{i} "))
    assert events.put(ReplyDone(1, "all", "all", False, 1.0))
    assert events.put(TurnState("listening"))
    assert events.dropped == 7
    out = _drain(events, 5)
    assert out == [ReplyText(1, "w0 "), ReplyText(1, "w1 "), ReplyText(1, "w2 "),
                   ReplyDone(1, "all", "all", False, 1.0), TurnState("listening")]


def test_control_events_do_not_count_against_the_bulk_bound() -> None:
    """Control events waiting in the stream leave the bulk lane its whole bound."""
    events = OutboundEvents(bulk_limit=2)
    for _ in range(5):
        events.put(TurnState("thinking"))
    assert events.put(ReplyText(1, "a")) and events.put(ReplyText(1, "b"))
    assert not events.put(LatencyMark(1, "first_audio_out", 0.0))
    assert events.control_waiting == 5


def test_control_backpressure_between_water_marks() -> None:
    """Past the high-water mark `room_for_control` waits, until the consumer drained the lane to the low mark."""

    async def scenario() -> None:
        events = OutboundEvents(bulk_limit=8)
        for _ in range(CONTROL_HIGH_WATER):
            events.put(TurnState("speaking"))
        waiter = asyncio.create_task(events.room_for_control())
        for _ in range(CONTROL_HIGH_WATER - CONTROL_LOW_WATER - 1):
            await events.get()
        await asyncio.sleep(0.01)
        assert not waiter.done()
        await events.get()
        await asyncio.sleep(0.01)
        assert waiter.done()
        await events.room_for_control()  # below the high-water mark again: no wait

    run_virtual(scenario())


def test_partial_texts_are_bulk_and_the_rest_control() -> None:
    """Partials with text and latency marks may be dropped; an empty partial (utterance dropped) and the
    final transcript may not."""
    assert not is_control(UserTranscript("hel", final=False, turn_id=1))
    assert is_control(UserTranscript("", final=False, turn_id=1))
    assert is_control(UserTranscript("hello", final=True, turn_id=1))
    assert not is_control(LatencyMark(1, "speech_end", 0.0))


@dataclass
class _StalledTransport(LocalTransport):
    """Takes no event before `resume_at_s` (a client that stopped reading for a while)."""

    resume_at_s: float = 2.0

    async def send(self, event: OutputEvent) -> None:
        loop = asyncio.get_running_loop()
        if loop.time() - self.t0 < self.resume_at_s:
            await asyncio.sleep(self.resume_at_s - (loop.time() - self.t0))
        await super().send(event)


def test_session_with_a_stalled_transport_still_ends_the_reply() -> None:
    """A text session whose transport stalls through a whole reply: deltas beyond the bulk bound are lost,
    but the client still sees the final transcript, the ReplyDone with the full text and the turn states."""
    transport = _StalledTransport(audio_in_rate=None, audio_out_rate=None, duration_s=4)
    transport.type_text(0.1, "Tell me a story.")
    reply = " ".join(f"word{i}" for i in range(40))
    session = Session(transport, SessionModels(llm=FakeLlm(reply, per_token=0.01)),
                      config=SessionConfig(event_queue=4))
    run_virtual(session.run())
    events = [e for _, e in transport.events]
    deltas = [e for e in events if isinstance(e, ReplyText)]
    assert 0 < len(deltas) <= 4
    (done,) = [e for e in events if isinstance(e, ReplyDone)]
    assert done.heard_text == reply
    assert events.index(done) > max(events.index(d) for d in deltas)
    assert [e.state for e in events if isinstance(e, TurnState)] == ["listening", "thinking", "listening"]
    assert [e.text for e in events if isinstance(e, UserTranscript) and e.final] == ["Tell me a story."]
