"""Background model work steps aside for live calls: `CallsFirstAsr` holds an import's next window and
`CallsFirstLlm` a proactive message's generation while a conversation is live (a model's single worker must
never make a caller wait behind a background job)."""

from __future__ import annotations

import asyncio

import numpy as np
import numpy.typing as npt

from models.asr import Transcript
from voice_server.avatar.calls_first import CallsFirstAsr, CallsFirstLlm
from voice_server.live_calls import LiveCalls


class Recorder:
    """A speech model that records when each window reached it."""

    def __init__(self) -> None:
        self.at: list[float] = []

    async def atranscribe(self, audio: npt.NDArray[np.float32], *, language: str | None = "en") -> Transcript:
        self.at.append(asyncio.get_running_loop().time())
        return Transcript(text="words", segments=(), duration=len(audio) / 16_000, language=language or "en")


async def settle() -> None:
    """Let every ready task run until it waits again (no clock involved)."""
    for _ in range(5):
        await asyncio.sleep(0)


async def test_a_window_waits_for_the_live_conversation_to_end() -> None:
    """An import window reaches the speech model only once the live conversation has ended."""
    model = Recorder()
    live = LiveCalls()
    live.opened()
    asr = CallsFirstAsr(model, live)
    window = asyncio.create_task(asr.atranscribe(np.zeros(16_000, np.float32)))
    await settle()
    assert model.at == [] and not window.done()  # held while the call is live
    live.closed()
    result = await asyncio.wait_for(window, 1)
    assert result.text == "words" and len(model.at) == 1


async def test_an_idle_open_conversation_holds_each_window_only_up_to_the_bound() -> None:
    """A conversation that stays live (left open, idle) delays each import window by ``max_wait_s`` at most:
    the import keeps stepping aside, window by window, but always makes progress."""
    model = Recorder()
    live = LiveCalls()
    live.opened()  # and never closed
    asr = CallsFirstAsr(model, live, max_wait_s=0.1)
    loop = asyncio.get_running_loop()
    started = loop.time()
    for _ in range(3):
        await asyncio.wait_for(asr.atranscribe(np.zeros(160, np.float32)), 1)
    gaps = [b - a for a, b in zip([started, *model.at], model.at, strict=False)]
    assert len(model.at) == 3 and all(0.09 <= gap < 0.5 for gap in gaps), gaps


async def test_no_live_conversation_no_wait() -> None:
    """With no conversation live, a window goes straight to the model."""
    model = Recorder()
    asr = CallsFirstAsr(model, LiveCalls())
    await asyncio.wait_for(asr.atranscribe(np.zeros(160, np.float32)), 1)
    assert len(model.at) == 1


async def test_a_proactive_generation_waits_too() -> None:
    """A proactive message's generation waits until every live conversation has ended."""
    calls: list[float] = []

    class Llm:
        async def acomplete(self, messages: object, **options: object) -> str:
            calls.append(asyncio.get_running_loop().time())
            return "good morning"

    live = LiveCalls()
    live.opened()
    live.opened()
    llm = CallsFirstLlm(Llm(), live)
    task = asyncio.create_task(llm.acomplete([{"role": "user", "content": "hi"}], max_tokens=5))
    await settle()
    live.closed()
    await settle()
    assert calls == [] and not task.done()  # one of the two is still live
    live.closed()
    assert await asyncio.wait_for(task, 1) == "good morning" and len(calls) == 1


async def test_a_call_that_starts_before_the_waiter_runs_keeps_it_waiting() -> None:
    """Whether a call is live is checked again when the waiter wakes: one opened in between still holds it."""
    live = LiveCalls()
    live.opened()
    waiter = asyncio.create_task(live.until_none())
    await settle()
    live.closed()
    live.opened()  # before the waiter got to run
    await settle()
    assert not waiter.done() and live.count == 1
    live.closed()
    assert await asyncio.wait_for(waiter, 1) is True


async def test_closing_more_than_opened_never_goes_negative() -> None:
    """An extra `closed` is ignored: the count stays at zero and waiters are not held."""
    live = LiveCalls()
    live.closed()
    assert live.count == 0 and await live.until_none(0) is True
    live.opened()
    assert await live.until_none(0) is False
