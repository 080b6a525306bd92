"""One conversation: transport in, turn-taking, replies out. Pure asyncio; models behind `pipeline.ports`.

Data path (voice): `AudioIn` → resample to 16 kHz → VAD edges and the utterance buffer → `TurnCore` decisions
→ on end of turn, context → `Reply` (LLM → clauses → TTS → `Playout`) → the transport reads the playout at
real-time pace. Text turns (`TextIn`) skip the audio stages and use the same replies and history.

Every task the session starts is named, held in ``self._tasks`` and cancelled when the session ends; model
compute runs on the models' worker threads; every queue is bounded.
"""

from __future__ import annotations

import asyncio
import collections
import dataclasses
import logging
from collections.abc import Callable, Coroutine, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from pipeline import turn as tc
from pipeline.asr import PREROLL_S, UtteranceAsr
from pipeline.audio import PIPELINE_RATE, AudioFormatError, StreamResampler, validate_pcm
from pipeline.frames import (
    AudioIn,
    Dtmf,
    ErrorEvent,
    LatencyMark,
    MarkName,
    OutputEvent,
    ReplyDone,
    TextIn,
    TurnMarks,
    TurnState,
    UserSpeech,
    UserTranscript,
)
from pipeline.outbound import OutboundEvents
from pipeline.playout import Playout
from pipeline.ports import Asr, ContextBuilder, FinishedTurn, Llm, Message, Transport, Tts, Vad
from pipeline.reply import Reply, ReplyResult
from pipeline.tasks import cancel_and_wait
from pipeline.vad import VadConfig, VadStage

log = logging.getLogger(__name__)

_BOOKKEEPING_S = 2.0  # longest wait for a turn to be recorded (before its end is announced, or at close)

DEFAULT_PERSONA = (
    # Measured with Qwen2.5-0.5B: naming the bot ("You are Soma") made it answer about itself in the third
    # person ("Soma should cook…"); asking it to address the user as "you" fixed that.
    "You are a warm, caring friend on a phone call with the user. Talk to them directly, as 'you', in one or "
    "two short spoken sentences of plain conversational English. Never use lists, headings, markdown, emoji "
    "or code. If you do not know something about the user, ask a short question."
)


@dataclass(frozen=True, slots=True)
class SessionConfig:
    """Per-session policy.

    Attributes:
        turn: Turn-taking timings.
        vad: VAD thresholds.
        history_messages: Messages of heard history kept in the prompt (short keeps the prompt fast).
        max_text_chars: Longer typed messages are cut to this (with an error event saying so).
        playout_buffer_s: Audio buffered ahead of the listener; bounds how much barge-in must drop.
        event_queue: Outgoing bulk events (text deltas, partials, marks) buffered for a slow transport before
            new ones are dropped; control events are never dropped (`pipeline.outbound`).
        user: Who is talking (passed to the context builder).
        dtmf_interrupt: The keypad key that stops the avatar's reply (phone calls); ``""`` for none.
        dtmf_pause_s: Digits typed with pauses shorter than this are sent as one message ("the caller pressed
            1 2 3 4"), so a PIN or menu choice is one turn; the interrupt key also ends the entry at once.
    """

    turn: tc.TurnConfig = field(default_factory=tc.TurnConfig)
    vad: VadConfig = field(default_factory=VadConfig)
    history_messages: int = 12
    max_text_chars: int = 4000
    playout_buffer_s: float = 1.0
    event_queue: int = 256
    user: str = "user"
    dtmf_interrupt: str = "#"
    dtmf_pause_s: float = 1.5


MAX_DTMF_DIGITS = 32  # one keypad entry; more is a stuck key or an attack


@dataclass(frozen=True, slots=True)
class SessionModels:
    """The models a session uses; ``vad``/``asr``/``tts`` may be ``None`` for text-only sessions."""

    llm: Llm
    vad: Vad | None = None
    asr: Asr | None = None
    tts: Tts | None = None
    vad_executor: Any = None  # concurrent.futures.Executor for VAD scoring (None: inline, tests only)


class TurnObserver(Protocol):
    """Receives each finished turn's latency marks (e.g. to feed Prometheus histograms)."""

    def observe_turn(self, marks: TurnMarks) -> None: ...


class DefaultContext:
    """Stand-in context: a fixed persona plus the heard history. The avatar issue replaces it."""

    def __init__(self, persona: str = DEFAULT_PERSONA) -> None:
        self.persona = persona

    async def build_context(
        self, user: str, transcript: str, history: Sequence[Message], *, instructions: str | None = None
    ) -> list[Message]:
        asked: list[Message] = [{"role": "user", "content": transcript}] if transcript else []
        return [{"role": "system", "content": instructions or self.persona}, *history, *asked]

    async def after_turn(self, user: str, turn: FinishedTurn) -> None:
        return None


class Session:
    """Runs one conversation until the transport's input ends or `aclose` is called.

    Args:
        transport: The connection. Voice needs ``audio_in_rate``/``audio_out_rate``; it must read the bot's
            audio from `playout` (set before `run` starts reading inputs).
        models: Shared model handles.
        context: Builds each turn's prompt; called with the heard history.
        config: Policy.
        clock: Seconds, monotonic; defaults to the event loop's clock (virtual time in tests).
        observer: Gets each turn's latency marks.
        history: Heard history to start from (a resumed conversation); the newest
            ``config.history_messages`` are kept.
    """

    def __init__(
        self,
        transport: Transport,
        models: SessionModels,
        *,
        context: ContextBuilder | None = None,
        config: SessionConfig | None = None,
        clock: Callable[[], float] | None = None,
        observer: TurnObserver | None = None,
        history: Sequence[Message] = (),
    ) -> None:
        self.transport = transport
        self.models = models
        self.context = context or DefaultContext()
        self.config = config or SessionConfig()
        self._clock = clock
        self._observer = observer
        self.core = tc.TurnCore(self.config.turn)
        self.history: collections.deque[Message] = collections.deque(history, maxlen=self.config.history_messages)
        self.voice = transport.audio_in_rate is not None and models.vad is not None and models.asr is not None
        self.playout: Playout | None = None
        if transport.audio_out_rate is not None and models.tts is not None:
            self.playout = Playout(
                transport.audio_out_rate,
                max_buffered_s=self.config.playout_buffer_s,
                on_first_audio=self._on_first_audio,
                on_drained=self._on_drained,
            )
        self.speak = self.playout is not None  # see `set_audio_output`
        self._vad: VadStage | None = None
        self._utt: UtteranceAsr | None = None
        self._resampler: StreamResampler | None = None
        self._tasks: set[asyncio.Task[Any]] = set()
        self._events = OutboundEvents(self.config.event_queue)
        self._wake = asyncio.Event()
        self._reply: Reply | None = None
        self._reply_task: asyncio.Task[None] | None = None
        self._cancel_next_reply = False
        self._turn_id = 0
        self._marks: TurnMarks | None = None
        self._partial: tuple[asyncio.Task[str], float] | None = None  # decode in flight, audio end time
        self._last_decode: tuple[asyncio.Task[str], float] | None = None  # newest decode (maybe finished)
        self._last_decode_end = 0.0
        self._final_at: float | None = None
        self._speech_start_t = 0.0
        self._speech_end_t = 0.0
        self.turns: list[TurnMarks] = []  # finished turns' marks (bounded by history of this session)
        self._digits: list[str] = []
        self._digit_timer: asyncio.Task[None] | None = None
        self._partial_shown = False  # a partial transcript of the utterance in progress was sent
        self._preroll_s = PREROLL_S
        # Each recent turn's own history messages (user, assistant or None), so a client can edit what the
        # model sees of a turn (`edit_turn`); bounded like the history itself.
        self._turn_messages: collections.OrderedDict[int, list[Message | None]] = collections.OrderedDict()

    # -------------------------------------------------------------------------------------------- public

    def now(self) -> float:
        """Session clock, seconds."""
        return self._clock() if self._clock is not None else asyncio.get_running_loop().time()

    @property
    def utterance_s(self) -> float:
        """Seconds of user audio buffered for the utterance in progress (0 for text sessions). Bounded by
        the ASR's window: a long monologue commits older audio as text (see `pipeline.asr`)."""
        return self._utt.duration_s if self._utt is not None else 0.0

    async def run(self) -> None:
        """Process inputs until the transport closes, then stop everything the session started."""
        self.transport.attach_playout(self.playout)
        if self.voice:
            assert self.models.vad is not None and self.models.asr is not None
            self._vad = VadStage(self.models.vad.new_stream(), self.models.vad_executor, self.config.vad)
            self._utt = UtteranceAsr(self.models.asr, preroll_s=self._preroll_s)
        self._spawn(self._send_events(), "events")
        self._spawn(self._timer(), "turn-timer")
        self._emit(TurnState("listening"))
        try:
            async for frame in self.transport.inputs():
                # Backpressure: input errors and VAD edges are control events, which are never dropped.
                await self._events.room_for_control()
                match frame:
                    case AudioIn():
                        await self._on_audio(frame)
                    case TextIn(text, instructions, respond):
                        self._on_text(text, instructions, respond=respond)
                    case Dtmf(digit):
                        self._on_dtmf(digit)
        finally:
            await self.aclose()

    def set_audio_output(self, enabled: bool) -> None:
        """Speak replies (``True``, needs a playout) or only send their text; takes effect from the next reply."""
        self.speak = enabled and self.playout is not None

    def set_voice(self, tts: Tts) -> None:
        """Speak with ``tts`` from the next reply on (same output rate: the playout resamples)."""
        self.models = dataclasses.replace(self.models, tts=tts)

    def tune(self, turn: tc.TurnConfig, vad: VadConfig, preroll_s: float | None = None) -> None:
        """Use new turn-taking timings, VAD thresholds and (``preroll_s``) audio kept from before the start
        of speech, from the next audio frame on."""
        self.config = dataclasses.replace(self.config, turn=turn, vad=vad)
        if preroll_s is not None:
            self._preroll_s = preroll_s
            if self._utt is not None:
                self._utt.preroll_s = preroll_s
        self.core.config = turn
        if self._vad is not None:
            self._vad.segmenter.config = vad

    def edit_turn(self, turn_id: int, role: str, text: str) -> bool:
        """Replace what the model sees of a finished turn's ``role`` message (``user`` or ``assistant``) with
        ``text``; an empty ``text`` removes the message from the history. A client uses it to delete an item
        from the context or to say how much of a reply it actually played.

        Returns False when the turn (or that message) is no longer in the history.
        """
        messages = self._turn_messages.get(turn_id)
        index = {"user": 0, "assistant": 1}[role]
        message = messages[index] if messages is not None else None
        if message is None:
            return False
        at = next((i for i, m in enumerate(self.history) if m is message), None)  # identity: texts may repeat
        if at is None:
            return False
        if text:
            message["content"] = text
        else:
            del self.history[at]
            assert messages is not None
            messages[index] = None
        return True

    def interrupt(self) -> bool:
        """Cut the current reply short, as a barge-in would: only what was heard (or sent) enters history.

        The control lane for clients (``response.cancel``): it does not wait behind queued input frames.
        Returns False when no reply was running.
        """
        if self._reply is None:
            if self._reply_task is None or self._reply_task.done():
                return False
            self._cancel_next_reply = True  # its context is still being built: stop it as soon as it starts
            return True
        self._mark_current("interrupt_detected")
        self._interrupt_reply()
        self.core.reply_finished()
        return True

    async def aclose(self) -> None:
        """Interrupt any reply and cancel every task of the session. Idempotent.

        The turn in progress is not lost: its reply is interrupted (keeping what was heard), and its
        `ContextBuilder.after_turn` gets up to `_BOOKKEEPING_S` to record it before the rest is cancelled.
        """
        if self._reply is not None:
            self._reply.interrupt()
        if self._reply_task is not None and not self._reply_task.done():
            await asyncio.wait([self._reply_task], timeout=_BOOKKEEPING_S)
        bookkeeping = [t for t in self._tasks if t.get_name() == "session-after-turn"]
        if bookkeeping:
            await asyncio.wait(bookkeeping, timeout=_BOOKKEEPING_S)
        tasks = list(self._tasks)
        self._tasks.clear()
        await cancel_and_wait(*tasks, timeout=3.0)

    # -------------------------------------------------------------------------------------------- inputs

    async def _on_audio(self, frame: AudioIn) -> None:
        if not self.voice or self._vad is None or self._utt is None:
            self._emit(ErrorEvent("audio_not_supported", "this session is text-only"))
            return
        try:
            pcm = validate_pcm(frame.pcm, frame.sample_rate)
        except AudioFormatError as exc:
            self._emit(ErrorEvent("bad_audio", str(exc)))
            return
        if self._resampler is None or self._resampler.in_rate != frame.sample_rate:
            self._resampler = StreamResampler(frame.sample_rate, PIPELINE_RATE)
        pcm16 = self._resampler.process(pcm)
        now = self.now()
        self._utt.push(pcm16)
        for edge in await self._vad.process(pcm16, now):
            if isinstance(edge, tc.SpeechStart):
                self._utt.begin()
                self._speech_start_t = edge.t
            else:
                self._speech_end_t = edge.t
            self._emit(UserSpeech(isinstance(edge, tc.SpeechStart), edge.t))
            self._feed(edge)
        if self._partial is None and self._utt.active:
            # Decode at the first silent window after speech: if the VAD then confirms the end, that decode
            # already covers the whole utterance and becomes the final. Decode on the partial cadence too, but
            # only while the shared recogniser is idle: under load, other sessions' finals come first.
            ending = self._vad.segmenter.ending and self._last_decode_end < now - 0.05
            if ending or (self._utt.partial_due() and self._asr_backlog() == 0):
                self._start_partial()

    def _on_text(self, text: str, instructions: str | None = None, *, respond: bool = False) -> None:
        text = text.strip()
        if not text and not respond:
            self._emit(ErrorEvent("empty_text", "ignored an empty message"))
            return
        if len(text) > self.config.max_text_chars:
            self._emit(ErrorEvent("text_too_long", f"message cut to {self.config.max_text_chars} characters"))
            text = text[: self.config.max_text_chars]
        if self._reply is not None:
            self._interrupt_reply()
        self.core.reply_finished()
        self._begin_turn(text, speech_end=None, instructions=instructions)

    def _on_dtmf(self, digit: str) -> None:
        """A keypad press: the interrupt key stops the reply (control lane, like ``response.cancel``) and
        sends any digits typed before it; other digits collect until a `SessionConfig.dtmf_pause_s` pause."""
        if self._digit_timer is not None:
            self._digit_timer.cancel()
            self._digit_timer = None
        if digit == self.config.dtmf_interrupt:
            self.interrupt()
            self._send_digits()
            return
        if len(self._digits) < MAX_DTMF_DIGITS:
            self._digits.append(digit)
        self._digit_timer = self._spawn(self._digits_after_pause(), "dtmf")

    async def _digits_after_pause(self) -> None:
        await asyncio.sleep(self.config.dtmf_pause_s)
        self._digit_timer = None
        self._send_digits()

    def _send_digits(self) -> None:
        if self._digits:
            digits, self._digits = " ".join(self._digits), []
            self._on_text(f"the caller pressed {digits}")

    # ---------------------------------------------------------------------------------------- turn core

    def _feed(self, event: tc.TurnInput) -> None:
        self._apply(self.core.feed(event, self.now()))
        self._wake.set()

    async def _timer(self) -> None:
        """Calls `TurnCore.tick` at the core's deadlines (woken whenever the deadline may have moved)."""
        while True:
            deadline = self.core.next_deadline()
            self._wake.clear()
            if deadline is None:
                await self._wake.wait()
                continue
            delay = deadline - self.now()
            if delay > 0:
                try:
                    async with asyncio.timeout(delay):
                        await self._wake.wait()
                    continue
                except TimeoutError:
                    pass
            self._apply(self.core.tick(self.now()))

    def _apply(self, decisions: list[tc.Decision]) -> None:
        for decision in decisions:
            match decision:
                case tc.RequestFinal(segment):
                    self._start_final(segment)
                case tc.EndOfTurn(text, speech_end):
                    self._begin_turn(text, speech_end)
                case tc.PauseBot():
                    if self.playout is not None:
                        self.playout.pause()
                    if self._marks is not None:
                        # Barge-in latency is measured from the user's speech onset to this stop.
                        self._marks.marks.setdefault("barge_in_onset", self._speech_start_t)
                    self._mark_current("audio_stopped")
                case tc.ResumeBot():
                    if self.playout is not None:
                        self.playout.resume()
                    self._reset_utterance(dropped=True)
                case tc.InterruptBot(reason):
                    self._mark_current("interrupt_detected")
                    log.debug("interrupt: %s", reason)
                    self._interrupt_reply()
                case tc.DiscardUtterance():
                    self._reset_utterance(dropped=True)

    def _asr_backlog(self) -> int:
        return self.models.asr.backlog if self.models.asr is not None else 0

    def _reset_utterance(self, *, dropped: bool = False) -> None:
        """Forget the utterance in progress; ``dropped``: it did not become a turn (noise, a backchannel), so
        a client showing its partial transcript is told it is gone (an empty partial)."""
        if self._utt is not None:
            self._utt.reset()
        self._partial = self._last_decode = None
        if dropped and self._partial_shown:
            self._emit(UserTranscript("", final=False, turn_id=self._turn_id + 1))
        self._partial_shown = False

    # -------------------------------------------------------------------------------------------- ASR

    def _start_partial(self) -> None:
        assert self._utt is not None
        task = self._spawn(self._utt.decode(), "asr-partial")
        self._partial = self._last_decode = (task, self.now())
        self._last_decode_end = self.now()

        def done(t: asyncio.Task[str]) -> None:
            if self._partial is not None and self._partial[0] is t:
                self._partial = None
            if not t.cancelled() and t.exception() is None and t.result():
                self._partial_shown = True
                self._emit(UserTranscript(t.result(), final=False, turn_id=self._turn_id + 1))
                self._feed(tc.Transcript(t.result()))

        task.add_done_callback(done)

    def _start_final(self, segment: int) -> None:
        assert self._utt is not None
        # A decode (running or finished) of audio that reaches past the speech end *is* the final: reuse it
        # instead of queueing a second decode behind it on the shared ASR worker.
        latest = self._last_decode
        reuse = latest[0] if latest is not None and latest[1] >= self._speech_end_t else None

        async def final() -> None:
            assert self._utt is not None
            try:
                text = await reuse if reuse is not None and not reuse.cancelled() else await self._utt.decode()
            except Exception as exc:  # an ASR failure loses this utterance, not the session
                log.exception("ASR failed")
                self._emit(ErrorEvent("asr_failed", type(exc).__name__))
                text = ""
            self._final_at = self.now()
            self._feed(tc.Transcript(text, segment=segment))

        self._spawn(final(), f"asr-final-{segment}")

    # ------------------------------------------------------------------------------------------ replies

    def _begin_turn(self, text: str, speech_end: float | None, instructions: str | None = None) -> None:
        self._turn_id += 1
        marks = TurnMarks(self._turn_id)
        if speech_end is not None:
            marks.marks["speech_end"] = speech_end
            marks.marks["transcript_final"] = self._final_at if self._final_at is not None else self.now()
        self._marks = marks
        self._emit(UserTranscript(text, final=True, turn_id=self._turn_id))
        for name, t in marks.marks.items():
            self._emit(LatencyMark(self._turn_id, name, t))
        self._reset_utterance()
        self._emit(TurnState("thinking"))
        self._reply_task = self._spawn(self._run_reply(text, marks, instructions), f"turn-{self._turn_id}")

    async def _run_reply(self, text: str, marks: TurnMarks, instructions: str | None) -> None:
        history = list(self.history)
        messages = await self.context.build_context(self.config.user, text, history, instructions=instructions)
        reply = Reply(
            marks.turn_id,
            messages,
            llm=self.models.llm,
            tts=self.models.tts if self.speak else None,
            playout=self.playout,
            emit=self._emit,
            mark=lambda name: self._mark(marks, name),
        )
        self._reply = reply
        reply.start()
        if self._cancel_next_reply:
            self._cancel_next_reply = False
            self.interrupt()
        result = await reply.wait()
        self._finish_reply(text, result, marks)

    def _finish_reply(self, user_text: str, result: ReplyResult, marks: TurnMarks) -> None:
        if self._reply is not None and self._reply.reply_id == result.reply_id:
            self._reply = None
            if not result.interrupted:
                self.core.reply_finished()
        asked: Message | None = {"role": "user", "content": user_text} if user_text else None
        answer: Message | None = {"role": "assistant", "content": result.heard_text} if result.heard_text else None
        if asked is not None:  # none when the avatar spoke without new words from the user
            self.history.append(asked)
        if answer is not None:
            self.history.append(answer)
        self._turn_messages[marks.turn_id] = [asked, answer]
        while len(self._turn_messages) > self.config.history_messages:
            self._turn_messages.popitem(last=False)
        self.turns.append(marks)
        if self._observer is not None:
            self._observer.observe_turn(marks)
        stored: dict[str, float] = dict(marks.marks.items())  # a copy; stored turns take chat's ``request`` too
        turn = FinishedTurn(marks.turn_id, user_text, result.text, result.heard_text, result.interrupted, stored)
        self._spawn(self._record_then_announce(turn, result), "after-turn")

    async def _record_then_announce(self, turn: FinishedTurn, result: ReplyResult) -> None:
        """Record the turn, then tell the client it ended: once a client has seen a reply end, that turn is
        stored, so a crash loses at most the turn in progress. Recording is bounded by `_BOOKKEEPING_S`."""
        try:
            async with asyncio.timeout(_BOOKKEEPING_S):
                await self.context.after_turn(self.config.user, turn)
        except Exception:  # memory/history bookkeeping failing (or too slow) must not end the call
            log.exception("after_turn failed for turn %d", turn.turn_id)
        r = result
        self._emit(ReplyDone(r.reply_id, r.text, r.heard_text, r.interrupted, r.played_s, r.usage, r.spans))
        if result.error:
            self._emit(ErrorEvent("reply_failed", result.error))
        if self._reply is None:
            self._emit(TurnState("listening"))

    def _interrupt_reply(self) -> None:
        if self._reply is not None:
            self._reply.interrupt()
            self._reply = None

    def _on_first_audio(self, reply_id: int) -> None:
        if self._marks is not None and self._marks.turn_id == reply_id:
            self._mark(self._marks, "first_audio_out")
        self._emit(TurnState("speaking"))
        self._feed(tc.BotAudible(True))

    def _on_drained(self, reply_id: int) -> None:
        reply = self._reply
        if reply is not None and reply.reply_id == reply_id:
            reply.audio_drained()
            self._feed(tc.BotAudible(False))

    # ------------------------------------------------------------------------------------------- plumbing

    def _mark(self, marks: TurnMarks, name: MarkName) -> None:
        if name not in marks.marks:
            marks.marks[name] = self.now()
            self._emit(LatencyMark(marks.turn_id, name, marks.marks[name]))

    def _mark_current(self, name: MarkName) -> None:
        if self._marks is not None:
            self._mark(self._marks, name)

    def _emit(self, event: OutputEvent) -> None:
        self._events.put(event)

    async def _send_events(self) -> None:
        while True:
            event = await self._events.get()
            try:
                await self.transport.send(event)
            except Exception:  # a broken client connection ends via its input iterator, not here
                log.debug("transport.send failed", exc_info=True)

    def _spawn(self, coro: Coroutine[Any, Any, Any], name: str) -> asyncio.Task[Any]:
        task = asyncio.create_task(coro, name=f"session-{name}")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task
