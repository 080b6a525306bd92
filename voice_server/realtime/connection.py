"""One realtime connection's conversation state: client events in, OpenAI Realtime server events out.

`RealtimeConnection` sits between the WebSocket (which only moves messages) and the pipeline session (which
only knows frames). It applies parsed client events (`protocol.parse_client_event`) and translates session
events into the server events of the protocol, keeping the ids that tie them together: the user item of a
turn, each response and its assistant item. It never awaits the network: events go out through ``emit``,
which the endpoint backs with a bounded queue.

Turns come two ways. With server VAD (the default) the session hears the user, decides the end of the turn
and answers by itself; this class reports speech start/stop, the transcript, then the response. Typed text
and manually committed audio (``turn_detection: null``) become pending user items that ``response.create``
sends to the session as one typed turn. ``response.cancel`` and barge-in both interrupt the session's reply,
so only heard (or sent) text enters the history, and ``response.done`` reports ``cancelled``.
"""

from __future__ import annotations

import asyncio
import base64
import collections
import contextlib
import dataclasses
import logging
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

from models.prompt_fit import PromptLimits
from pipeline.audio import PIPELINE_RATE, resample, to_float
from pipeline.frames import (
    ErrorEvent,
    LatencyMark,
    OutputEvent,
    Pcm,
    ReplyDone,
    ReplyText,
    TurnState,
    UserSpeech,
    UserTranscript,
)
from pipeline.ports import FloatAudio, Tts
from pipeline.session import Session
from pipeline.tasks import cancel_and_wait
from voice_server.realtime import protocol as p
from voice_server.realtime.items import HistoryKeeper, Item, Items
from voice_server.realtime.limits import CountTokens, InputLimits
from voice_server.realtime.transcript import TranscriptDeltas
from voice_server.realtime.transport import RealtimeTransport
from voice_server.realtime.turn_detection import IdleTimer

if TYPE_CHECKING:  # types only: the model runtimes are imported when the models load
    from models.registry import ModelSet

MEDIA_RATE = 48_000  # WebRTC (Opus) audio
MAX_MARKED_TURNS = 8

log = logging.getLogger(__name__)

MAX_MANUAL_AUDIO_S = 60.0  # audio held for a manual commit
MIN_COMMIT_S = 0.1  # OpenAI's minimum for a commit
# Session errors caused by what the client sent; the rest are server-side.
_CLIENT_ERRORS = frozenset({"bad_audio", "empty_text", "text_too_long", "audio_not_supported"})


class PersonaHolder(Protocol):
    """The part of the session's context builder a client may change (`voice_server.conversations.AvatarContext`)."""

    persona: str


@dataclass(slots=True)
class _Response:
    """One response from ``response.created`` to ``response.done``."""

    id: str
    item_id: str
    audio: bool
    typed_text: str | None = None  # for typed turns: the text it answers, until its turn id is known
    turn_id: int | None = None
    announced: bool = False  # output item and content part sent
    cancel_reason: str | None = None
    media_started: bool = False  # WebRTC: its audio started on the media track
    metadata: dict[str, str] | None = None  # the client's, echoed in every response object
    user_items: list[str] = field(default_factory=list)  # the typed/committed items it answers
    # Client edits of its items (delete, truncate) that arrived while it was running: applied once it is done.
    after_done: list[Callable[[], Awaitable[None]]] = field(default_factory=list)


@dataclass(slots=True)
class _ManualAudio:
    """Audio held for an explicit ``input_audio_buffer.commit`` (turn_detection null)."""

    chunks: list[Pcm] = field(default_factory=list)
    samples: int = 0


class RealtimeConnection:
    """Protocol state of one connection. Create, `attach` the session, then feed `handle`.

    Args:
        model: The avatar's id, echoed in the session object.
        persona: The avatar's own persona (restored when a client clears its instructions).
        emit: Sends one server event dict (``event_id`` is added here); must not block.
        transcribe: Speech to text for manual commits (16 kHz float audio).
        voices: The loaded stock TTS voices by name (``fast``, ``quality``); `attach` adds ``avatar``, the voice
            the avatar's person chose, which the session starts with.
        media_out: WebRTC only: where the avatar's audio goes.
        limits: Token limits for user messages and instructions (`voice_server.realtime.limits`).
        count_tokens: The LLM's tokenizer, off the event loop (``None``: UTF-8 bytes stand in, an upper bound).
    """

    def __init__(
        self,
        *,
        model: str,
        persona: str,
        emit: Callable[[dict[str, Any]], None],
        transcribe: Callable[[FloatAudio], Awaitable[str]] | None,
        voices: Mapping[str, Tts | None],
        media_out: Callable[[Pcm], None] | None = None,
        limits: PromptLimits | None = None,
        count_tokens: CountTokens | None = None,
    ) -> None:
        self.model = model
        self._persona = persona
        self._media_out = media_out
        # Over WebRTC the audio rides on media tracks at the rate WebRTC negotiated (48 kHz), not in events.
        self.settings = p.SessionSettings(input_rate=MEDIA_RATE) if media_out is not None else p.SessionSettings()
        self.transport = RealtimeTransport(self.on_session_event, input_rate=self.settings.input_rate,
                                           output_rate=p.OUTPUT_RATE)
        self.session_id = p.new_id("sess")
        self._emit_raw = emit
        self._transcribe = transcribe
        self._voices = voices
        self._limits = InputLimits(limits or PromptLimits(), count_tokens)
        self._ids = p.EventIds()
        self._session: Session | None = None
        self._context: PersonaHolder | None = None
        self._pending: list[tuple[str, str]] = []  # (item id, text) waiting for response.create
        self._manual = _ManualAudio()
        self._responses: dict[int, _Response] = {}  # by turn id
        self._unbound: collections.deque[_Response] = collections.deque()  # typed, turn id not known yet
        self._speech_item: str | None = None
        self._speech_span = (0.0, 0.0)  # start and latest stop of the utterance in progress (session time)
        self._deltas = TranscriptDeltas()
        self._last_item: str | None = None
        self._items = Items()
        self._keeper: HistoryKeeper | None = None
        self._edits: set[asyncio.Task[None]] = set()
        self._idle = IdleTimer(self._on_idle)
        self._answered = False  # a response has ended (the idle timeout counts from there)
        self._marks: dict[int, dict[str, float]] = {}  # WebRTC: latency marks of recent turns

    def feed_media(self, pcm: Pcm) -> None:
        """Microphone audio from a WebRTC track (mono, `MEDIA_RATE`), like ``input_audio_buffer.append``.
        Audio beyond the buffer bound is dropped: a media track cannot be asked to slow down."""
        with contextlib.suppress(p.ProtocolError):
            self._append(pcm)

    # --------------------------------------------------------------------------------------------- setup

    def attach(self, session: Session, context: PersonaHolder) -> None:
        """Bind the session (built around `transport`) and announce it with ``session.created``."""
        self._session = session
        self._context = context
        # The session opened speaking with the avatar's chosen voice: ``avatar`` names it from now on.
        self._voices = {**self._voices, p.AVATAR_VOICE: session.models.tts}
        self._keeper = context if isinstance(context, HistoryKeeper) else None
        self._base_turn, self._base_vad = session.config.turn, session.config.vad
        session.set_audio_output(self.settings.audio_out)
        self._emit({"type": "session.created", "session": self._session_object()})

    @property
    def active(self) -> bool:
        """A response is in progress."""
        return bool(self._responses or self._unbound)

    # ------------------------------------------------------------------------------------- client events

    async def handle(self, raw: str) -> None:
        """Apply one client message; a bad one is answered with an ``error`` event and changes nothing.

        Never raises (cancellation aside): whatever the message, the connection stays open and usable.
        """
        try:
            await self._apply(raw)
        except p.ProtocolError as exc:
            self.error(exc)
        except Exception:  # a server bug costs this one event, not the client's connection
            log.exception("realtime event failed")
            failed = p.ProtocolError("server_error", "the server failed to apply this event")
            self._emit(p.error_event(failed, "server_error"))

    async def _apply(self, raw: str) -> None:
        event = p.parse_client_event(raw, self.settings)
        match event:
            case p.SessionUpdate(settings=new):
                if new.instructions != self.settings.instructions:
                    await self._limits.check_instructions(new.instructions)
                self._update(new)
            case p.AudioAppend(pcm=pcm):
                if self._media_out is not None:
                    raise p.ProtocolError("audio_via_media", "over WebRTC the microphone track carries the "
                                          "audio; input_audio_buffer.append is not used")
                self._append(pcm)
            case p.AudioCommit():
                await self._commit()
            case p.AudioClear():
                self._manual = _ManualAudio()
                self.transport.clear_audio()
                self._emit({"type": "input_audio_buffer.cleared"})
            case p.ItemCreate(item_id=item_id, text=text):
                # Checked as part of the turn it joins: this also bounds what waits for response.create.
                await self._limits.check_turn([t for _, t in self._pending], text, param="item.content.text")
                self._pending.append((item_id, text))
                self._add_user_item(item_id, text, audio=False)
            case p.ItemRetrieve(item_id=item_id):
                item = self._items.get(item_id)
                self._emit({"type": "conversation.item.retrieved", "item": item.as_dict()})
            case p.ItemDelete(item_id=item_id):
                await self._when_settled(self._items.get(item_id), lambda: self._delete(item_id))
            case p.ItemTruncate(item_id=item_id, audio_end_ms=end):
                item = self._items.get(item_id)
                item.truncated_text(0)  # refuses a user or text item now; the end is checked once it is done
                await self._when_settled(item, lambda: self._truncate(item_id, end))
            case p.ResponseCreate(instructions=instructions, metadata=metadata):
                if instructions is not None:
                    await self._limits.check_instructions(instructions)
                self._create_response(instructions, metadata)
            case p.ResponseCancel(response_id=response_id):
                self._cancel(response_id)

    def notify(self, notification: Mapping[str, Any]) -> None:
        """Send one of the avatar's own messages (`voice_server.avatar.proactive`) as ``soma.notification``."""
        self._emit({"type": "soma.notification", "notification": dict(notification)})

    def error(self, exc: p.ProtocolError) -> None:
        """Send ``exc`` as an ``error`` event."""
        self._emit(p.error_event(exc))

    def _update(self, new: p.SessionSettings) -> None:
        if self._media_out is not None:
            new = dataclasses.replace(new, input_rate=MEDIA_RATE)  # the track's rate, whatever the format says
        old, self.settings = self.settings, new
        assert self._session is not None and self._context is not None
        self._session.set_audio_output(new.audio_out)
        if new.instructions != old.instructions:
            self._context.persona = new.instructions or self._persona
        if new.voice != old.voice and (tts := self._voices.get(new.voice)) is not None:
            self._session.set_voice(tts)
        self.transport.set_input_rate(new.input_rate)
        if new.server_vad != old.server_vad or new.input_rate != old.input_rate:
            self._manual = _ManualAudio()
            self.transport.clear_audio()
        if new.turn_detection != old.turn_detection and new.turn_detection is not None:
            td = new.turn_detection
            self._session.tune(td.turn_config(self._base_turn), td.vad_config(self._base_vad), td.preroll_s)
        self._emit({"type": "session.updated", "session": self._session_object()})

    def _append(self, pcm: Pcm) -> None:
        if self.settings.server_vad:
            if not self.transport.append_audio(pcm):
                raise p.ProtocolError("input_audio_buffer_full", "more than 30 s of audio is waiting; send audio "
                                      "no faster than real time", param="audio")
            return
        if self._manual.samples + len(pcm) > MAX_MANUAL_AUDIO_S * self.settings.input_rate:
            raise p.ProtocolError("input_audio_buffer_full", f"at most {MAX_MANUAL_AUDIO_S:.0f} s of audio can "
                                  "wait for a commit", param="audio")
        self._manual.chunks.append(pcm)
        self._manual.samples += len(pcm)

    async def _commit(self) -> None:
        if self.settings.server_vad:
            raise p.ProtocolError("commit_not_allowed", "with server_vad the server commits audio itself; set "
                                  "turn_detection to null to commit manually")
        if self._manual.samples < MIN_COMMIT_S * self.settings.input_rate:
            raise p.ProtocolError("input_audio_buffer_commit_empty", "commit needs at least 100 ms of audio")
        if self._transcribe is None:
            raise p.ProtocolError("audio_not_supported", "this server has no speech recogniser loaded")
        pcm = np.concatenate(self._manual.chunks)
        self._manual = _ManualAudio()
        item_id = p.new_id("item")
        self._emit({"type": "input_audio_buffer.committed", "item_id": item_id, "previous_item_id": self._last_item})
        audio, rate = to_float(pcm), self.settings.input_rate
        if rate != PIPELINE_RATE:
            audio = resample(audio, rate, PIPELINE_RATE)
        text = (await self._transcribe(audio)).strip()
        self._add_user_item(item_id, text, audio=True)
        self._transcript_event("completed", item_id, transcript=text, usage=p.duration_usage(len(pcm) / rate))
        if text:
            await self._limits.check_turn([t for _, t in self._pending], text, param="audio")
            self._pending.append((item_id, text))

    def _create_response(self, instructions: str | None = None, metadata: dict[str, str] | None = None) -> None:
        if self.active:
            raise p.ProtocolError("conversation_already_has_active_response", "a response is in progress; "
                                  "cancel it (response.cancel) or wait for response.done")
        # Without new input the avatar answers the conversation as it stands (it speaks first, or goes on).
        text = "\n".join(t for _, t in self._pending)
        if len(text) > p.MAX_MESSAGE_CHARS:
            raise p.ProtocolError("text_too_long", f"the pending messages exceed {p.MAX_MESSAGE_CHARS} characters")
        if not self.transport.push_text(text, instructions):
            raise p.ProtocolError("rate_limit_exceeded", "too many turns are waiting")
        response = _Response(p.new_id("resp"), p.new_id("item"), self.settings.audio_out, typed_text=text.strip(),
                             metadata=metadata, user_items=[item_id for item_id, _ in self._pending])
        self._pending.clear()
        self._unbound.append(response)
        self._emit({"type": "response.created", "response": self._response_object(response, "in_progress")})

    def _cancel(self, response_id: str | None) -> None:
        candidates = [*self._unbound, *self._responses.values()]
        targets = [r for r in candidates if response_id in (None, r.id)]
        if not targets:
            raise p.ProtocolError("response_cancel_not_active", "there is no active response to cancel",
                                  param="response_id")
        for response in targets:
            response.cancel_reason = "client_cancelled"
            if response.turn_id is not None and self._session is not None:
                self._session.interrupt()

    # ------------------------------------------------------------------------------------ session events

    def on_session_event(self, event: OutputEvent) -> None:
        """Translate one pipeline event into protocol events."""
        match event:
            case UserSpeech(speaking=True, t=t):
                self._idle.disarm()
                if self._speech_item is None:  # a new utterance (not a resumed one within the same turn)
                    self._speech_item = p.new_id("item")
                    self._deltas = TranscriptDeltas()
                    self._speech_span = (t, t)
                self._emit({"type": "input_audio_buffer.speech_started", "item_id": self._speech_item,
                            "audio_start_ms": self._audio_ms(t)})
            case UserSpeech(speaking=False, t=t):
                if self._speech_item is not None:
                    self._speech_span = (self._speech_span[0], t)
                    self._emit({"type": "input_audio_buffer.speech_stopped", "item_id": self._speech_item,
                                "audio_end_ms": self._audio_ms(t)})
            case UserTranscript(text=text, final=False):
                self._partial(text)
            case UserTranscript(text=text, final=True, turn_id=turn_id):
                self._final(text, turn_id)
            case ReplyText(reply_id=reply_id, delta=delta):
                response = self._responses.get(reply_id)
                if response is not None:
                    self._announce(response)
                    if (item := self._items.find(response.item_id)) is not None:
                        item.text += delta
                    kind = "response.output_audio_transcript.delta" if response.audio else "response.output_text.delta"
                    self._emit({"type": kind, **self._where(response), "delta": delta})
            case ReplyDone():
                self._done(event)
            case TurnState(state=state):
                self.transport.set_speaking(state != "listening" and self.settings.audio_out)
                td = self.settings.turn_detection
                # As OpenAI's: counted from the end of an answer (not from the start of the session).
                if state == "listening" and td is not None and self._session is not None and self._answered:
                    self._idle.arm(td.idle_timeout_ms, self._session.now())
                else:
                    self._idle.disarm()
                if self._media_out is not None:
                    self._emit({"type": "soma.turn_state", "state": state})
            case ErrorEvent(code=code, message=message):
                kind = "invalid_request_error" if code in _CLIENT_ERRORS else "server_error"
                self._emit(p.error_event(p.ProtocolError(code, message), kind))
            case LatencyMark():
                # Not part of the OpenAI protocol: only WebRTC calls (Soma's own call page) get them.
                if self._media_out is not None:
                    self._mark(event)

    def on_audio(self, pcm: Pcm) -> None:
        """A 20 ms frame of the avatar's voice, read at real-time pace: send it with the speaking response."""
        response = next((r for r in reversed(self._responses.values()) if r.audio), None)
        if response is None:
            return
        self._announce(response)
        if self._media_out is not None:
            if not response.media_started:
                response.media_started = True
                self._emit({"type": "output_audio_buffer.started", "response_id": response.id})
            self._media_out(pcm)
            return
        delta = base64.b64encode(pcm.astype("<i2").tobytes()).decode()
        self._emit({"type": "response.output_audio.delta", **self._where(response), "delta": delta})

    def _mark(self, mark: LatencyMark) -> None:
        """Collect a turn's latency marks; at its first audio out, send ``soma.turn_latency`` (ms after the
        end of the user's speech)."""
        marks = self._marks.setdefault(mark.turn_id, {})
        marks[mark.name] = mark.t
        if mark.name == "first_audio_out" and "speech_end" in marks:
            origin = marks["speech_end"]
            self._emit({"type": "soma.turn_latency", "turn_id": mark.turn_id,
                        "voice_to_voice_ms": round((mark.t - origin) * 1000),
                        "marks_ms": {k: round((v - origin) * 1000) for k, v in marks.items()}})
        while len(self._marks) > MAX_MARKED_TURNS:
            self._marks.pop(next(iter(self._marks)))

    def _partial(self, text: str) -> None:
        if not text:  # the utterance was dropped (noise, a backchannel): the next speech is a new item
            self._speech_item = None
            return
        if self._speech_item is not None and (delta := self._deltas.partial(text)):
            self._transcript_event("delta", self._speech_item, delta=delta)

    def _final(self, text: str, turn_id: int) -> None:
        if self._unbound and self._unbound[0].typed_text == text:
            response = self._unbound.popleft()
            for item_id in response.user_items:
                if (item := self._items.find(item_id)) is not None:
                    item.turn_id = turn_id
        else:  # a spoken turn: the session answers it by itself
            item_id = self._speech_item or p.new_id("item")
            self._speech_item = None
            self._emit({"type": "input_audio_buffer.committed", "item_id": item_id,
                        "previous_item_id": self._last_item})
            self._add_user_item(item_id, text, audio=True, turn_id=turn_id)
            delta, corrected = self._deltas.final(text)
            if delta:
                self._transcript_event("delta", item_id, delta=delta)
            if corrected:
                self._emit({"type": "soma.input_audio_transcription.corrected", "item_id": item_id,
                            "content_index": 0, "transcript": text})
            spoke = self._speech_span[1] - self._speech_span[0]
            self._transcript_event("completed", item_id, transcript=text, usage=p.duration_usage(spoke))
            response = _Response(p.new_id("resp"), p.new_id("item"), self.settings.audio_out)
            self._emit({"type": "response.created", "response": self._response_object(response, "in_progress")})
        response.turn_id = turn_id
        self._responses[turn_id] = response
        if response.cancel_reason is not None and self._session is not None:
            self._session.interrupt()

    def _announce(self, r: _Response) -> None:
        if r.announced:
            return
        r.announced = True
        self._items.add(Item(r.item_id, "assistant", r.audio, "", status="in_progress", turn_id=r.turn_id))
        item = p.assistant_item(r.item_id, "", audio=r.audio, status="in_progress")
        self._emit({"type": "response.output_item.added", "response_id": r.id, "output_index": 0, "item": item})
        self._emit({"type": "conversation.item.added", "item": item, "previous_item_id": self._last_item})
        self._last_item = r.item_id
        part = {"type": "audio", "transcript": ""} if r.audio else {"type": "text", "text": ""}
        self._emit({"type": "response.content_part.added", **self._where(r), "part": part})

    def _done(self, event: ReplyDone) -> None:
        r = self._responses.pop(event.reply_id, None)
        if r is None:
            return
        status = "cancelled" if event.interrupted else "completed"
        text = event.heard_text
        if r.announced:
            where = self._where(r)
            if r.audio:
                self._emit({"type": "response.output_audio.done", **where})
                self._emit({"type": "response.output_audio_transcript.done", **where, "transcript": text})
                part: dict[str, Any] = {"type": "audio", "transcript": text}
            else:
                self._emit({"type": "response.output_text.done", **where, "text": text})
                part = {"type": "text", "text": text}
            self._emit({"type": "response.content_part.done", **where, "part": part})
            item_status = "incomplete" if event.interrupted else "completed"
            self._items.add(Item(r.item_id, "assistant", r.audio, text, item_status, r.turn_id, event.spans,
                                 event.played_s))
            item = p.assistant_item(r.item_id, text, audio=r.audio, status=item_status)
            self._emit({"type": "response.output_item.done", "response_id": r.id, "output_index": 0, "item": item})
            self._emit({"type": "conversation.item.done", "item": item, "previous_item_id": None})
        if r.media_started:
            kind = "output_audio_buffer.cleared" if event.interrupted else "output_audio_buffer.stopped"
            self._emit({"type": kind, "response_id": r.id})
        body = self._response_object(r, status, output_text=text if r.announced else None)
        body["usage"] = p.usage_object(event.usage)
        self._answered = True
        if event.interrupted:
            body["status_details"] = {"type": "cancelled", "reason": r.cancel_reason or "turn_detected"}
        self._emit({"type": "response.done", "response": body})
        for edit in r.after_done:
            self._spawn_edit(edit())

    # ------------------------------------------------------------------------------------- item edits

    async def _when_settled(self, item: Item, edit: Callable[[], Awaitable[None]]) -> None:
        """Apply ``edit`` now, or — when ``item`` belongs to a response still running — once that response
        is done (an assistant item's response is cut short first: the client stopped it)."""
        for r in [*self._unbound, *self._responses.values()]:
            if item.id in r.user_items or (item.id == r.item_id and r.announced):
                r.after_done.append(edit)
                if item.role == "assistant":
                    self._cancel(r.id)
                return
        await edit()

    async def _delete(self, item_id: str) -> None:
        """Remove an item from what the model sees; ``conversation.item.deleted``."""
        item = self._items.get(item_id)
        self._items.remove(item_id)
        self._pending = [(i, t) for i, t in self._pending if i != item_id]
        if item.turn_id is not None and self._session is not None:
            rest = "\n".join(i.text for i in self._items.of_turn(item.turn_id, item.role))
            if self._session.edit_turn(item.turn_id, item.role, rest) and self._keeper is not None:
                await self._keeper.history_edited(list(self._session.history))
        self._emit({"type": "conversation.item.deleted", "item_id": item_id})

    async def _truncate(self, item_id: str, audio_end_ms: int) -> None:
        """Keep only the words of an assistant audio item heard by ``audio_end_ms`` (the client's own playback
        stopped there): in the item, the model's history and the stored turn; ``conversation.item.truncated``."""
        item = self._items.get(item_id)
        heard = item.truncated_text(audio_end_ms)
        item.text, item.played_s = heard, audio_end_ms / 1000
        if item.turn_id is not None and self._session is not None:
            if self._session.edit_turn(item.turn_id, "assistant", heard) and self._keeper is not None:
                await self._keeper.history_edited(list(self._session.history), (item.turn_id, heard))
        self._emit({"type": "conversation.item.truncated", "item_id": item_id, "content_index": 0,
                    "audio_end_ms": audio_end_ms})

    def _spawn_edit(self, edit: Awaitable[None]) -> None:
        async def run() -> None:
            try:
                await edit
            except p.ProtocolError as exc:
                self.error(exc)
            except Exception:  # like a failed event: the client hears of it, the connection goes on
                log.exception("realtime item edit failed")
                self._emit(p.error_event(p.ProtocolError("server_error", "the item edit failed"), "server_error"))

        task = asyncio.get_running_loop().create_task(run(), name="realtime-item-edit")
        self._edits.add(task)
        task.add_done_callback(self._edits.discard)

    async def aclose(self) -> None:
        """Stop item edits still running and the idle timer (the connection ended)."""
        self._idle.disarm()
        await cancel_and_wait(*self._edits, timeout=2.0)

    def _on_idle(self, since: float) -> None:
        """The caller stayed silent for ``idle_timeout_ms`` after an answer: say so, and speak up."""
        if self.active or self._pending or self._session is None:
            return
        self._emit({"type": "input_audio_buffer.timeout_triggered", "item_id": p.new_id("item"),
                    "audio_start_ms": self._audio_ms(since), "audio_end_ms": self._audio_ms(self._session.now())})
        try:
            self._create_response()
        except p.ProtocolError as exc:  # a loop callback: the client hears of it, nothing else can
            self.error(exc)

    # ------------------------------------------------------------------------------------------- helpers

    def _add_user_item(self, item_id: str, text: str, *, audio: bool, turn_id: int | None = None) -> None:
        self._items.add(Item(item_id, "user", audio, text, turn_id=turn_id))
        item = p.user_item(item_id, text, audio=audio)
        self._emit({"type": "conversation.item.added", "item": item, "previous_item_id": self._last_item})
        self._emit({"type": "conversation.item.done", "item": item, "previous_item_id": self._last_item})
        self._last_item = item_id

    def _transcript_event(self, kind: str, item_id: str, **fields: Any) -> None:
        self._emit({"type": f"conversation.item.input_audio_transcription.{kind}", "item_id": item_id,
                    "content_index": 0, **fields})

    def _where(self, r: _Response) -> dict[str, Any]:
        return {"response_id": r.id, "item_id": r.item_id, "output_index": 0, "content_index": 0}

    def _response_object(self, r: _Response, status: str, output_text: str | None = None) -> dict[str, Any]:
        return p.response_object(r.id, r.item_id, status, audio=r.audio, output_text=output_text,
                                 session_id=self.session_id, metadata=r.metadata, voice=self.settings.voice)

    def _session_object(self) -> dict[str, Any]:
        persona = self._context.persona if self._context is not None else ""
        return p.session_object(self.session_id, self.model, self.settings, persona)

    def _audio_ms(self, t: float) -> int:
        # Audio is fed at real-time pace on the session's clock, so session time since the first frame is
        # (within the feeding lead) the position in the audio the client sent.
        t0 = self.transport.audio_t0
        return max(0, round((t - t0) * 1000)) if t0 is not None else 0

    def _emit(self, event: dict[str, Any]) -> None:
        self._emit_raw({"event_id": self._ids.next(), **event})


def new_connection(
    models: ModelSet,
    model: str,
    persona: str,
    emit: Callable[[dict[str, Any]], None],
    media_out: Callable[[Pcm], None] | None = None,
) -> RealtimeConnection:
    """A `RealtimeConnection` wired to the server's loaded models (its ASR for manual commits, its voices).

    Args:
        models: The loaded `models.registry` model set (its LLM's ``limits`` and tokenizer bound user input).
        model: The avatar id the client named.
        persona: The avatar's system prompt.
        emit: Where server events go.
        media_out: WebRTC only: where the avatar's audio goes (a media track) instead of audio delta events.
    """
    asr = models.asr
    llm = models.llm

    async def transcribe(audio: FloatAudio) -> str:
        assert asr is not None  # handed to the connection only when the speech model is loaded
        result = await asr.atranscribe_utterance(audio)
        return str(result.text)

    return RealtimeConnection(
        model=model,
        persona=persona,
        emit=emit,
        transcribe=transcribe if asr is not None else None,
        voices={"fast": models.tts_fast, "quality": models.tts_quality},
        media_out=media_out,
        limits=llm.limits if llm is not None else None,
        count_tokens=llm.acount_text_tokens if llm is not None else None,
    )
