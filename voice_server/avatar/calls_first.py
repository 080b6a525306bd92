"""Background model work steps aside for live conversations.

Imports (speech model) and proactive messages (LLM) share their model's single worker with live calls. A
28 s import window holds the speech model ~1.5 s (Whisper base, 2 cores) and a proactive message's 60-token
generation holds the LLM ~2.5 s (the full 0.5B model): a caller's next words or reply would queue behind
them. A call must never wait for a background job, so the job waits instead — before each piece of work,
while any conversation is live — and resumes when they end. Only a call that starts while a piece is already
running waits for it, once.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from models.asr import Transcript
from voice_server.avatar.media_plan import Transcriber
from voice_server.avatar.proactive.messages import Completer

POLL_S = 0.25


async def until_quiet(busy: Callable[[], bool], poll_s: float = POLL_S) -> None:
    """Return once ``busy()`` is false.

    Polled, not awaited on an event: "live" is a gauge every transport moves; one cheap read per ``poll_s``
    is all the waiting costs.
    """
    while busy():  # noqa: ASYNC110
        await asyncio.sleep(poll_s)


@dataclass(frozen=True, slots=True)
class CallsFirstAsr:
    """The speech model as imports use it: each window waits until no conversation is live.

    Attributes:
        asr: The speech model.
        busy: Whether a live conversation is in progress (called on the event loop; must be cheap).
        poll_s: How often ``busy`` is asked again while it holds.
    """

    asr: Transcriber
    busy: Callable[[], bool]
    poll_s: float = POLL_S

    async def atranscribe(self, audio: npt.NDArray[np.float32], *, language: str | None = "en") -> Transcript:
        """`Transcriber.atranscribe`, once no conversation is live."""
        await until_quiet(self.busy, self.poll_s)
        return await self.asr.atranscribe(audio, language=language)


@dataclass(frozen=True, slots=True)
class CallsFirstLlm:
    """The LLM as proactive messages use it: each generation waits until no conversation is live.

    Attributes:
        llm: The LLM.
        busy: Whether a live conversation is in progress (called on the event loop; must be cheap).
        poll_s: How often ``busy`` is asked again while it holds.
    """

    llm: Completer
    busy: Callable[[], bool]
    poll_s: float = POLL_S

    async def acomplete(self, messages: Sequence[Any], **options: Any) -> str:
        """`Completer.acomplete`, once no conversation is live."""
        await until_quiet(self.busy, self.poll_s)
        return await self.llm.acomplete(messages, **options)
