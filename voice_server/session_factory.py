"""Turns an authenticated connection into a recorded pipeline conversation.

Shared by every channel (realtime WebSocket now; WebRTC and SIP calls use the same path): open a conversation
row, seed the session with the user's recent heard history (a reconnect within `RESUME_WINDOW_S` continues
where it left off), and wire the session to the shared models, the avatar's persona and the turn metrics.
"""

from __future__ import annotations

import dataclasses
import uuid
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

from prometheus_client import Gauge

from pipeline.llm import ConversationLlm
from pipeline.ports import Transport, Tts
from pipeline.session import Session, SessionConfig, SessionModels
from voice_server.accounts import Principal
from voice_server.avatar.directory import Avatar
from voice_server.avatar.training.serving import Lease, tuned_policy
from voice_server.conversations import AvatarContext, Channel, ConversationStore
from voice_server.errors import ApiError
from voice_server.live_calls import LiveCalls
from voice_server.live_sessions import HISTORY_WINDOW as HISTORY
from voice_server.live_sessions import LiveSessions, LiveState, session_id_for
from voice_server.resources import Resources

if TYPE_CHECKING:  # types only: the model runtimes are imported when the models load
    from models.registry import ModelSet

RESUME_WINDOW_S = 30 * 60.0  # turns younger than this seed a new session's history
Voice = Literal["fast", "quality"]


def session_models(
    model_set: ModelSet | None, voice: Voice = "fast", *, need_audio: bool = True, tts: Tts | None = None
) -> SessionModels:
    """The shared model handles a session uses, with the chosen voice (the other one if it is not loaded).

    ``tts``, when given, is the voice to speak with instead (the avatar's chosen voice).

    Raises:
        ApiError: 503 ``models_unavailable`` when the server runs without models (or without the audio
            models a voice session needs).
    """
    if model_set is None or model_set.llm is None:
        raise ApiError(503, "models_unavailable", "this server was started without models")
    fast, quality = model_set.tts_fast, model_set.tts_quality
    chosen_tts = tts or ((fast or quality) if voice == "fast" else (quality or fast))
    if need_audio and (model_set.vad is None or model_set.asr is None or chosen_tts is None):
        raise ApiError(503, "models_unavailable", "the speech models are not loaded on this server")
    return SessionModels(
        llm=ConversationLlm(model_set.llm),
        vad=model_set.vad,
        asr=model_set.asr,
        tts=chosen_tts,
        vad_executor=model_set.vad.lane.executor if model_set.vad is not None else None,
    )


@dataclass(slots=True)
class Conversation:
    """A session bound to a recorded conversation. Channels run it in a
    `voice_server.session_lifetime.SessionLifetime`, which calls `close` after the session's `run` ended."""

    session: Session
    context: AvatarContext
    store: ConversationStore
    live: Gauge
    state: LiveState
    sessions: LiveSessions
    calls: LiveCalls
    lease: Lease | None = None

    @property
    def session_id(self) -> str:
        """The id a client quotes to resume this session (``sess_…``)."""
        return self.state.session_id

    async def close(self) -> None:
        """Mark the conversation ended; its live state stays (TTL) so the client can resume. Call once."""
        try:
            self.state.turn_state, self.state.pending = "disconnected", None
            await self.sessions.save(self.state)
            await self.store.end(self.context.conversation_id, self.context.user_id)
        finally:
            self.live.dec()
            self.calls.closed()
            if self.lease is not None:
                self.lease.release()


async def find_session(
    res: Resources, user: Principal, session_id: str | None, channel: Channel, avatar: Avatar
) -> LiveState | None:
    """The live state of the session a client wants to resume (``None`` when it names none).

    Raises:
        ApiError: 404 ``session_not_found`` for an unknown, expired or someone else's session id, or one of
            another channel or avatar.
    """
    if session_id is None:
        return None
    sessions = LiveSessions(res.sessions, res.db, res.keys, ConversationStore(res.db, res.keys))
    state = await sessions.load(session_id, user.user_id, history_messages=HISTORY)
    if state is None or state.channel != channel or state.avatar != avatar.id:
        raise ApiError(404, "session_not_found", f"no live {channel} session with this id for this model "
                                                 "(it may have expired)")
    return state


async def open_conversation(
    res: Resources,
    user: Principal,
    avatar: Avatar,
    channel: Channel,
    transport: Transport,
    *,
    voice: Voice | None = None,
    config: SessionConfig | None = None,
    resume: LiveState | None = None,
) -> Conversation:
    """Create the session for ``transport`` (not started: the caller runs ``session.run()``).

    The person's own tuned model answers when they switched one on (`voice_server.avatar.training`); the
    conversation holds it until `Conversation.close`.

    Args:
        voice: A stock voice to speak with; ``None`` (every channel's default): the voice the avatar's person
            chose (`voice_server.avatar.voice`), or the fast stock voice when they chose none.
        resume: A session to continue (`find_session`): same conversation, its heard history.

    Raises:
        ApiError: 503 when the models are not loaded.
    """
    need_audio = transport.audio_in_rate is not None
    chosen = None
    if voice is None and need_audio and res.voices is not None:
        chosen = await res.voices.tts_for(user.user_id)
    models = session_models(res.models, voice or "fast", need_audio=need_audio, tts=chosen)
    config = config or SessionConfig(user=str(user.user_id))
    store = ConversationStore(res.db, res.keys)
    sessions = LiveSessions(res.sessions, res.db, res.keys, store)
    if resume is not None:
        conversation_id = uuid.UUID(resume.conversation_id)
        await store.reopen(conversation_id, user.user_id)
        history = resume.history[-config.history_messages :]
        state = resume
    else:
        conversation_id = await store.start(user.user_id, avatar.id, channel)
        history = await store.recent_history(
            user.user_id, max_messages=config.history_messages, within_s=RESUME_WINDOW_S
        )
        state = LiveState(session_id_for(conversation_id), str(user.user_id), str(conversation_id), avatar.id, channel)
    state.history, state.turn_state, state.pending = list(history), "listening", None
    await sessions.save(state)
    context = AvatarContext(store, conversation_id, user.user_id, avatar.persona, res.memory, live=(sessions, state),
                            examples=res.persona, username=user.username, bond=res.bond)
    # Leased last: nothing after this can fail, so the lease is always released by `Conversation.close`.
    lease = await res.training.lease_for(user.user_id) if res.training is not None else None
    if lease is not None:
        models = dataclasses.replace(models, llm=ConversationLlm(lease.llm, tuned_policy()))
    session = Session(transport, models, context=context, config=config, observer=res.metrics.for_channel(channel),
                      history=history)
    live = res.metrics.live_conversations.labels(channel)
    live.inc()
    res.live_calls.opened()
    return Conversation(session, context, store, live, state, sessions, res.live_calls, lease)
