"""Fast fakes for session logic tests, and a virtual-time event loop (the clock jumps to the next timer)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Coroutine, Sequence
from typing import Any, TypeVar

import numpy as np
import numpy.typing as npt

T = TypeVar("T")
RATE = 16_000


class VirtualTimeLoop(asyncio.SelectorEventLoop):
    """An event loop whose clock jumps to the next scheduled callback whenever nothing is ready.

    Only for code that does no real I/O or threads: then a 10-second call runs in milliseconds and every
    timestamp is exact.
    """

    def __init__(self) -> None:
        super().__init__()
        self._virtual = 0.0

    def time(self) -> float:
        return self._virtual

    def _run_once(self) -> None:
        ready = self._ready  # type: ignore[attr-defined]
        scheduled = self._scheduled  # type: ignore[attr-defined]
        if not ready and scheduled:
            self._virtual = max(self._virtual, scheduled[0]._when)
        super()._run_once()  # type: ignore[misc]


def run_virtual(coro: Coroutine[Any, Any, T]) -> T:
    """Run ``coro`` to completion on a fresh virtual-time loop."""
    loop = VirtualTimeLoop()
    try:
        return loop.run_until_complete(coro)
    finally:
        loop.close()


def tone(seconds: float, amplitude: int, rate: int = RATE) -> npt.NDArray[np.int16]:
    """A 220 Hz tone; the amplitude encodes which scripted utterance it is (see FakeAsr)."""
    t = np.arange(int(seconds * rate)) / rate
    return (np.sin(2 * np.pi * 220 * t) * amplitude).astype(np.int16)


class _ProbStream:
    def prob(self, frame: npt.NDArray[np.float32]) -> float:
        return 1.0 if float(np.sqrt(np.mean(frame**2))) > 0.01 else 0.0

    def reset(self) -> None:
        pass


class FakeVad:
    """Energy detector: any tone is speech."""

    def new_stream(self) -> _ProbStream:
        return _ProbStream()


class _Result:
    def __init__(self, text: str) -> None:
        self.text = text


class FakeAsr:
    """Maps the loudest amplitude in the audio to a scripted text: utterance i is a tone of amplitude
    ``(i + 1) * 2000``. Takes ``delay`` seconds of (virtual) time per decode."""

    def __init__(self, texts: Sequence[str], delay: float = 0.1) -> None:
        self.texts = list(texts)
        self.delay = delay
        self.calls = 0
        self.backlog = 0

    async def atranscribe_utterance(self, audio: npt.NDArray[np.float32]) -> _Result:
        self.calls += 1
        await asyncio.sleep(self.delay)
        peak = float(np.abs(audio).max(initial=0.0)) * 32768
        index = round(peak / 2000) - 1
        return _Result(self.texts[index] if 0 <= index < len(self.texts) else "")


class FakeLlm:
    """Streams a canned reply word by word, ``per_token`` seconds apart; records the prompts."""

    def __init__(self, reply: str, per_token: float = 0.02, first_token: float = 0.1) -> None:
        self.reply = reply
        self.per_token = per_token
        self.first_token = first_token
        self.prompts: list[list[dict[str, str]]] = []

    async def astream(self, messages: Sequence[dict[str, str]], *, stats: Any = None) -> AsyncIterator[str]:
        self.prompts.append(list(messages))
        if stats is not None:  # a word stands for a token
            stats.prompt_tokens = sum(len(m["content"].split()) for m in messages)
        await asyncio.sleep(self.first_token)
        for i, word in enumerate(self.reply.split(" ")):
            if i:
                await asyncio.sleep(self.per_token)
            if stats is not None:
                stats.generated_tokens += 1
            yield word if i == 0 else " " + word


class FakeTts:
    """0.25 s of tone per word, after ``delay``."""

    sample_rate = 16_000

    def __init__(self, delay: float = 0.03) -> None:
        self.delay = delay
        self.spoken: list[str] = []

    async def asynthesize(self, text: str) -> npt.NDArray[np.float32]:
        await asyncio.sleep(self.delay)
        self.spoken.append(text)
        return tone(0.25 * len(text.split()), 8000).astype(np.float32) / 32768
