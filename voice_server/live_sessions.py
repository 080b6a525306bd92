"""Live session state in Redis: what a reconnecting client (or another worker) needs to continue a session.

``session:{id}`` holds one JSON document per live session — owner, conversation, avatar, channel, turn state,
the user's words being answered, the heard history window and timestamps — refreshed at every turn with a TTL
of `SESSION_TTL_S`. The session id is derived from the conversation id (``sess_<hex>``), so when Redis has
lost the key (restart, eviction, TTL) the session is rebuilt from the conversation's turns in Postgres and
continues; Redis is a fast path, never the only copy.

A write that fails (Redis down) is logged and skipped: a live call never waits on or fails because of Redis.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
import uuid
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, Literal, Protocol

import psycopg
from redis.exceptions import RedisError

from pipeline.frames import TurnStateName
from pipeline.ports import Message
from voice_server.security import fields
from voice_server.security.keys import DecryptionError, Keyring
from voice_server.stores.postgres import Database
from voice_server.stores.redis_store import SessionStore

log = logging.getLogger(__name__)

SESSION_TTL_S = 30 * 60
HISTORY_WINDOW = 20  # messages kept in the live state (the session's own history bound)
REDIS_TIMEOUT_S = 0.25
PREFIX = "sess_"

LiveTurnState = TurnStateName | Literal["disconnected"]
"""A live session's state: the avatar's, or ``disconnected`` once its transport closed (resumable)."""


def session_id_for(conversation_id: uuid.UUID) -> str:
    """The public session id of a conversation's live session."""
    return PREFIX + conversation_id.hex


def conversation_of(session_id: str) -> uuid.UUID | None:
    """The conversation id inside a session id, or ``None`` if it is not one of ours."""
    if not session_id.startswith(PREFIX) or len(session_id) != len(PREFIX) + 32:
        return None
    try:
        return uuid.UUID(hex=session_id[len(PREFIX) :])
    except ValueError:
        return None


@dataclass(slots=True)
class LiveState:
    """One live session (see the module docstring). Times are Unix seconds."""

    session_id: str
    user_id: str
    conversation_id: str
    avatar: str
    channel: str
    turn_state: LiveTurnState = "listening"
    pending: str | None = None
    history: list[Message] = field(default_factory=list)
    started_at: float = field(default_factory=time.time)
    updated_at: float = field(default_factory=time.time)
    last_turn_at: float | None = None
    source: str = "redis"  # where a loaded state came from: "redis" or "postgres" (not stored)

    def to_json(self) -> str:
        data = asdict(self)
        data.pop("source")
        return json.dumps(data, ensure_ascii=False)


class DurableSessions(Protocol):
    """Where a session is rebuilt from when Redis lost it: the conversations' owner
    (`voice_server.conversations.ConversationStore`). A protocol, because that module imports this one: the
    conversations and turns tables are read only by their owner, which this module must not import."""

    async def live_state(
        self, conversation_id: uuid.UUID, user_id: uuid.UUID, *, history_messages: int
    ) -> LiveState | None:
        """The conversation's session rebuilt from Postgres, or ``None`` unless it is ``user_id``'s and was
        active within `SESSION_TTL_S`."""
        ...


class LiveSessions:
    """Reads and writes `LiveState` (Redis first, Postgres as the fallback for reads).

    The Redis value is ``owner uuid (16 bytes) ‖ state JSON sealed with the owner's data key`` bound to the
    session id: Redis (and its dump file) never holds conversation text in clear, and a value copied under
    another session's key does not open.

    Args:
        redis: The session store.
        db: The database holding the users' data keys.
        keys: The users' data keys.
        durable: The conversations, which rebuild a session Redis does not hold.
    """

    def __init__(self, redis: SessionStore, db: Database, keys: Keyring, durable: DurableSessions) -> None:
        self.redis = redis
        self.db = db
        self.keys = keys
        self.durable = durable

    async def save(self, state: LiveState) -> bool:
        """Write ``state`` with a fresh TTL; ``False`` (logged) if Redis is unavailable."""
        state.updated_at = time.time()
        owner = uuid.UUID(state.user_id)
        try:
            key = await self.keys.user_key(self.db.pool, owner)
        except (psycopg.Error, LookupError) as exc:  # the key is cached after a session's first turn
            log.warning("live session state not saved: no data key (%s)", type(exc).__name__)
            return False
        value = owner.bytes + key.seal(state.to_json(), fields.live_session(state.session_id))
        try:
            async with asyncio.timeout(REDIS_TIMEOUT_S):
                await self.redis.client.set(f"session:{state.session_id}", value, ex=SESSION_TTL_S)
            return True
        except (RedisError, OSError, TimeoutError) as exc:
            log.warning("live session state not saved (%s); Postgres still has every turn", type(exc).__name__)
            return False

    async def forget(self, session_id: str) -> None:
        """Drop a session's state (it ended for good)."""
        try:
            async with asyncio.timeout(REDIS_TIMEOUT_S):
                await self.redis.client.delete(f"session:{session_id}")
        except (RedisError, OSError, TimeoutError):
            log.warning("live session state not deleted; it expires by TTL")

    async def load(self, session_id: str, user_id: uuid.UUID, *, history_messages: int) -> LiveState | None:
        """The state of ``session_id`` if it belongs to ``user_id``: from Redis, else rebuilt from Postgres;
        ``None`` if there is no such session of this user (or it has not been active within the TTL)."""
        conversation_id = conversation_of(session_id)
        if conversation_id is None:
            return None
        raw: bytes | str | None = None
        try:
            async with asyncio.timeout(REDIS_TIMEOUT_S):
                raw = await self.redis.client.get(f"session:{session_id}")
        except (RedisError, OSError, TimeoutError) as exc:
            log.warning("live session state unavailable (%s); rebuilding from Postgres", type(exc).__name__)
        if raw is not None:
            if isinstance(raw, str):
                raw = raw.encode()
            if raw[:16] != user_id.bytes:
                return None  # someone else's session id
            key = await self.keys.user_key(self.db.pool, user_id)
            try:
                state = _parse(key.open(raw[16:], fields.live_session(session_id)))
            except DecryptionError:
                log.warning("live session state does not open: ignored, rebuilt from Postgres")
                state = None
            if state is not None and state.user_id == str(user_id):
                return state
        return await self.durable.live_state(conversation_id, user_id, history_messages=history_messages)


def _parse(raw: bytes | str) -> LiveState | None:
    try:
        data: Any = json.loads(raw)
        data.pop("source", None)
        return LiveState(**data)
    except (ValueError, TypeError, AttributeError):
        log.warning("unreadable live session state ignored")
        return None


def window(history: Sequence[Message], turn_user: str, turn_heard: str) -> list[Message]:
    """``history`` plus one finished turn, cut to the newest `HISTORY_WINDOW` messages."""
    messages: list[Message] = [*history]
    if turn_user:  # empty when the avatar spoke first
        messages.append({"role": "user", "content": turn_user})
    if turn_heard:
        messages.append({"role": "assistant", "content": turn_heard})
    return messages[-HISTORY_WINDOW:]
