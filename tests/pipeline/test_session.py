"""Session behaviour on virtual time with fake models: turn latency, barge-in, false interruptions, text."""

from __future__ import annotations

import numpy as np

from pipeline.frames import AudioIn, ErrorEvent, ReplyDone, ReplyText, UserTranscript
from pipeline.local_transport import LocalTransport
from pipeline.session import Session, SessionModels
from tests.pipeline.fakes import FakeAsr, FakeLlm, FakeTts, FakeVad, run_virtual, tone

LONG_REPLY = (
    "Once upon a time there was a little fox who lived by a river. Every morning she ran along the bank, "
    "looking for shiny stones and talking to the herons about the weather and the fish."
)


def _session(
    transport: LocalTransport, texts: list[str], reply: str = "Sure, happy to help."
) -> tuple[Session, FakeLlm]:
    llm = FakeLlm(reply)
    models = SessionModels(llm=llm, vad=FakeVad(), asr=FakeAsr(texts), tts=FakeTts())
    return Session(transport, models), llm


def _done(transport: LocalTransport) -> list[ReplyDone]:
    return [e for _, e in transport.events if isinstance(e, ReplyDone)]


def test_question_gets_spoken_reply_quickly() -> None:
    """A spoken question gets a reply whose first audio comes within 450 ms of the end of speech (fakes:
    ASR 100 ms, LLM 100 ms, TTS 30 ms), and the heard reply enters the history."""
    transport = LocalTransport(duration_s=6)
    transport.play(1.0, tone(1.0, 2000))
    session, llm = _session(transport, ["What is the weather like?"])
    run_virtual(session.run())
    first_audio = transport.audible_after(2.0)
    assert first_audio is not None and first_audio - 2.0 <= 0.45
    (done,) = _done(transport)
    assert not done.interrupted and done.heard_text == "Sure, happy to help."
    assert list(session.history) == [
        {"role": "user", "content": "What is the weather like?"},
        {"role": "assistant", "content": "Sure, happy to help."},
    ]
    assert llm.prompts[0][-1] == {"role": "user", "content": "What is the weather like?"}
    marks = session.turns[0].marks
    assert {"speech_end", "transcript_final", "llm_first_token", "tts_first_chunk", "first_audio_out"} <= set(marks)


def test_barge_in_stops_audio_within_100ms_and_history_keeps_heard_part() -> None:
    """User speaks 5.0-6.0 s while the bot talks: bot audio stops within 100 ms of 5.0; the history holds
    only the words played before the stop; the interruption becomes the next turn."""
    transport = LocalTransport(duration_s=25)
    transport.play(0.5, tone(0.8, 2000))
    transport.play(5.0, tone(1.0, 4000))
    session, _ = _session(transport, ["Tell me a story.", "Wait, what was the fox called?"], LONG_REPLY)
    run_virtual(session.run())
    stopped = transport.silent_after(5.0)
    assert stopped is not None and stopped - 5.0 <= 0.1
    first, second = _done(transport)[:2]
    assert first.interrupted and 0 < len(first.heard_text) < len(LONG_REPLY)
    assert LONG_REPLY.startswith(first.heard_text.rstrip(".,"))
    history = list(session.history)
    assert history[1] == {"role": "assistant", "content": first.heard_text}
    assert history[2] == {"role": "user", "content": "Wait, what was the fox called?"}
    assert not second.interrupted


def test_cough_does_not_interrupt() -> None:
    """A 0.2 s noise burst with no words pauses the bot briefly; it resumes and finishes the whole reply."""
    transport = LocalTransport(duration_s=14)
    transport.play(0.5, tone(0.8, 2000))
    transport.play(4.0, tone(0.2, 4000))
    session, _ = _session(transport, ["Tell me a story.", ""], LONG_REPLY)
    run_virtual(session.run())
    (done,) = _done(transport)
    assert not done.interrupted
    assert done.heard_text.split() == LONG_REPLY.split()
    assert transport.audible_after(4.4) is not None  # it resumed after the cough


def test_typed_text_session_streams_reply() -> None:
    """A text-only session answers typed messages with text deltas; empty and oversized input get errors."""
    transport = LocalTransport(audio_in_rate=None, audio_out_rate=None, duration_s=3)
    transport.type_text(0.1, "   ")
    transport.type_text(0.2, "x" * 100_000)
    transport.type_text(1.5, "Hello there!")
    session, llm = _session(transport, [])
    run_virtual(session.run())
    codes = [e.code for _, e in transport.events if isinstance(e, ErrorEvent)]
    assert codes[:2] == ["empty_text", "text_too_long"]
    assert len(llm.prompts[0][-1]["content"]) == session.config.max_text_chars
    deltas = "".join(e.delta for _, e in transport.events if isinstance(e, ReplyText) and e.reply_id == 2)
    assert deltas == "Sure, happy to help."
    assert [d.heard_text for d in _done(transport)][-1] == "Sure, happy to help."


def test_bad_audio_reports_error_and_session_continues() -> None:
    """Audio at an unsupported rate yields an error event; the next good audio is still understood."""
    transport = LocalTransport(duration_s=5)
    transport.play(1.0, tone(1.0, 2000))
    transport.inject(0.2, AudioIn(np.zeros(70, np.int16), 7000))
    transport.inject(0.3, AudioIn(np.zeros((2, 10), np.int16), 16000))
    transport.inject(0.4, AudioIn(np.zeros(100, np.float32), 16000))  # type: ignore[arg-type]
    session, _ = _session(transport, ["Are you there?"])
    run_virtual(session.run())
    codes = [e.code for _, e in transport.events if isinstance(e, ErrorEvent)]
    assert codes.count("bad_audio") == 3
    finals = [e.text for _, e in transport.events if isinstance(e, UserTranscript) and e.final]
    assert finals == ["Are you there?"]


def test_busy_recogniser_sheds_partials_but_not_the_final() -> None:
    """While the shared ASR has a backlog (other sessions decoding), no partial decodes are started during a
    3 s utterance; the end-of-speech decode still runs and the turn is answered."""
    for backlog, expect_partials in [(0, True), (1, False)]:
        transport = LocalTransport(duration_s=7)
        transport.play(1.0, tone(3.0, 2000))
        session, _ = _session(transport, ["Tell me about the weather tomorrow."])
        asr = session.models.asr
        assert isinstance(asr, FakeAsr)
        asr.backlog = backlog
        run_virtual(session.run())
        # Partials while the user is still speaking (before 4.0 s); the end-of-speech decode comes after.
        partials = [t for t, e in transport.events if isinstance(e, UserTranscript) and not e.final and t < 4.0]
        assert bool(partials) == expect_partials, (backlog, partials)
        assert asr.calls >= 1 and len(_done(transport)) == 1


def test_turn_latencies_reach_prometheus() -> None:
    """Each finished turn's marks become `soma_turn_latency_seconds` observations per stage, including the
    barge-in stage for an interrupted reply."""
    from voice_server.metrics import Metrics

    metrics = Metrics()
    transport = LocalTransport(duration_s=9)
    transport.play(1.0, tone(1.0, 2000))
    transport.play(3.0, tone(1.0, 4000))  # talks over the (long) reply to the first question
    llm = FakeLlm(LONG_REPLY)
    asr = FakeAsr(["Tell me a story.", "Stop there."])
    models = SessionModels(llm=llm, vad=FakeVad(), asr=asr, tts=FakeTts())
    run_virtual(Session(transport, models, observer=metrics).run())
    text = metrics.render().decode()
    for stage in ("transcript_final", "llm_first_token", "tts_first_chunk", "voice_to_voice", "barge_in"):
        assert f'soma_turn_latency_seconds_count{{channel="other",stage="{stage}"}}' in text, stage
    assert 'soma_turn_latency_seconds_bucket{channel="other",le="0.1",stage="barge_in"} 1.0' in text  # within 100 ms
