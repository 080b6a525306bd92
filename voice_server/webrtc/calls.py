"""WebRTC calls: one aiortc peer connection per call, bridged to a recorded pipeline conversation.

A call is created from the browser's SDP offer, checked first by `voice_server.webrtc.offer` (aiortc trusts
its input), with no trickle ICE: the answer carries every host candidate, and STUN/TURN servers when
configured. The caller's microphone track feeds the session; the avatar's voice goes out on `BotAudioTrack`;
the ``oai-events`` data channel carries the same JSON events as the realtime WebSocket (through the same
`RealtimeConnection`). A session config sent with the offer (`voice_server.webrtc.session_config`) is checked
before anything is created and applied as the call's first client event: the channel hears ``session.created``
then ``session.updated``, and what the client sends on it is handled only after. A call ends on hang-up
(``DELETE``), when the peer connection fails or closes (page closed, network gone), when ICE never connects
(`CONNECT_TIMEOUT_S`: also the end of a call whose aiortc connect task died, which aiortc does not report), or
at server shutdown; every task, the session and the peer connection are released then. An offer that fails
while it is being answered releases what it took too.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from aiortc import (
    MediaStreamTrack,
    RTCConfiguration,
    RTCDataChannel,
    RTCIceServer,
    RTCPeerConnection,
    RTCSessionDescription,
)

from pipeline.tasks import cancel_and_wait
from voice_server.accounts import Principal
from voice_server.avatar.directory import Avatar
from voice_server.errors import ApiError
from voice_server.live_sessions import LiveState
from voice_server.realtime import protocol as p
from voice_server.realtime.connection import MEDIA_RATE, RealtimeConnection, new_connection
from voice_server.realtime.limits import InputLimits
from voice_server.resources import Resources
from voice_server.session_factory import Conversation, open_conversation
from voice_server.session_lifetime import SessionLifetime
from voice_server.webrtc.offer import OfferError, ValidOffer, validate_offer
from voice_server.webrtc.session_config import CallSessionConfig
from voice_server.webrtc.tracks import BotAudioTrack, pump_microphone

log = logging.getLogger(__name__)

CONNECT_TIMEOUT_S = 30.0
CHANNEL = "oai-events"
MAX_EARLY_EVENTS = 256  # events waiting for the data channel to open
MAX_INBOX = 256  # data-channel messages waiting to be handled
MAX_CHANNEL_BUFFER = 1024 * 1024
# An idle call costs ~3 % of a core (bench/webrtc_call.py): beyond ~50 on two cores every call degrades and
# ICE consent checks start to time out, so further calls are refused (503) instead.
MAX_CALLS = 48


def ice_servers(urls: Sequence[str], username: str | None, credential: str | None) -> list[RTCIceServer]:
    """STUN/TURN servers from settings (``stun:host:port``, ``turn:host:port?transport=udp``)."""
    return [RTCIceServer(urls=url, username=username, credential=credential) for url in urls]


def check_offer(sdp: str) -> ValidOffer:
    """Validate an offer before any peer connection exists (`validate_offer`).

    Raises:
        ApiError: 400 with the `OfferError`'s code (``invalid_sdp``, ``offer_without_audio``,
            ``unsupported_media``) and reason.
    """
    try:
        return validate_offer(sdp)
    except OfferError as exc:
        raise ApiError(400, exc.code, exc.reason) from None


async def _check_instructions(llm: Any, instructions: str | None) -> None:
    """Refuse a session config whose instructions the call's connection would refuse (`InputLimits`, built as
    `new_connection` builds it), so that such a config fails the offer instead of reaching the data channel
    as an ``error`` event after the call was created.

    Raises:
        ApiError: 400 ``text_too_long``.
    """
    limits = InputLimits(llm.limits, llm.acount_text_tokens)
    try:
        await limits.check_instructions(instructions)
    except p.ProtocolError as exc:
        raise ApiError(400, exc.code, exc.message, param=exc.param) from None


class EventPipe:
    """Server events onto the ``oai-events`` data channel: held until it opens (bounded), then sent."""

    def __init__(self) -> None:
        self.channel: RTCDataChannel | None = None
        self._early: list[str] = []

    def send(self, event: dict[str, Any]) -> None:
        self._send_text(p.serialize_event(event))

    def _send_text(self, text: str) -> None:
        channel = self.channel
        if channel is not None and channel.readyState == "open":
            # SCTP buffers for a client that stops reading; beyond ~1 MB events are dropped, not queued.
            if channel.bufferedAmount < MAX_CHANNEL_BUFFER:
                channel.send(text)
        elif len(self._early) < MAX_EARLY_EVENTS:
            self._early.append(text)

    def opened(self) -> None:
        """The channel is open: send what waited."""
        early, self._early = self._early, []
        for text in early:
            self._send_text(text)


@dataclass(eq=False)
class Call:
    """One live call and everything it owns."""

    id: str
    user_id: uuid.UUID
    pc: RTCPeerConnection
    track: BotAudioTrack
    events: EventPipe
    conn: RealtimeConnection
    conversation: Conversation | None = None
    session_update: str | None = None  # the offer's session config, applied before any data-channel event
    inbox: asyncio.Queue[str] = field(default_factory=lambda: asyncio.Queue(MAX_INBOX))
    tasks: list[asyncio.Task[Any]] = field(default_factory=list)  # the microphone pump(s)
    runner: asyncio.Task[None] | None = None
    ended: asyncio.Event = field(default_factory=asyncio.Event)


class CallManager:
    """Every live call of the server; created by the app's lifespan, closed at shutdown.

    Args:
        res: The server's resources.
        max_calls: Most simultaneous calls (server-wide).
        max_per_user: Most simultaneous calls of one user.
    """

    def __init__(self, res: Resources, *, max_calls: int = MAX_CALLS, max_per_user: int = 4) -> None:
        self.res = res
        self.max_calls = max_calls
        self.max_per_user = max_per_user
        self.calls: dict[str, Call] = {}
        settings = res.settings
        self._config = RTCConfiguration(
            iceServers=ice_servers(settings.ice_urls, settings.webrtc_ice_username, settings.webrtc_ice_credential)
        )

    async def start(
        self,
        user: Principal,
        avatar: Avatar,
        offer_sdp: str,
        *,
        resume: LiveState | None = None,
        session: CallSessionConfig | None = None,
    ) -> tuple[str, str]:
        """Answer an offer and start the call (continuing ``resume``'s conversation if given, configured by
        ``session`` if given); returns ``(call_id, answer_sdp)``.

        Raises:
            ApiError: 400 for a bad offer (also one aiortc fails to answer) or for instructions in ``session``
                over the token limit, 429 when the user or the server has too many calls, 503 without models.
        """
        offer = check_offer(offer_sdp)
        if len(self.calls) >= self.max_calls:
            raise ApiError(503, "server_busy", "this server has no room for another call right now")
        if sum(1 for c in self.calls.values() if c.user_id == user.user_id) >= self.max_per_user:
            raise ApiError(429, "too_many_calls", f"at most {self.max_per_user} calls at once; hang one up first")
        models = self.res.models
        if models is None or models.llm is None:
            raise ApiError(503, "models_unavailable", "this server was started without models")
        if session is not None:
            await _check_instructions(models.llm, session.settings.instructions)
        pc = RTCPeerConnection(self._config)
        track = BotAudioTrack(p.OUTPUT_RATE)
        events = EventPipe()
        conn = new_connection(models, avatar.id, avatar.persona, events.send, media_out=track.push)
        call = Call("rtc_" + secrets.token_hex(12), user.user_id, pc, track, events, conn)
        call.session_update = session.event if session is not None else None
        try:
            await self._negotiate(call, offer)
            call.conversation = await open_conversation(
                self.res, user, avatar, "webrtc", call.conn.transport, resume=resume
            )
        except BaseException:
            await self._discard(call)
            raise
        assert pc.localDescription is not None
        call.conn.session_id = call.conversation.session_id
        call.conn.attach(call.conversation.session, call.conversation.context)
        self.calls[call.id] = call
        call.runner = asyncio.create_task(self._run(call), name=f"call-{call.id}")
        log.info("call %s started", call.id)
        return call.id, pc.localDescription.sdp

    async def _discard(self, call: Call) -> None:
        """Release a call that never started: the microphone pump aiortc's track event may have started, the
        outgoing track, the peer connection (and with it aiortc's connect task and sockets)."""
        await cancel_and_wait(*call.tasks, timeout=3.0)
        call.track.stop()
        with contextlib.suppress(Exception):  # the error that got us here is the one to report
            await call.pc.close()

    async def _negotiate(self, call: Call, offer: ValidOffer) -> None:
        """Apply the offer and create the answer (``call.pc.localDescription``).

        Raises:
            ApiError: 400 ``offer_without_audio`` when aiortc found no audio to answer, ``invalid_sdp`` when
                aiortc failed on an offer the validator let through.
        """
        pc = call.pc

        @pc.on("track")
        def on_track(remote: MediaStreamTrack) -> None:
            if remote.kind == "audio":
                call.tasks.append(
                    asyncio.create_task(pump_microphone(remote, call.conn.feed_media, MEDIA_RATE), name="call-mic")
                )

        @pc.on("datachannel")
        def on_channel(channel: RTCDataChannel) -> None:
            if channel.label != CHANNEL or call.events.channel is not None:
                return
            call.events.channel = channel

            @channel.on("message")
            def on_message(message: str | bytes) -> None:
                text = message if isinstance(message, str) else ""
                try:
                    call.inbox.put_nowait(text)
                except asyncio.QueueFull:
                    call.conn.error(p.ProtocolError("rate_limit_exceeded", "too many events waiting; ignored"))

            if channel.readyState == "open":
                call.events.opened()
            else:
                channel.on("open", call.events.opened)

        @pc.on("connectionstatechange")
        def on_state() -> None:
            if pc.connectionState in ("failed", "closed"):
                call.ended.set()

        try:
            await pc.setRemoteDescription(RTCSessionDescription(offer.sdp, "offer"))
            if not any(t.kind == "audio" for t in pc.getTransceivers()):
                raise ApiError(400, "offer_without_audio", "the offer has no audio to answer")
            pc.addTrack(call.track)
            answer = await pc.createAnswer()
            await pc.setLocalDescription(answer)  # gathers the ICE candidates into the answer
        except ApiError:
            raise
        except Exception as exc:
            # aiortc raises ValueError, OperationError (no codec in common) and, for SDP it does not expect,
            # anything at all. The validator admits only what it handles, so the traceback is logged: it shows
            # what the validator missed. Offers are rate-limited per user, which bounds this log.
            log.warning("call offer could not be answered", exc_info=exc)
            raise ApiError(400, "invalid_sdp", f"the offer could not be answered: {exc}"[:300]) from None

    async def _run(self, call: Call) -> None:
        """Apply the offer's session config, run the session until the call ends, then release everything.

        The config is applied through `RealtimeConnection.handle` as the call's first client event: before the
        session runs and before anything the data channel sends (that waits in ``call.inbox`` until
        `_handle_events` starts), so ``session.updated`` directly follows ``session.created``.
        """
        assert call.conversation is not None
        # The connection's item edits write history: they stop before the conversation is marked ended.
        lifetime = SessionLifetime(call.conversation, call.conn.transport, name=f"call {call.id}",
                                   on_stopped=call.conn.aclose)
        # The microphone pump(s): aiortc fires ``track`` while the offer is applied, so they all exist by now.
        lifetime.adopt(*call.tasks)
        try:
            async with lifetime:
                if call.session_update is not None:
                    await call.conn.handle(call.session_update)
                lifetime.start("call-session")
                lifetime.watch(call.conn.transport.pump_output(call.conn.on_audio), "call-audio-out")
                lifetime.watch(self._handle_events(call), "call-events")
                lifetime.watch(self._watch_connect(call), "call-connect-watch")
                lifetime.watch(call.ended.wait(), "call-ended")
                await lifetime.wait()
        finally:
            call.track.stop()
            with contextlib.suppress(Exception):
                await call.pc.close()
            self.calls.pop(call.id, None)
            log.info("call %s ended", call.id)

    async def _handle_events(self, call: Call) -> None:
        while True:
            await call.conn.handle(await call.inbox.get())

    async def _watch_connect(self, call: Call) -> None:
        """End a call whose ICE never connects (the page went away before it could)."""
        await asyncio.sleep(CONNECT_TIMEOUT_S)
        if call.pc.connectionState != "connected":
            log.info("call %s: ICE did not connect within %.0f s", call.id, CONNECT_TIMEOUT_S)
            return
        await asyncio.Event().wait()  # connected: this watcher has nothing more to do

    async def hang_up(self, call_id: str, user: Principal) -> bool:
        """End one of ``user``'s calls; ``False`` if there is no such call of theirs."""
        call = self.calls.get(call_id)
        if call is None or call.user_id != user.user_id:
            return False
        call.ended.set()
        if call.runner is not None:
            await asyncio.wait([call.runner], timeout=10.0)
        return True

    async def hang_up_user(self, user_id: uuid.UUID) -> int:
        """End every call of one user (their account is being erased); returns how many."""
        mine = [c for c in self.calls.values() if c.user_id == user_id]
        for call in mine:
            call.ended.set()
        runners = [c.runner for c in mine if c.runner is not None]
        if runners:
            await asyncio.wait(runners, timeout=10.0)
        return len(mine)

    async def aclose(self) -> None:
        """End every call (server shutdown)."""
        for call in list(self.calls.values()):
            call.ended.set()
        runners = [c.runner for c in self.calls.values() if c.runner is not None]
        if runners:
            await asyncio.wait(runners, timeout=10.0)
