"""Bad and unusual input through the real ci models: other sample rates, clipping, a 60 s monologue."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest

from models.registry import ModelSet
from pipeline.audio import to_float, to_int16
from pipeline.frames import ErrorEvent, ReplyDone, UserTranscript
from pipeline.local_transport import LocalTransport
from tests.audio_fixtures import spoken
from tests.pipeline.conftest import real_session, words

pytestmark = pytest.mark.models

QUESTION = "What is the capital of France?"
MONOLOGUE_PARTS = [
    "I went to the market this morning and I bought some apples and some bread and some cheese",
    "and then I walked over to the park where I met my old friend from school",
    "and we talked for a long time about our families and our jobs and the places we have been",
]


def _finals(transport: LocalTransport) -> list[str]:
    return [e.text for _, e in transport.events if isinstance(e, UserTranscript) and e.final]


async def test_phone_and_browser_rates_are_resampled_at_the_edge(ci_models: ModelSet) -> None:
    """The same question at 8 kHz (phone) and 48 kHz (browser) is understood and answered; both sessions run at
    once on the shared models."""
    transports = []
    for rate in (8_000, 48_000):
        transport = LocalTransport(audio_in_rate=rate, audio_out_rate=rate, duration_s=9)
        transport.play(0.5, spoken(QUESTION, rate=rate))
        transports.append(transport)
    await asyncio.gather(*(real_session(ci_models, t).run() for t in transports))
    for transport in transports:
        finals = _finals(transport)
        assert finals and {"capital", "france"} <= set(words(finals[0])), (transport.audio_in_rate, finals)
        assert [e for _, e in transport.events if isinstance(e, ReplyDone)], transport.audio_in_rate
        assert np.abs(transport.output).max() > 1000


async def test_clipped_audio_is_understood(ci_models: ModelSet) -> None:
    """A question recorded far too loud (hard-clipped at full scale) still gives a turn with its words."""
    loud = to_int16(np.clip(to_float(spoken(QUESTION)) * 12.0, -1.0, 1.0))
    assert (np.abs(loud.astype(np.int32)) >= 32767).mean() > 0.05  # really clipped
    transport = LocalTransport(audio_in_rate=16_000, audio_out_rate=24_000, duration_s=8)
    transport.play(0.5, loud)
    await real_session(ci_models, transport).run()
    finals = _finals(transport)
    assert finals and "france" in words(" ".join(finals)), finals
    assert not [e for _, e in transport.events if isinstance(e, ErrorEvent)]


@pytest.mark.slow
async def test_sixty_second_monologue_keeps_bounded_buffer(ci_models: ModelSet) -> None:
    """A 60 s monologue with only short breathing pauses never buffers more than one ASR window of audio,
    and its transcript keeps words from its beginning and its end."""
    pcm = spoken(", and ".join(MONOLOGUE_PARTS * 4))
    assert len(pcm) / 16_000 >= 60
    transport = LocalTransport(audio_in_rate=16_000, audio_out_rate=24_000, duration_s=len(pcm) / 16_000 + 6)
    transport.play(0.5, pcm)
    session = real_session(ci_models, transport)
    peak = 0.0

    async def watch() -> None:
        nonlocal peak
        while not transport.closed.is_set():
            peak = max(peak, session.utterance_s)
            await asyncio.sleep(0.1)

    watcher = asyncio.create_task(watch())
    await session.run()
    await watcher
    assert 20.0 < peak <= 24.0 + 2.0, peak  # max_window_s plus what arrives during one decode
    said = set(words(" ".join(_finals(transport))))
    assert {"market", "apples"} <= said and {"families", "jobs"} <= said, said
