"""The episodic memory tables: every remembered message, its embedding, the indexer's queue and term counts.

Owner of ``episodes``, ``episode_vectors``, ``episode_pending`` and ``episode_terms`` (migration 0014); SQL and
sealing only, ranking lives in `voice_server.avatar.memory.evidence`. Every statement filters by the owner's
``user_id``. Thread, speaker and text are sealed with the owner's key, bound to the episode's id; `terms` are
keyed hashes (`voice_server.avatar.memory.terms`).

An episode is written once, with its terms, by the import (a batch of messages) or after a conversation's turn
(the user's words and the avatar's reply), and queued in ``episode_pending``; the indexer embeds queued
episodes in batches later (`voice_server.avatar.memory.indexer`). Until then lexical search finds it; dense
search finds it once its vector exists.
"""

from __future__ import annotations

import collections
import functools
import re
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from datetime import time as day_time
from typing import Any

import numpy as np

from voice_server.avatar.memory import terms as term_index
from voice_server.avatar.memory.store import Conn, Vector
from voice_server.avatar.memory.timecues import resolve_event_date
from voice_server.security import fields
from voice_server.security.fields import EpisodeColumn
from voice_server.security.keys import UserKey
from voice_server.stores.user_rows import UserRows

# A text that can name a day has a digit or one of these words (`timecues` runs on it; most messages have none).
_MAY_NAME_A_DAY = re.compile(
    r"\d|yesterday|today|tonight|tomorrow|ago|last|next|this|week|month|year|day|night|morning|"
    r"monday|tuesday|wednesday|thursday|friday|saturday|sunday|jan|feb|mar|apr|may|jun|jul|aug|sep|oct|nov|dec",
    re.IGNORECASE)
MAX_TEXT_CHARS = 4000  # an episode keeps a message's first 4,000 characters (retrieval reads a sentence or two)
HNSW_EF_SEARCH = 100
EXACT_SCAN_MAX = 8_000  # vectors of one user searched exactly (~1 ms per 1,000); beyond, the HNSW index
# `episode_terms` keeps the user's number of distinct message wordings under this reserved term (no hash is 0
# but by 2^-64 chance): lexical weights need it, and a count(*) at 100 k rows costs more than the whole search.
ALL_TERM = 0
EPISODES_TERM = 1  # likewise, the user's number of episodes (what a dense scan reads)
INDEXED_REPEATS = 8  # the times one wording is indexed by its words (`insert_batch`)
EPISODE_COLUMNS: tuple[EpisodeColumn, ...] = ("thread", "speaker", "text")
COLUMNS = "id, message_id, turn_id, thread_tag, thread, speaker, is_user, text, said_at, event_date, terms, wording"
_E_COLUMNS = ", ".join("e." + c for c in COLUMNS.split(", "))


@dataclass(slots=True)
class EpisodeBatch:
    """Episodes sealed and hashed in a worker thread, ready for one INSERT (`insert_batch`)."""

    ids: list[uuid.UUID] = field(default_factory=list)
    message_ids: list[uuid.UUID | None] = field(default_factory=list)
    turn_ids: list[int | None] = field(default_factory=list)
    conversation_ids: list[uuid.UUID | None] = field(default_factory=list)
    thread_tags: list[bytes] = field(default_factory=list)
    threads: list[bytes] = field(default_factory=list)
    speakers: list[bytes] = field(default_factory=list)
    is_user: list[bool] = field(default_factory=list)
    texts: list[bytes] = field(default_factory=list)
    said_at: list[datetime] = field(default_factory=list)
    event_dates: list[date | None] = field(default_factory=list)
    terms: list[list[int]] = field(default_factory=list)
    wordings: list[int] = field(default_factory=list)  # `terms.said_term` hashes: counted, not indexed
    _hashes: dict[str, int] = field(default_factory=dict)
    _tags: dict[str, bytes] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.ids)

    def add(
        self,
        key: UserKey,
        *,
        text: str,
        speaker: str,
        thread: str,
        thread_id: str,
        is_user: bool,
        said_at: datetime,
        message_id: uuid.UUID | None = None,
        turn_id: int | None = None,
        conversation_id: uuid.UUID | None = None,
    ) -> uuid.UUID:
        """Seal and hash one message (blocking: call it from a worker thread for many). ``thread_id`` identifies
        the thread among the user's (an imported chat's name, a conversation's id): its keyed tag groups
        neighbours. Returns the episode's id."""
        episode_id = uuid.uuid4()
        text = text[:MAX_TEXT_CHARS]
        self.ids.append(episode_id)
        self.message_ids.append(message_id)
        self.turn_ids.append(turn_id)
        self.conversation_ids.append(conversation_id)
        self.thread_tags.append(self._tag(key, "thread|" + thread_id))
        self.threads.append(key.seal(thread, fields.episode("thread", episode_id)))
        self.speakers.append(key.seal(speaker, fields.episode("speaker", episode_id)))
        self.is_user.append(is_user)
        self.texts.append(key.seal(text, fields.episode("text", episode_id)))
        self.said_at.append(said_at)
        self.event_dates.append(resolve_event_date(text, said_at.date()) if _MAY_NAME_A_DAY.search(text) else None)
        said = term_index.words(text)
        people = [*(term_index.speaker_term(w) for w in term_index.name_words(speaker)),
                  *(term_index.thread_term(w) for w in term_index.name_words(thread))]
        self.terms.append([self._term(key, t) for t in (*said, *people)])
        self.wordings.append(self._term(key, term_index.said_term(text, said)))
        return episode_id

    # Chats repeat their words, names and threads, and each hash is an HMAC: the batch remembers them.
    def _term(self, key: UserKey, term: str) -> int:
        found = self._hashes.get(term)
        if found is None:
            found = self._hashes[term] = term_index.term_hash(key, term)
        return found

    def _tag(self, key: UserKey, value: str) -> bytes:
        found = self._tags.get(value)
        if found is None:
            found = self._tags[value] = key.tag(value)
        return found


_INSERT = (
    "INSERT INTO episodes (id, user_id, message_id, turn_id, conversation_id, thread_tag, thread, speaker, is_user,"
    " text, said_at, event_date, terms, wording) SELECT e.id, %s, e.message_id, e.turn_id, e.conversation_id,"
    " e.thread_tag, e.thread, e.speaker, e.is_user, e.text, e.said_at, e.event_date,"
    " string_to_array(e.terms, ',')::bigint[], e.wording"
    " FROM unnest(%b::uuid[], %b::uuid[], %b::bigint[], %b::uuid[], %b::bytea[], %b::bytea[], %b::bytea[],"
    " %b::boolean[], %b::bytea[], %b::timestamptz[], %b::date[], %b::text[], %b::bigint[])"
    " AS e(id, message_id, turn_id, conversation_id, thread_tag, thread, speaker, is_user, text, said_at,"
    " event_date, terms, wording)"
    # An imported message that was already there (a re-import) was not inserted: its episode is not either.
    " WHERE (e.message_id IS NULL OR EXISTS (SELECT 1 FROM imported_messages m WHERE m.id = e.message_id))"
    # A turn learnt twice (recovered after a crash) keeps its first episodes.
    " AND (e.turn_id IS NULL OR NOT EXISTS"
    " (SELECT 1 FROM episodes x WHERE x.turn_id = e.turn_id AND x.is_user = e.is_user))"
    " RETURNING id, thread_tag, said_at"
)


# Array parameters go in binary (%b): psycopg escapes text-format arrays element by element in Python, which
# cost ~0.1 ms a message for a batch's sealed texts, ids and hashes (measured: 2.4 s of a 20 k-message import).
async def insert_batch(conn: Conn, user_id: uuid.UUID, batch: EpisodeBatch) -> int:
    """Insert the batch's episodes (those of imported messages that exist), queue them for the indexer and
    the reflector and count their terms, on the caller's transaction. Returns how many were inserted.

    Small talk said word for word again and again ("nearly the weekend") is kept and embedded like any message,
    but from its `INDEXED_REPEATS`-th time on it is not indexed by its words: the lexical index stays the size of
    what was said differently, and a word's count is the number of distinct wordings that hold it, so a
    thousand "made a spanish omelette"s neither make "spanish" look common nor make searching it slow.
    """
    if not batch:
        return 0
    before = await document_frequencies(conn, user_id, list(set(batch.wordings)))  # each wording's times so far
    running = dict(before)
    indexed: list[list[int]] = []
    for hashed, wording in zip(batch.terms, batch.wordings, strict=True):
        running[wording] = running.get(wording, 0) + 1
        indexed.append(hashed if running[wording] <= INDEXED_REPEATS else [])
    cur = await conn.execute(_INSERT, (
        user_id, batch.ids, batch.message_ids, batch.turn_ids, batch.conversation_ids, batch.thread_tags,
        batch.threads, batch.speakers, batch.is_user, batch.texts, batch.said_at, batch.event_dates,
        [",".join(map(str, t)) for t in indexed], batch.wordings,
    ))
    rows = await cur.fetchall()
    inserted = {row["id"] for row in rows}
    if not inserted:
        return 0
    await conn.execute(
        "INSERT INTO episode_pending (episode_id, user_id) SELECT unnest(%b::uuid[]), %s", (list(inserted), user_id),
    )
    # Every day of a thread that got messages is (re)summarised by the reflector.
    days = {(bytes(row["thread_tag"]), row["said_at"].date()) for row in rows}
    await conn.execute(
        "INSERT INTO reflect_pending (user_id, thread_tag, day) SELECT %s, t, d FROM unnest(%b::bytea[], %b::date[])"
        " AS x(t, d) ON CONFLICT (user_id, thread_tag, day) DO UPDATE SET queued_at = excluded.queued_at",
        (user_id, [t for t, _ in days], [d for _, d in days]),
    )
    counts: collections.Counter[int] = collections.Counter({EPISODES_TERM: len(inserted)})
    for episode_id, hashed, wording in zip(batch.ids, indexed, batch.wordings, strict=True):
        if episode_id not in inserted:
            continue
        if before.get(wording, 0) + counts[wording] == 0:  # its first time: its words count (once)
            counts.update(set(hashed))
            counts[ALL_TERM] += 1
        counts[wording] += 1
    await conn.execute(
        "INSERT INTO episode_terms (user_id, term, df) SELECT %s, t, n FROM unnest(%b::bigint[], %b::int[]) AS x(t, n)"
        " ON CONFLICT (user_id, term) DO UPDATE SET df = episode_terms.df + excluded.df",
        (user_id, list(counts), list(counts.values())),
    )
    return len(inserted)


async def of_turn(conn: Conn, user_id: uuid.UUID, turn_id: int) -> uuid.UUID | None:
    """The episode of the user's words in a conversation's turn (``None``: they were empty)."""
    cur = await conn.execute(
        "SELECT id FROM episodes WHERE user_id = %s AND turn_id = %s AND is_user", (user_id, turn_id)
    )
    row = await cur.fetchone()
    return None if row is None else row["id"]


# ------------------------------------------------------------------------------------------------ indexer


async def pending(conn: Conn, limit: int) -> list[dict[str, Any]]:
    """Up to ``limit`` queued episodes of any user, oldest first: ``id, user_id, text`` (sealed)."""
    cur = await conn.execute(
        "SELECT e.id, e.user_id, e.text FROM episode_pending p JOIN episodes e ON e.id = p.episode_id"
        " ORDER BY p.queued_at LIMIT %s",
        (limit,),
    )
    return list(await cur.fetchall())


async def store_vectors(conn: Conn, rows: Sequence[dict[str, Any]], vectors: Sequence[Vector]) -> None:
    """Store the embeddings of ``rows`` (from `pending`) and take them off the queue."""
    ids = [r["id"] for r in rows]
    await conn.execute(
        # An episode deleted while it was being embedded (its conversation was deleted) is skipped.
        "INSERT INTO episode_vectors (episode_id, user_id, embedding) SELECT u.id, u.user_id, u.embedding"
        " FROM unnest(%s::uuid[], %s::uuid[], %s::vector[]) AS u(id, user_id, embedding)"
        " WHERE EXISTS (SELECT 1 FROM episodes e WHERE e.id = u.id) ON CONFLICT (episode_id) DO NOTHING",
        (ids, [r["user_id"] for r in rows], list(vectors)),
    )
    await conn.execute("DELETE FROM episode_pending WHERE episode_id = ANY(%s::uuid[])", (ids,))


async def pending_count(conn: Conn, user_id: uuid.UUID) -> int:
    """How many of the user's episodes wait for an embedding."""
    cur = await conn.execute("SELECT count(*) AS n FROM episode_pending WHERE user_id = %s", (user_id,))
    row = await cur.fetchone()
    return int(row["n"]) if row else 0


async def indexed_count(conn: Conn, user_id: uuid.UUID) -> int:
    """How many of the user's episodes have an embedding."""
    cur = await conn.execute("SELECT count(*) AS n FROM episode_vectors WHERE user_id = %s", (user_id,))
    row = await cur.fetchone()
    return int(row["n"]) if row else 0


# -------------------------------------------------------------------------------------------- reflection


async def next_day(conn: Conn, settled_before: datetime) -> dict[str, Any] | None:
    """The newest settled queued thread day of any user: a day before ``settled_before``'s (an imported one),
    or one last queued before ``settled_before`` (today's, once the conversation has paused). ``user_id,
    thread_tag, day``; ``None`` when there is none. Locked for the caller's transaction (another reflector
    skips it)."""
    cur = await conn.execute(
        "SELECT user_id, thread_tag, day FROM reflect_pending WHERE day < %s OR queued_at < %s"
        " ORDER BY day DESC LIMIT 1 FOR UPDATE SKIP LOCKED",
        (settled_before.date(), settled_before),
    )
    return await cur.fetchone()


async def day_done(conn: Conn, user_id: uuid.UUID, thread_tag: bytes, day: date) -> None:
    """Take a thread's day off the reflector's queue."""
    await conn.execute(
        "DELETE FROM reflect_pending WHERE user_id = %s AND thread_tag = %s AND day = %s", (user_id, thread_tag, day)
    )


async def day_of_thread(conn: Conn, key: UserKey, thread_tag: bytes, day: date, limit: int) -> list[dict[str, Any]]:
    """A thread's messages said on ``day`` (UTC), opened, in time order, at most ``limit`` (the first)."""
    since = datetime.combine(day, day_time(), UTC)
    cur = await conn.execute(
        f"SELECT {COLUMNS}, conversation_id FROM episodes WHERE user_id = %s AND thread_tag = %s AND said_at >= %s"
        " AND said_at < %s ORDER BY said_at, id LIMIT %s",
        (key.user_id, thread_tag, since, since + timedelta(days=1), limit),
    )
    return [open_row(key, r) for r in await cur.fetchall()]


async def reflection_pending(conn: Conn, user_id: uuid.UUID) -> int:
    """How many of the user's thread days wait to be summarised."""
    cur = await conn.execute("SELECT count(*) AS n FROM reflect_pending WHERE user_id = %s", (user_id,))
    row = await cur.fetchone()
    return int(row["n"]) if row else 0


# ----------------------------------------------------------------------------------------------- search


async def nearest(
    conn: Conn, user_id: uuid.UUID, vector: Vector, limit: int, *, exact: bool
) -> list[tuple[uuid.UUID, float]]:
    """The user's episodes whose embedding is nearest ``vector``: (id, cosine similarity), best first.
    ``exact``: scan all of the user's vectors (small users); otherwise the HNSW index with pgvector's
    iterative scan (relaxed order, re-sorted here)."""
    if exact:
        # OFFSET 0 keeps the planner off the HNSW index: for one user's few rows an exact scan is faster and
        # complete.
        cur = await conn.execute(
            "SELECT episode_id, 1 - (embedding <=> %s) AS similarity FROM ("
            " SELECT * FROM episode_vectors WHERE user_id = %s OFFSET 0) mine ORDER BY embedding <=> %s LIMIT %s",
            (vector, user_id, vector, limit),
        )
        return [(r["episode_id"], float(r["similarity"])) for r in await cur.fetchall()]
    async with conn.transaction(force_rollback=True):
        await conn.execute(f"SET LOCAL hnsw.ef_search = {HNSW_EF_SEARCH}")
        await conn.execute("SET LOCAL hnsw.iterative_scan = relaxed_order")
        cur = await conn.execute(
            "SELECT episode_id, 1 - (embedding <=> %s) AS similarity FROM episode_vectors WHERE user_id = %s"
            " ORDER BY embedding <=> %s LIMIT %s",
            (vector, user_id, vector, limit),
            prepare=False,
        )
        rows = await cur.fetchall()
    return sorted(((r["episode_id"], float(r["similarity"])) for r in rows), key=lambda pair: -pair[1])


async def vectors_of(conn: Conn, user_id: uuid.UUID, ids: Sequence[uuid.UUID]) -> list[Vector]:
    """The embeddings of those of ``ids`` that are the user's and indexed."""
    cur = await conn.execute(
        "SELECT embedding FROM episode_vectors WHERE user_id = %s AND episode_id = ANY(%s::uuid[])",
        (user_id, list(ids)),
    )
    return [np.asarray(r["embedding"].to_numpy(), dtype=np.float32) for r in await cur.fetchall()]


async def nearest_later_in_thread(
    conn: Conn, user_id: uuid.UUID, vector: Vector, row: dict[str, Any], within: timedelta, limit: int
) -> list[tuple[uuid.UUID, float]]:
    """The dense ranking among what ``row``'s speaker said later in its thread, within ``within`` of it (how a
    story they started went on)."""
    return await _nearest_where(
        conn, user_id, vector, limit, "e.thread_tag = %s AND e.is_user = %s AND e.said_at > %s AND e.said_at <= %s",
        (row["thread_tag"], row["is_user"], row["said_at"], row["said_at"] + within),
    )


async def document_frequencies(conn: Conn, user_id: uuid.UUID, hashed: Sequence[int]) -> dict[int, int]:
    """How many of the user's episodes hold each of ``hashed`` (a term never seen is missing)."""
    cur = await conn.execute(
        "SELECT term, df FROM episode_terms WHERE user_id = %s AND term = ANY(%b::bigint[])", (user_id, list(hashed)),
    )
    return {r["term"]: r["df"] for r in await cur.fetchall()}


async def with_terms(
    conn: Conn, user_id: uuid.UUID, weights: dict[int, float], limit: int
) -> list[tuple[uuid.UUID, float]]:
    """The user's ``limit`` episodes holding the most weight of the terms in ``weights`` (term hash → weight),
    with that weight, best first (ties: newest first)."""
    cur = await conn.execute(
        "SELECT e.id, s.weight FROM episodes e CROSS JOIN LATERAL (SELECT sum(w.weight) AS weight"
        " FROM unnest(%s::bigint[], %s::float8[]) AS w(term, weight) WHERE w.term = ANY(e.terms)) s"
        " WHERE e.user_id = %s AND e.terms && %s::bigint[] ORDER BY s.weight DESC, e.said_at DESC LIMIT %s",
        (list(weights), list(weights.values()), user_id, list(weights), limit),
    )
    return [(r["id"], float(r["weight"])) for r in await cur.fetchall()]


async def nearest_with_terms(
    conn: Conn, user_id: uuid.UUID, vector: Vector, hashed: list[int], limit: int
) -> list[tuple[uuid.UUID, float]]:
    """The dense ranking among the user's episodes holding any of ``hashed`` (a person's chat and words)."""
    return await _nearest_where(conn, user_id, vector, limit, "e.terms && %s::bigint[]", (hashed,))


async def nearest_in_period(
    conn: Conn, user_id: uuid.UUID, vector: Vector, start: date, end: date, limit: int
) -> list[tuple[uuid.UUID, float]]:
    """The dense ranking among the user's episodes said in [start, end] or about a day in it."""
    since = datetime.combine(start, day_time(), UTC)
    until = datetime.combine(end + timedelta(days=1), day_time(), UTC)
    return await _nearest_where(
        conn, user_id, vector, limit, "((e.said_at >= %s AND e.said_at < %s) OR e.event_date BETWEEN %s AND %s)",
        (since, until, start, end),
    )


async def _nearest_where(
    conn: Conn, user_id: uuid.UUID, vector: Vector, limit: int, condition: str, params: tuple[Any, ...]
) -> list[tuple[uuid.UUID, float]]:
    """The exact dense ranking among the user's embedded episodes that meet ``condition`` (SQL on ``e``, the
    episode, with ``params``): (id, cosine similarity), best first."""
    cur = await conn.execute(
        "SELECT v.episode_id, 1 - (v.embedding <=> %s) AS similarity FROM episodes e"
        " JOIN episode_vectors v ON v.episode_id = e.id WHERE e.user_id = %s AND v.user_id = %s"
        f" AND {condition} ORDER BY v.embedding <=> %s LIMIT %s",  # noqa: S608 (conditions are this module's)
        (vector, user_id, user_id, *params, vector, limit),
    )
    return [(r["episode_id"], float(r["similarity"])) for r in await cur.fetchall()]


async def fetch(conn: Conn, key: UserKey, ids: Sequence[uuid.UUID]) -> dict[uuid.UUID, dict[str, Any]]:
    """The user's episodes among ``ids``, opened (thread, speaker, text), with ``repeats`` (how many times the
    user's history holds their wording), by id; another user's are missing."""
    cur = await conn.execute(
        f"SELECT {_E_COLUMNS}, coalesce(t.df, 1) AS repeats FROM episodes e LEFT JOIN episode_terms t"
        " ON t.user_id = e.user_id AND t.term = e.wording WHERE e.user_id = %s AND e.id = ANY(%s::uuid[])",
        (key.user_id, list(ids)),
    )
    return {r["id"]: open_row(key, r) for r in await cur.fetchall()}


async def neighbours(conn: Conn, key: UserKey, rows: Sequence[dict[str, Any]]) -> dict[uuid.UUID, list[dict[str, Any]]]:
    """The message just before and just after each of ``rows`` in its thread, opened, in time order, by the
    row's id (the row itself excluded): one query for all of them."""
    if not rows:
        return {}
    near = f"SELECT {COLUMNS} FROM episodes WHERE user_id = %s AND thread_tag = h.tag AND id <> h.id"
    cur = await conn.execute(
        f"SELECT h.id AS hit, n.* FROM unnest(%s::uuid[], %s::bytea[], %s::timestamptz[]) AS h(id, tag, at)"
        f" CROSS JOIN LATERAL (({near} AND said_at <= h.at ORDER BY said_at DESC LIMIT 1)"
        f" UNION ALL ({near} AND said_at >= h.at ORDER BY said_at LIMIT 1)) n",
        ([r["id"] for r in rows], [r["thread_tag"] for r in rows], [r["said_at"] for r in rows],
         key.user_id, key.user_id),
    )
    found: dict[uuid.UUID, list[dict[str, Any]]] = collections.defaultdict(list)
    for r in await cur.fetchall():
        hit = r.pop("hit")
        found[hit].append(open_row(key, r))
    return {hit: sorted(around, key=lambda r: r["said_at"]) for hit, around in found.items()}


def open_row(key: UserKey, row: dict[str, Any]) -> dict[str, Any]:
    """An episode row (`COLUMNS`) with its thread, speaker and text opened."""
    opened = dict(row)
    for column in EPISODE_COLUMNS:
        opened[column] = key.open(row[column], fields.episode(column, row["id"]))
    return opened


def export_rows(key: UserKey, user_id: uuid.UUID) -> UserRows:
    """Every episode of ``user_id``, opened, for their export (oldest first; without the term hashes and
    embeddings, which are derived from the text)."""
    return UserRows(
        "SELECT id, message_id, turn_id, thread, speaker, is_user, text, said_at, event_date FROM episodes"
        " WHERE user_id = %s ORDER BY said_at, id",
        (user_id,),
        functools.partial(open_row, key),
    )

