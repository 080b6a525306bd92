"""Durable conversation history: each finished turn is committed to Postgres as it completes.

Every channel (realtime WebSocket, chat completions, and later WebRTC and SIP calls) records its turns through
`ConversationStore`, and every query filters by the owning user, so one user's history never reaches another
user's prompt. `AvatarContext` is the pipeline's `ContextBuilder` for a server conversation: it builds each
turn's prompt from the avatar's persona and the heard history, and records the finished turn.
"""

from __future__ import annotations

import asyncio
import collections
import json
import logging
import time
import uuid
from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Any, Literal

from pipeline.ports import FinishedTurn, Message
from voice_server.avatar.bond.service import BondService
from voice_server.avatar.memory.service import MemoryService, Recent
from voice_server.avatar.persona.service import PersonaService
from voice_server.live_sessions import SESSION_TTL_S, LiveSessions, LiveState, session_id_for, window
from voice_server.security import fields
from voice_server.security.keys import Conn, DecryptionError, Keyring, UserKey
from voice_server.stores.postgres import Database
from voice_server.stores.user_rows import UserRows

log = logging.getLogger(__name__)

Channel = Literal["realtime", "chat", "webrtc", "sip", "local"]
_STORED_IDS = 64  # recent turns whose stored ids a context remembers (a client may revise what was heard)


def marks_ms(marks: dict[str, float] | None) -> dict[str, float]:
    """Latency marks as milliseconds after the turn's earliest mark (session clocks differ per connection)."""
    if not marks:
        return {}
    origin = min(marks.values())
    return {name: round((t - origin) * 1000.0, 1) for name, t in sorted(marks.items(), key=lambda kv: kv[1])}


def heard_messages(turns: Sequence[dict[str, Any]]) -> list[Message]:
    """Conversation history from turn rows (oldest first): the user's words and what they heard of each
    answer (a turn nobody heard an answer to contributes only the user's words)."""
    messages: list[Message] = []
    for turn in turns:
        if turn["user_text"]:  # empty when the avatar spoke first
            messages.append({"role": "user", "content": turn["user_text"]})
        if turn["heard_text"]:
            messages.append({"role": "assistant", "content": turn["heard_text"]})
    return messages


class ConversationStore:
    """Conversations and turns of all users, always accessed on behalf of one user.

    Turn texts are sealed with the owner's data key (`voice_server.security`); they are opened only here, for
    that owner.

    Args:
        db: The server's database (migrations ``0002_conversations``, ``0004_security``).
        keys: The users' data keys.
    """

    def __init__(self, db: Database, keys: Keyring) -> None:
        self._db = db
        self._keys = keys

    async def start(self, user_id: uuid.UUID, avatar: str, channel: Channel) -> uuid.UUID:
        """Open a new conversation and return its id."""
        async with self._db.pool.connection() as conn:
            cur = await conn.execute(
                "INSERT INTO conversations (user_id, avatar, channel) VALUES (%s, %s, %s) RETURNING id",
                (user_id, avatar, channel),
            )
            row = await cur.fetchone()
        assert row is not None
        conversation_id: uuid.UUID = row["id"]
        return conversation_id

    async def add_turn(self, conversation_id: uuid.UUID, user_id: uuid.UUID, turn: FinishedTurn) -> int:
        """Commit one finished turn (its own transaction, so it survives whatever happens next); return its id."""
        async with self._db.pool.connection() as conn, conn.transaction():
            cur = await conn.execute(
                "UPDATE conversations SET updated_at = now() WHERE id = %s AND user_id = %s",
                (conversation_id, user_id),
            )
            if cur.rowcount != 1:
                raise LookupError("conversation not found for this user")
            # The index is the conversation's next one, not the session's turn id: a chat conversation spans
            # many requests, each with its own one-turn exchange. The UPDATE above holds the conversation's
            # row lock, so concurrent turns of one conversation cannot take the same index.
            cur = await conn.execute(
                "SELECT coalesce(max(turn_index), 0) + 1 AS next FROM turns WHERE conversation_id = %s",
                (conversation_id,),
            )
            index_row = await cur.fetchone()
            assert index_row is not None
            index: int = index_row["next"]
            key = await self._keys.for_user(conn, user_id)
            cur = await conn.execute(
                "INSERT INTO turns (conversation_id, user_id, turn_index, user_text, reply_text, heard_text,"
                " interrupted, marks) VALUES (%s, %s, %s, %s, %s, %s, %s, %s) RETURNING id",
                (
                    conversation_id,
                    user_id,
                    index,
                    key.seal(turn.user_text, fields.turn("user_text", conversation_id, index)),
                    key.seal(turn.reply_text, fields.turn("reply_text", conversation_id, index)),
                    key.seal(turn.heard_text, fields.turn("heard_text", conversation_id, index)),
                    turn.interrupted,
                    json.dumps(marks_ms(dict(turn.marks))),
                ),
            )
            row = await cur.fetchone()
        assert row is not None
        turn_id: int = row["id"]
        return turn_id

    async def revise_heard(
        self, conversation_id: uuid.UUID, user_id: uuid.UUID, turn_id: int, heard_text: str
    ) -> None:
        """The user heard only ``heard_text`` of stored turn ``turn_id``'s reply (a client that plays the audio
        itself truncated it): store that, and mark the reply interrupted."""
        async with self._db.pool.connection() as conn, conn.transaction():
            cur = await conn.execute(
                "SELECT turn_index FROM turns WHERE id = %s AND conversation_id = %s AND user_id = %s",
                (turn_id, conversation_id, user_id),
            )
            row = await cur.fetchone()
            if row is None:
                return
            key = await self._keys.for_user(conn, user_id)
            sealed = key.seal(heard_text, fields.turn("heard_text", conversation_id, row["turn_index"]))
            await conn.execute(
                "UPDATE turns SET heard_text = %s, interrupted = true WHERE id = %s AND user_id = %s",
                (sealed, turn_id, user_id),
            )

    async def current(self, user_id: uuid.UUID, avatar: str, channel: Channel, *, within_s: float) -> uuid.UUID:
        """The user's open conversation on ``channel`` with ``avatar`` touched in the last ``within_s`` seconds,
        or a new one (chat completions: each request is one turn of a running conversation)."""
        async with self._db.pool.connection() as conn:
            cur = await conn.execute(
                "SELECT id FROM conversations WHERE user_id = %s AND avatar = %s AND channel = %s"
                " AND ended_at IS NULL AND updated_at > now() - make_interval(secs => %s)"
                " ORDER BY updated_at DESC LIMIT 1",
                (user_id, avatar, channel, within_s),
            )
            row = await cur.fetchone()
        if row is not None:
            found: uuid.UUID = row["id"]
            return found
        return await self.start(user_id, avatar, channel)

    async def reopen(self, conversation_id: uuid.UUID, user_id: uuid.UUID) -> None:
        """A resumed session continues its conversation: it is open again."""
        async with self._db.pool.connection() as conn:
            await conn.execute(
                "UPDATE conversations SET ended_at = NULL, updated_at = now() WHERE id = %s AND user_id = %s",
                (conversation_id, user_id),
            )

    async def end(self, conversation_id: uuid.UUID, user_id: uuid.UUID) -> None:
        """Mark the conversation ended (the connection closed)."""
        async with self._db.pool.connection() as conn:
            await conn.execute(
                "UPDATE conversations SET ended_at = now() WHERE id = %s AND user_id = %s",
                (conversation_id, user_id),
            )

    async def recent_history(self, user_id: uuid.UUID, *, max_messages: int, within_s: float) -> list[Message]:
        """The user's heard history from turns of the last ``within_s`` seconds, oldest first, at most
        ``max_messages`` messages (user and assistant messages alternate; a turn nobody heard an answer to
        contributes only the user's words)."""
        if max_messages <= 0:
            return []
        async with self._db.pool.connection() as conn:
            cur = await conn.execute(
                "SELECT conversation_id, turn_index, user_text, heard_text FROM turns WHERE user_id = %s"
                " AND created_at > now() - make_interval(secs => %s) ORDER BY id DESC LIMIT %s",
                (user_id, within_s, max_messages),
            )
            rows = await cur.fetchall()
            key = await self._keys.for_user(conn, user_id) if rows else None
        opened = [fields.open_turn(key, row) for row in reversed(rows)] if key is not None else []
        return heard_messages(opened)[-max_messages:]

    async def live_state(
        self, conversation_id: uuid.UUID, user_id: uuid.UUID, *, history_messages: int
    ) -> LiveState | None:
        """The live state of the conversation's session rebuilt from its rows (`LiveSessions` asks when Redis
        lost it): its avatar, channel and the heard history of its last ``history_messages`` turns;
        ``None`` unless the conversation is ``user_id``'s and was active within `SESSION_TTL_S`."""
        async with self._db.pool.connection() as conn:
            cur = await conn.execute(
                "SELECT avatar, channel, started_at, updated_at FROM conversations WHERE id = %s AND user_id = %s"
                " AND updated_at > now() - make_interval(secs => %s)",
                (conversation_id, user_id, SESSION_TTL_S),
            )
            conversation = await cur.fetchone()
            if conversation is None:
                return None
            cur = await conn.execute(
                "SELECT conversation_id, turn_index, user_text, heard_text, created_at FROM turns"
                " WHERE conversation_id = %s AND user_id = %s ORDER BY turn_index DESC LIMIT %s",
                (conversation_id, user_id, history_messages),
            )
            rows = await cur.fetchall()
            key = await self._keys.for_user(conn, user_id)
        turns = [fields.open_turn(key, row) for row in reversed(rows)]
        return LiveState(
            session_id_for(conversation_id),
            str(user_id),
            str(conversation_id),
            conversation["avatar"],
            conversation["channel"],
            history=heard_messages(turns)[-history_messages:],
            started_at=conversation["started_at"].timestamp(),
            last_turn_at=turns[-1]["created_at"].timestamp() if turns else None,
            source="postgres",
        )

    async def unlearned_turns(self, *, within_s: float, limit: int) -> list[dict[str, Any]]:
        """Turns of any user from the last ``within_s`` seconds not yet marked learnt (`mark_learned`: a
        crash or a full memory queue), in the order they were recorded, at most ``limit``: ``id, user_id,
        conversation_id, turn_index, user_text, heard_text`` (opened with its owner's key)``, created_at``. For
        `voice_server.avatar.memory.service.MemoryService.start`. A turn that does not open is logged and left out."""
        async with self._db.pool.connection() as conn:
            cur = await conn.execute(
                "SELECT id, user_id, conversation_id, turn_index, user_text, heard_text, created_at FROM turns"
                " WHERE NOT memories_extracted AND created_at > now() - make_interval(secs => %s)"
                " ORDER BY id LIMIT %s",
                (within_s, limit),
            )
            opened = []
            for row in await cur.fetchall():
                try:  # one turn that no longer opens (integrity) must not hold back the others' recovery
                    opened.append(fields.open_turn(await self._keys.for_user(conn, row["user_id"]), row))
                except DecryptionError:
                    log.error("turn %s of user %s does not open: not recovered for memory", row["id"], row["user_id"])
            return opened

    async def mark_learned(self, conn: Conn, user_id: uuid.UUID, turn_id: int) -> None:
        """Mark the user's turn as learnt from (its memories extracted), on ``conn``: in the caller's
        transaction, so the mark commits with the memories or not at all."""
        await conn.execute(
            "UPDATE turns SET memories_extracted = true WHERE id = %s AND user_id = %s", (turn_id, user_id)
        )

    async def stream_chat_texts(self, key: UserKey, feed: Callable[[list[str]], None], *, fetch: int) -> None:
        """Hand the user text of every turn of the key's owner's ``chat`` conversations (opened), in the order
        they were recorded, to ``feed`` at most ``fetch`` at a time (for the persona build).

        One server-side cursor in one transaction on a connection of its own; each batch is opened and fed in
        a worker thread, so neither a whole history nor the decryption sits on the event loop. ``feed`` is
        called in that thread, one batch after another (never concurrently).
        """
        def opened_into_feed(rows: list[dict[str, Any]]) -> None:
            feed([fields.open_turn(key, row)["user_text"] for row in rows])

        async with self._db.pool.connection() as conn, conn.transaction(), conn.cursor(name="chat_texts") as cursor:
            await cursor.execute(
                "SELECT t.conversation_id, t.turn_index, t.user_text FROM turns t JOIN conversations c"
                " ON c.id = t.conversation_id WHERE t.user_id = %s AND c.channel = 'chat' ORDER BY t.id",
                (key.user_id,),
            )
            while rows := await cursor.fetchmany(fetch):
                await asyncio.to_thread(opened_into_feed, rows)


async def conversation_page(
    conn: Conn, key: UserKey, *, before: datetime | None, limit: int
) -> tuple[list[dict[str, Any]], bool]:
    """The key's owner's conversations updated before ``before`` (all when ``None``), most recently active
    first, at most ``limit``, and whether more follow. Each: ``id, avatar, channel, started_at, updated_at,
    ended_at``, ``turns`` (their count) and ``preview`` (the first thing the user said, opened, at most 200
    characters; "" when none)."""
    cur = await conn.execute(
        "SELECT c.id, c.avatar, c.channel, c.started_at, c.updated_at, c.ended_at,"
        " (SELECT count(*) FROM turns t WHERE t.conversation_id = c.id) AS turns,"
        " (SELECT t.user_text FROM turns t WHERE t.conversation_id = c.id AND t.turn_index = 1) AS preview"
        " FROM conversations c WHERE c.user_id = %s AND (%s::timestamptz IS NULL OR c.updated_at < %s)"
        " ORDER BY c.updated_at DESC LIMIT %s",
        (key.user_id, before, before, limit + 1),
    )
    rows = await cur.fetchall()
    page = [
        {**row, "preview": "" if row["preview"] is None
         else key.open(row["preview"], fields.turn("user_text", row["id"], 1))[:200]}
        for row in rows[:limit]
    ]
    return page, len(rows) > limit


async def turn_page(
    conn: Conn, key: UserKey, conversation_id: uuid.UUID, *, after: int, limit: int
) -> tuple[list[dict[str, Any]], bool]:
    """Turns of the key's owner's conversation with an index above ``after``, in order, at most ``limit``,
    texts opened (`fields.open_turn`), and whether more follow; none when the conversation is not theirs."""
    cur = await conn.execute(
        "SELECT conversation_id, turn_index, user_text, heard_text, reply_text, interrupted, marks, created_at"
        " FROM turns WHERE conversation_id = %s AND user_id = %s AND turn_index > %s"
        " ORDER BY turn_index LIMIT %s",
        (conversation_id, key.user_id, after, limit + 1),
    )
    rows = await cur.fetchall()
    return [fields.open_turn(key, row) for row in rows[:limit]], len(rows) > limit


async def get_conversation(conn: Conn, user_id: uuid.UUID, conversation_id: uuid.UUID) -> dict[str, Any] | None:
    """The user's conversation (``id, avatar, channel, started_at, updated_at, ended_at``); ``None`` when there
    is no such conversation *or* it is someone else's (the routes answer 404 for both, so ids cannot be
    probed)."""
    cur = await conn.execute(
        "SELECT id, avatar, channel, started_at, updated_at, ended_at FROM conversations"
        " WHERE id = %s AND user_id = %s",
        (conversation_id, user_id),
    )
    return await cur.fetchone()


async def conversation_ids(conn: Conn, user_id: uuid.UUID) -> list[uuid.UUID]:
    """The ids of all the user's conversations (erasure forgets their live sessions), in the caller's
    transaction."""
    cur = await conn.execute("SELECT id FROM conversations WHERE user_id = %s", (user_id,))
    return [row["id"] for row in await cur.fetchall()]


async def delete_conversation(conn: Conn, user_id: uuid.UUID, conversation_id: uuid.UUID) -> None:
    """Delete the user's conversation (its turns cascade), in the caller's transaction."""
    await conn.execute("DELETE FROM conversations WHERE id = %s AND user_id = %s", (conversation_id, user_id))


async def last_turn_at(conn: Conn, user_id: uuid.UUID) -> datetime | None:
    """When the user's latest recorded turn was committed (``None``: they never talked)."""
    cur = await conn.execute("SELECT max(created_at) AS at FROM turns WHERE user_id = %s", (user_id,))
    row = await cur.fetchone()
    return row["at"] if row is not None else None


async def activity(conn: Conn, user_ids: Sequence[uuid.UUID]) -> dict[uuid.UUID, dict[str, Any]]:
    """Per user of ``user_ids``: ``last_turn`` (as `last_turn_at`) and ``conversations`` (how many of their
    conversations hold at least one turn), in one query whose per-user lookups use the per-user indexes."""
    cur = await conn.execute(
        "SELECT u.id AS user_id, (SELECT max(t.created_at) FROM turns t WHERE t.user_id = u.id) AS last_turn,"
        " (SELECT count(*) FROM conversations c WHERE c.user_id = u.id"
        "  AND EXISTS (SELECT 1 FROM turns t WHERE t.conversation_id = c.id)) AS conversations"
        " FROM unnest(%s::uuid[]) AS u(id)",
        (list(user_ids),),
    )
    return {row["user_id"]: row for row in await cur.fetchall()}


def late_context(*sections: str) -> str:
    """The turn's own system material (recalled memories, the user's writing examples, ...) as one section."""
    return "\n\n".join(s for s in sections if s)


async def turn_material(
    user_id: uuid.UUID,
    username: str,
    text: str,
    *,
    memory: MemoryService | None,
    examples: PersonaService | None,
    bond: BondService | None,
    recent: Recent | None = None,
) -> str:
    """The turn's late system message for the user's words ``text``: the bond's tone line, the recalled
    memories and, given ``examples`` (only while the avatar's own persona is in use), a few of the user's
    own messages like these words. Recall's embedding of ``text`` serves the examples too (one per turn);
    without words (the avatar speaks first) nothing is recalled."""
    memories, vector = "", None
    if memory is not None and text:
        memories, vector = await memory.recall_with_vector(user_id, text, recent)
    written = await examples.examples_for(user_id, username, vector) if examples is not None else ""
    tone = await bond.tone(user_id) if bond is not None else ""
    return late_context(tone, memories, written)


def prompt(system: str, history: Sequence[Message], memories: str, user_text: str) -> list[Message]:
    """The LLM prompt: the system prompt, the heard history, the recalled memories, the user's words.

    The memories are a system message of their own, just before the user's words, never part of the first
    system message: that one is the LLM's cached static prefix (`pipeline.llm.ConversationLlm`), and
    memories change every turn (a changed prefix would be re-encoded each time: ~560 ms for a 600-token
    persona instead of ~130 ms). Being last also puts them where a small model attends most.
    """
    recalled: list[Message] = [{"role": "system", "content": memories}] if memories else []
    asked: list[Message] = [{"role": "user", "content": user_text}] if user_text else []  # none: avatar speaks first
    return [{"role": "system", "content": system}, *history, *recalled, *asked]


async def record_turn(
    store: ConversationStore,
    conversation_id: uuid.UUID,
    user_id: uuid.UUID,
    turn: FinishedTurn,
    *,
    memory: MemoryService | None,
    bond: BondService | None,
) -> int:
    """Record one finished turn of any channel: commit it (`ConversationStore.add_turn`), then hand the user's
    words to long-term memory and the bond (both queued, off the turn's path). Returns the stored turn's id.

    Every channel records turns through this: sessions via `AvatarContext.after_turn`, chat completions
    directly (each request is one turn of the user's running ``chat`` conversation).
    """
    turn_id = await store.add_turn(conversation_id, user_id, turn)
    if memory is not None and turn.user_text:
        memory.learn_later(user_id, conversation_id, turn_id, turn.user_text, turn.heard_text)
    if bond is not None and turn.user_text:
        bond.observe(user_id, turn.user_text)
    return turn_id


class AvatarContext:
    """The `ContextBuilder` of one server conversation: persona + recalled memories + heard history + the turn.

    Args:
        store: Where finished turns go.
        conversation_id: The conversation being recorded.
        user_id: Its owner (every write is filtered by it).
        persona: The system prompt; a client may replace it (``session.update`` instructions).
        memory: Long-term memory (recall before each answer, learning after each turn), or ``None`` when the
            server runs without the embedding model.
        live: Where the session's live state is kept (Redis) and the state itself, updated at each turn.
        examples: The personas, for a few of the user's own messages like the current one in each turn's
            context ("how <name> writes"), while the avatar's own persona is in use (a client's instructions
            replace it, and these with it).
        username: The user's username (the persona's fallback name).
        bond: The emotional bond: its tone line joins the per-turn system message; each turn's words are
            observed after the reply (queued, off the turn's path).
    """

    def __init__(
        self,
        store: ConversationStore,
        conversation_id: uuid.UUID,
        user_id: uuid.UUID,
        persona: str,
        memory: MemoryService | None = None,
        live: tuple[LiveSessions, LiveState] | None = None,
        examples: PersonaService | None = None,
        username: str = "",
        bond: BondService | None = None,
    ) -> None:
        self.store = store
        self.bond = bond
        self.conversation_id = conversation_id
        self.user_id = user_id
        self.persona = persona
        self.memory = memory
        self.live = live
        self.examples = examples
        self.username = username
        self._own_persona = persona
        self._stored: collections.OrderedDict[int, int] = collections.OrderedDict()  # session turn → stored id

    async def build_context(
        self, user: str, transcript: str, history: Sequence[Message], *, instructions: str | None = None
    ) -> list[Message]:
        """The turn's prompt; ``instructions`` (one response's own) replace the persona, and with it the user's
        writing examples, for this turn only."""
        if self.live is not None:
            sessions, state = self.live
            state.turn_state, state.pending, state.history = "thinking", transcript, list(history)
            await sessions.save(state)
        own = instructions is None and self.persona == self._own_persona
        late = await turn_material(
            self.user_id, self.username, transcript, memory=self.memory,
            examples=self.examples if own else None, bond=self.bond,
            recent=self.memory.recent_for(self.conversation_id) if self.memory is not None else None,
        )
        return prompt(instructions or self.persona, history, late, transcript)

    async def history_edited(self, history: Sequence[Message], heard: tuple[int, str] | None = None) -> None:
        """A client edited the session's history (a Realtime item deleted or truncated): the live state
        follows, and a truncated reply's stored turn keeps only the words the client says were heard."""
        if heard is not None and (stored := self._stored.get(heard[0])) is not None:
            await self.store.revise_heard(self.conversation_id, self.user_id, stored, heard[1])
        if self.live is not None:
            sessions, state = self.live
            state.history = list(history)
            await sessions.save(state)

    async def after_turn(self, user: str, turn: FinishedTurn) -> None:
        turn_id = await record_turn(self.store, self.conversation_id, self.user_id, turn, memory=self.memory,
                                    bond=self.bond)
        self._stored[turn.turn_id] = turn_id
        while len(self._stored) > _STORED_IDS:
            self._stored.popitem(last=False)
        if self.live is not None:
            sessions, state = self.live
            state.history = window(state.history, turn.user_text, turn.heard_text)
            state.turn_state, state.pending, state.last_turn_at = "listening", None, time.time()
            await sessions.save(state)


async def export_conversations(conn: Conn, user_id: uuid.UUID) -> list[dict[str, Any]]:
    """``user_id``'s conversations (no turns: see `export_turns`) for their export, oldest first."""
    cur = await conn.execute(
        "SELECT id, avatar, channel, started_at, updated_at, ended_at FROM conversations WHERE user_id = %s"
        " ORDER BY started_at",
        (user_id,),
    )
    return await cur.fetchall()


def export_turns(key: UserKey, user_id: uuid.UUID) -> UserRows:
    """Every turn of ``user_id``, opened with their data key ``key``, for their export."""

    def opened(row: dict[str, Any]) -> dict[str, Any]:
        return fields.open_turn(key, row)

    return UserRows(
        "SELECT conversation_id, turn_index, user_text, reply_text, heard_text, interrupted, marks, created_at"
        " FROM turns WHERE user_id = %s ORDER BY conversation_id, turn_index", (user_id,), opened)
