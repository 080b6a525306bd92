"""The voice pipeline end to end with the real ci models, through the in-process transport at real time."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest

from models.registry import ModelSet
from pipeline.audio import resample, to_float
from pipeline.frames import ReplyDone, UserTranscript
from pipeline.llm import ConversationLlm
from pipeline.local_transport import LocalTransport
from pipeline.session import Session, SessionModels
from tests.audio_fixtures import spoken
from tests.pipeline.conftest import real_session, words

pytestmark = pytest.mark.models


async def test_spoken_question_gets_spoken_answer(ci_models: ModelSet) -> None:
    """An espeak question played at real time is transcribed, answered by the LLM, and spoken back; the
    reply audio re-transcribes to words."""
    transport = LocalTransport(audio_in_rate=16_000, audio_out_rate=24_000, duration_s=9)
    transport.play(0.5, spoken("What is the capital of France?"))
    session = real_session(ci_models, transport)
    await session.run()
    finals = [e.text for _, e in transport.events if isinstance(e, UserTranscript) and e.final]
    assert finals and {"capital", "france"} <= set(words(finals[0])), finals
    done = [e for _, e in transport.events if isinstance(e, ReplyDone)]
    assert done and done[0].text.strip(), done
    out = transport.output
    assert np.abs(out).max() > 1000
    assert ci_models.asr is not None
    heard = await ci_models.asr.atranscribe(resample(to_float(out), 24_000, 16_000))
    assert words(heard.text), "the reply audio should contain speech"
    marks = session.turns[0].marks
    assert marks["speech_end"] <= marks["transcript_final"] <= marks["llm_first_token"] <= marks["first_audio_out"]


async def test_barge_in_with_real_models_keeps_only_heardwords(ci_models: ModelSet) -> None:
    """A second spoken utterance that starts while the bot talks interrupts it; the history keeps only the
    words that were played, and the interruption is answered as the next turn."""
    transport = LocalTransport(audio_in_rate=16_000, audio_out_rate=24_000, duration_s=16)
    transport.play(0.5, spoken("Please tell me a long story about a brave little dragon."))
    transport.play_after_bot_starts(1.2, spoken("Stop. What is the weather like today?"))
    session = real_session(ci_models, transport)
    await session.run()
    done = [e for _, e in transport.events if isinstance(e, ReplyDone)]
    assert done and done[0].interrupted, done
    first = done[0]
    assert words(first.heard_text) == words(first.text)[: len(words(first.heard_text))]
    assert len(words(first.heard_text)) < len(words(first.text))
    history = list(session.history)
    assert history[1]["role"] == "assistant" and history[1]["content"] == first.heard_text
    finals = [e.text for _, e in transport.events if isinstance(e, UserTranscript) and e.final]
    # "Stop." may end a turn of its own; the question after it then either follows as another turn or, if it
    # starts before that turn's reply is audible, continues it (the core merges them). Either way it is heard.
    assert any("weather" in words(text) for text in finals[1:]), finals
    stopped = [t.marks for t in session.turns if "audio_stopped" in t.marks]
    assert stopped and stopped[0]["audio_stopped"] - stopped[0]["barge_in_onset"] < 0.3


async def test_silence_and_noise_produce_no_turn(ci_models: ModelSet) -> None:
    """Silence and white noise never become a user turn or a reply."""
    transport = LocalTransport(audio_in_rate=16_000, audio_out_rate=24_000, duration_s=4)
    rng = np.random.default_rng(0)
    transport.play(1.0, (rng.standard_normal(16_000) * 300).astype(np.int16))
    session = real_session(ci_models, transport)
    await session.run()
    assert not [e for _, e in transport.events if isinstance(e, ReplyDone)]
    await asyncio.sleep(0)


async def test_quality_voice_speaks_a_typed_turn(ci_models: ModelSet) -> None:
    """Kokoro (the quality voice) behind the same TTS interface: a typed message gets a spoken reply, resampled
    from Kokoro's 24 kHz to a 48 kHz transport, and the heard text is the whole reply."""
    assert ci_models.llm and ci_models.tts_quality
    transport = LocalTransport(audio_in_rate=None, audio_out_rate=48_000, duration_s=14)
    transport.type_text(0.2, "Hello! How are you today?")
    session = Session(transport, SessionModels(llm=ConversationLlm(ci_models.llm), tts=ci_models.tts_quality))
    await session.run()
    done = [e for _, e in transport.events if isinstance(e, ReplyDone)]
    assert done and not done[0].interrupted and done[0].heard_text == done[0].text.strip(), done
    out = transport.output
    assert np.abs(out).max() > 1000
    assert ci_models.asr is not None
    heard = await ci_models.asr.atranscribe(resample(to_float(out), 48_000, 16_000))
    assert words(heard.text), "the reply audio should contain speech"
