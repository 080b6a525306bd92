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

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from models.asr import Transcript
from voice_server.avatar.imports.recordings_plan import Transcriber
from voice_server.avatar.proactive.messages import Completer
from voice_server.live_calls import LiveCalls

log = logging.getLogger(__name__)

MAX_WAIT_S = 30.0  # per import window: `Settings.import_calls_first_max_wait_s` sets the server's


@dataclass(frozen=True, slots=True)
class CallsFirstAsr:
    """The speech model as imports use it: each window waits until no conversation is live, for at most
    ``max_wait_s`` (see the module doc).

    Attributes:
        asr: The speech model.
        live: The server's live conversations (awaited, not polled).
        max_wait_s: The longest one window waits for quiet (``None``: for ever, which an idle open
            conversation turns into a denial of service for every user's imports).
    """

    asr: Transcriber
    live: LiveCalls
    max_wait_s: float | None = MAX_WAIT_S

    async def atranscribe(self, audio: npt.NDArray[np.float32], *, language: str | None = "en") -> Transcript:
        """`Transcriber.atranscribe`, once no conversation is live or ``max_wait_s`` has passed."""
        if not await self.live.until_none(self.max_wait_s):
            log.info("import: a conversation stayed live for %.0f s; transcribing one window anyway", self.max_wait_s)
        return await self.asr.atranscribe(audio, language=language)


@dataclass(frozen=True, slots=True)
class CallsFirstLlm:
    """The LLM as proactive messages use it: each generation waits until no conversation is live.

    Attributes:
        llm: The LLM.
        live: The server's live conversations (awaited, not polled).
    """

    llm: Completer
    live: LiveCalls

    async def acomplete(self, messages: Sequence[Any], **options: Any) -> str:
        """`Completer.acomplete`, once no conversation is live."""
        await self.live.until_none()
        return await self.llm.acomplete(messages, **options)
