"""DTMF in the pipeline session (virtual time, fake models): # interrupts, digits become one text turn."""

from __future__ import annotations

from pipeline.frames import Dtmf, ReplyDone, UserTranscript
from pipeline.local_transport import LocalTransport
from pipeline.session import Session, SessionModels
from tests.pipeline.fakes import FakeAsr, FakeLlm, FakeTts, FakeVad, run_virtual, tone

LONG_REPLY = (
    "Once upon a time there was a little fox who lived by a river. Every morning she ran along the bank, "
    "looking for shiny stones and talking to the herons about the weather and the fish."
)


def _run(transport: LocalTransport, texts: list[str]) -> Session:
    models = SessionModels(llm=FakeLlm(LONG_REPLY), vad=FakeVad(), asr=FakeAsr(texts), tts=FakeTts())
    session = Session(transport, models)
    run_virtual(session.run())
    return session


def test_pound_stops_the_reply_within_100ms_and_keeps_what_was_heard() -> None:
    """# at 4.0 s while the avatar speaks: its audio stops by 4.1 s and only the heard words enter history."""
    transport = LocalTransport(duration_s=8)
    transport.play(0.5, tone(0.8, 2000))
    transport.inject(4.0, Dtmf("#"))
    session = _run(transport, ["Tell me a story."])
    stopped = transport.silent_after(4.0)
    assert stopped is not None and stopped - 4.0 <= 0.1
    (done,) = [e for _, e in transport.events if isinstance(e, ReplyDone)]
    assert done.interrupted and 0 < len(done.heard_text) < len(LONG_REPLY)
    assert list(session.history)[1] == {"role": "assistant", "content": done.heard_text}


def test_digits_typed_together_become_one_turn() -> None:
    """1, 2, 3 pressed 0.3 s apart reach the conversation once, 1.5 s after the last, as one text turn."""
    transport = LocalTransport(duration_s=6)
    for i, digit in enumerate("123"):
        transport.inject(0.5 + 0.3 * i, Dtmf(digit))
    session = _run(transport, [])
    finals = [(t, e.text) for t, e in transport.events if isinstance(e, UserTranscript) and e.final]
    assert [text for _, text in finals] == ["the caller pressed 1 2 3"]
    assert abs(finals[0][0] - (1.1 + session.config.dtmf_pause_s)) < 0.1


def test_pound_sends_the_digits_typed_before_it_at_once() -> None:
    """4, 2, # : the entry ends at # (no wait for the pause)."""
    transport = LocalTransport(duration_s=4)
    for i, digit in enumerate("42#"):
        transport.inject(0.5 + 0.2 * i, Dtmf(digit))
    _run(transport, [])
    finals = [(t, e.text) for t, e in transport.events if isinstance(e, UserTranscript) and e.final]
    assert finals and finals[0][1] == "the caller pressed 4 2" and finals[0][0] < 1.0
