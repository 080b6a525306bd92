"""A bot reply as a handle that owns its work: LLM → clause chunker → TTS → playout.

`Reply.start` launches two owned tasks joined by a small bounded queue: the LLM task streams text and cuts
it into clauses; the TTS task synthesises each clause and writes it to the playout buffer (waiting for room,
which back-pressures the LLM). `Reply.interrupt` is idempotent and immediate: both tasks are cancelled (the
LLM's worker thread stops within one token), queued audio is dropped, and the result records only the words
the user actually heard. Text-only replies skip TTS: what was sent is what was "heard".
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from pipeline.audio import resample, to_int16
from pipeline.chunker import ClauseChunker
from pipeline.frames import MarkName, OutputEvent, ReplyText, Span, TokenUsage
from pipeline.playout import Playout
from pipeline.ports import Llm, Message, Tts
from pipeline.tasks import cancel_and_wait

log = logging.getLogger(__name__)

_CLAUSE_QUEUE = 4  # clauses waiting for TTS: enough to keep TTS busy, small enough to stop fast


@dataclass(frozen=True, slots=True)
class ReplyResult:
    """How a reply ended.

    Attributes:
        reply_id: The reply.
        text: Everything the LLM generated.
        heard_text: What the user heard (voice) or was sent (text); the only part for the history.
        interrupted: Cut short by the user (or the session closing).
        played_s: Seconds of audio played.
        error: A model error message if the reply failed, else ``None``.
        usage: The generation's token counts (as far as it got).
        spans: The spoken chunks with their place in the reply's audio (voice replies).
    """

    reply_id: int
    text: str
    heard_text: str
    interrupted: bool
    played_s: float
    error: str | None = None
    usage: TokenUsage | None = None
    spans: tuple[Span, ...] = ()


class Reply:
    """One bot reply. Create, `start`, then `await wait()`; call `interrupt` at any time.

    Args:
        reply_id: Unique within the session.
        messages: The full prompt (persona, history, the user's turn).
        llm: Streams reply text.
        tts: Voice, or ``None`` for a text-only reply.
        playout: Where audio goes (required with ``tts``).
        emit: Sends an event to the transport (text deltas); must not block.
        mark: Records a latency mark by name (``llm_first_token``, ``tts_first_chunk``).
    """

    def __init__(
        self,
        reply_id: int,
        messages: Sequence[Message],
        *,
        llm: Llm,
        tts: Tts | None,
        playout: Playout | None,
        emit: Callable[[OutputEvent], None],
        mark: Callable[[MarkName], None],
    ) -> None:
        if tts is not None and playout is None:
            raise ValueError("a voice reply needs a playout buffer")
        self.reply_id = reply_id
        self._messages = list(messages)
        self._llm = llm
        self._tts = tts
        self._playout = playout
        self._emit = emit
        self._mark = mark
        self._text = ""
        self._error: str | None = None
        self._clauses: asyncio.Queue[str | None] = asyncio.Queue(_CLAUSE_QUEUE)
        self._tasks: list[asyncio.Task[None]] = []
        self._drained = asyncio.Event()
        self._interrupted = False
        self._result: ReplyResult | None = None
        self._usage = TokenUsage()

    # ----------------------------------------------------------------------------------------- lifecycle

    def start(self) -> None:
        """Launch the reply's tasks. Call once."""
        if self._tasks:
            raise RuntimeError("reply already started")
        self._tasks.append(asyncio.create_task(self._generate(), name=f"reply-{self.reply_id}-llm"))
        if self._tts is not None:
            self._tasks.append(asyncio.create_task(self._speak(), name=f"reply-{self.reply_id}-tts"))

    def interrupt(self) -> None:
        """Stop now: cancel generation and synthesis and drop queued audio. Idempotent."""
        if self._interrupted or self._result is not None:
            return
        self._interrupted = True
        self._freeze_result()
        for task in self._tasks:
            task.cancel()
        self._drained.set()

    def audio_drained(self) -> None:
        """Called by the session when the playout has played this reply's last sample."""
        self._drained.set()

    @property
    def done(self) -> bool:
        return self._result is not None

    async def wait(self) -> ReplyResult:
        """Wait until the reply was fully played (or interrupted) and its tasks ended; return the result."""
        try:
            await asyncio.gather(*self._tasks, return_exceptions=True)
            if self._tts is not None and not self._interrupted and self._error is None:
                await self._drained.wait()
        except asyncio.CancelledError:
            self.interrupt()
            await cancel_and_wait(*self._tasks, timeout=2.0)
            raise
        self._freeze_result()
        assert self._result is not None
        return self._result

    async def aclose(self) -> None:
        """Interrupt and wait for the tasks to finish (session shutdown)."""
        self.interrupt()
        await cancel_and_wait(*self._tasks, timeout=2.0)

    # ------------------------------------------------------------------------------------------- workers

    async def _generate(self) -> None:
        chunker = ClauseChunker()
        first = True
        try:
            stream = self._llm.astream(self._messages, stats=self._usage)
            async with contextlib.aclosing(stream):  # type: ignore[type-var]
                async for piece in stream:
                    if first:
                        self._mark("llm_first_token")
                        first = False
                    self._text += piece
                    self._emit(ReplyText(self.reply_id, piece))
                    if self._tts is not None:
                        for clause in chunker.push(piece):
                            await self._clauses.put(clause)
            if self._tts is not None:
                for clause in chunker.flush():
                    await self._clauses.put(clause)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # a model failure ends this reply, not the session
            log.exception("LLM failed in reply %d", self.reply_id)
            self._error = f"llm: {type(exc).__name__}"
        finally:
            if self._tts is not None and not self._interrupted:
                # The sentinel waits for room if the queue is full: the TTS task is draining it. Only `interrupt`
                # cancels this task, and it cancels the TTS task too, so a cancelled put needs no sentinel.
                await self._clauses.put(None)

    async def _speak(self) -> None:
        assert self._tts is not None and self._playout is not None
        first = True
        try:
            while (clause := await self._clauses.get()) is not None:
                audio = await self._tts.asynthesize(clause)
                if len(audio) == 0:
                    continue
                if first:
                    self._mark("tts_first_chunk")
                    first = False
                pcm = to_int16(resample(audio, self._tts.sample_rate, self._playout.sample_rate))
                if not await self._playout.write(self.reply_id, pcm, clause):
                    return  # cleared: interrupted
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            log.exception("TTS failed in reply %d", self.reply_id)
            self._error = f"tts: {type(exc).__name__}"
        finally:
            if not self._interrupted:
                self._playout.end_reply(self.reply_id)
                if first:  # nothing was ever written: there is nothing to drain
                    self._drained.set()

    def _freeze_result(self) -> None:
        if self._result is not None:
            return
        spans: tuple[Span, ...] = ()
        if self._tts is not None and self._playout is not None:
            heard = self._playout.heard_text(self.reply_id)
            played = self._playout.played_s(self.reply_id)
            spans = self._playout.spans_s(self.reply_id)
            self._playout.clear(self.reply_id)  # forget its accounting (and drop any audio left, if interrupted)
        else:
            heard, played = self._text, 0.0
        usage = dataclasses.replace(self._usage)  # a copy: an interrupted generation's thread may still count
        self._result = ReplyResult(
            self.reply_id, self._text, heard.strip(), self._interrupted, played, self._error, usage, spans
        )
