"""Background model work steps aside for live conversations.

Imports (speech model) and proactive messages (LLM) share their model's single worker with live calls. A
28 s import window holds the speech model ~1.5 s (Whisper base, 2 cores) and a proactive message's 60-token
generation holds the LLM ~2.5 s (the full 0.5B model): a caller's next words or reply would queue behind
them. A call must never wait for a background job, so the job waits instead — before each piece of work,
while any conversation is live — and resumes when they end. Only a call that starts while a piece is already
running waits for it, once.

"Live" only says a conversation is open, not that anyone is speaking, so an idle conversation left open
would hold every user's imports forever. An import therefore waits at most ``max_wait_s`` per window: it
still steps aside for every window while a call is live (a real call costs it at most one window's model
time per ``max_wait_s``), but it always makes progress.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from models.asr import Transcript
from voice_server.avatar.imports.recordings_plan import Transcriber
from voice_server.avatar.proactive.messages import Completer

log = logging.getLogger(__name__)

POLL_S = 0.25
MAX_WAIT_S = 30.0  # per import window: `Settings.import_calls_first_max_wait_s` sets the server's


async def until_quiet(busy: Callable[[], bool], poll_s: float = POLL_S, max_wait_s: float | None = None) -> bool:
    """Return once ``busy()`` is false, or after ``max_wait_s`` (``None``: no limit); true when it was quiet.

    Polled, not awaited on an event: "live" is a gauge every transport moves; one cheap read per ``poll_s``
    is all the waiting costs.
    """
    loop = asyncio.get_running_loop()
    deadline = None if max_wait_s is None else loop.time() + max_wait_s
    while busy():  # noqa: ASYNC110
        if deadline is not None and loop.time() >= deadline:
            return False
        await asyncio.sleep(poll_s if deadline is None else min(poll_s, max(0.0, deadline - loop.time())))
    return True


@dataclass(frozen=True, slots=True)
class CallsFirstAsr:
    """The speech model as imports use it: each window waits until no conversation is live, for at most
    ``max_wait_s`` (see the module doc).

    Attributes:
        asr: The speech model.
        busy: Whether a live conversation is in progress (called on the event loop; must be cheap).
        poll_s: How often ``busy`` is asked again while it holds.
        max_wait_s: The longest one window waits for quiet (``None``: for ever, which an idle open
            conversation turns into a denial of service for every user's imports).
    """

    asr: Transcriber
    busy: Callable[[], bool]
    poll_s: float = POLL_S
    max_wait_s: float | None = MAX_WAIT_S

    async def atranscribe(self, audio: npt.NDArray[np.float32], *, language: str | None = "en") -> Transcript:
        """`Transcriber.atranscribe`, once no conversation is live or ``max_wait_s`` has passed."""
        if not await until_quiet(self.busy, self.poll_s, self.max_wait_s):
            log.info("import: a conversation stayed live for %.0f s; transcribing one window anyway", self.max_wait_s)
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
