"""The seams the pipeline talks through: small Protocols for the models and the transport.

The real implementations live in ``models/`` (loaded model handles that run their compute on their own
worker threads) and ``voice_server/`` (WebRTC, WebSocket, SIP); tests plug in fakes or the real thing.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np
import numpy.typing as npt

from pipeline.frames import InputFrame, OutputEvent, TokenUsage
from pipeline.playout import Playout

Message = dict[str, str]  # {"role": "system" | "user" | "assistant", "content": ...}
FloatAudio = npt.NDArray[np.float32]


class SpeechProb(Protocol):
    """Per-stream VAD state: probability that a 512-sample 16 kHz float frame is speech."""

    def prob(self, frame: FloatAudio) -> float: ...

    def reset(self) -> None: ...


class Vad(Protocol):
    """A shared VAD model that hands out per-stream state."""

    def new_stream(self) -> SpeechProb: ...


class AsrResult(Protocol):
    @property
    def text(self) -> str: ...


class Asr(Protocol):
    """Speech to text for a whole 16 kHz float utterance, computed off the event loop."""

    async def atranscribe_utterance(self, audio: FloatAudio) -> AsrResult: ...

    @property
    def backlog(self) -> int:
        """Decodes queued or running on the (shared) recogniser; sessions skip optional partials when > 0."""
        ...


class Llm(Protocol):
    """Streams reply text pieces for a chat; closing the iterator stops generation. The LLM fills in
    ``stats`` (token counts) as it generates."""

    def astream(self, messages: Sequence[Message], *, stats: TokenUsage | None = None) -> AsyncIterator[str]: ...


class Tts(Protocol):
    """Text to float32 mono audio at `sample_rate`, computed off the event loop."""

    @property
    def sample_rate(self) -> int: ...

    async def asynthesize(self, text: str) -> FloatAudio: ...


@dataclass(frozen=True, slots=True)
class FinishedTurn:
    """One finished exchange, as it enters the history.

    Attributes:
        turn_id: The session's turn number.
        user_text: What the user said (final transcript) or typed.
        reply_text: Everything the LLM generated for the reply.
        heard_text: What the user heard (voice) or was sent (text): the only reply text kept in history.
        interrupted: The reply was cut short (barge-in, cancel, or the session closing).
        marks: Latency marks, seconds on the session clock (``speech_end``, ``llm_first_token``…).
    """

    turn_id: int
    user_text: str
    reply_text: str
    heard_text: str
    interrupted: bool
    marks: Mapping[str, float] = field(default_factory=dict)


class ContextBuilder(Protocol):
    """Builds the LLM messages for a turn (persona, recalled memories, heard history).

    Later issues fill it with the avatar's persona and memories; `pipeline.session.DefaultContext` is the
    stand-in with a default persona.
    """

    async def build_context(
        self, user: str, transcript: str, history: Sequence[Message], *, instructions: str | None = None
    ) -> list[Message]:
        """The prompt for ``transcript``; ``instructions``, when set, replace the persona for this turn only."""
        ...

    async def after_turn(self, user: str, turn: FinishedTurn) -> None:
        """Called once per finished turn, before the session announces the reply's end (`ReplyDone`): a client
        that saw a reply end can rely on the turn being recorded. Keep it to a quick write (the session waits at
        most 2 s); slow work such as memory extraction belongs in a background job. A failure is logged."""
        ...


class Transport(Protocol):
    """One connection's media and events, as the session sees it.

    Attributes:
        audio_in_rate: Rate of the `AudioIn` it delivers, or ``None`` for a text-only connection.
        audio_out_rate: Rate at which it will `read` the bot's audio, or ``None`` for text-only.
    """

    @property
    def audio_in_rate(self) -> int | None: ...

    @property
    def audio_out_rate(self) -> int | None: ...

    def inputs(self) -> AsyncIterator[InputFrame]:
        """Frames from the user; the iterator ends when the connection closes."""
        ...

    async def send(self, event: OutputEvent) -> None:
        """Deliver an event to the client (may drop or coalesce when the client is slow)."""
        ...

    def attach_playout(self, playout: Playout | None) -> None:
        """Called once before inputs are read: the transport reads the bot's audio from ``playout`` at
        real-time pace (``None`` for a text-only session)."""
        ...
