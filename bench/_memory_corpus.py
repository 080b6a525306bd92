"""The memory benchmark's synthetic corpus and loader, shared with tests/server/test_memory_scale.py.

See `bench.memory` for what the corpus models and how it is used.
"""

import asyncio
import math
import random
import re
import sys
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt
import psycopg
from pgvector.psycopg import register_vector_async

from voice_server.avatar.memory import store as memory_store
from voice_server.avatar.memory.store import KINDS
from voice_server.security import fields
from voice_server.security.keys import Keyring
from voice_server.stores.postgres import Database

Vectors = npt.NDArray[np.float32]
Conn = psycopg.AsyncConnection[Any]


DIM = 384
TOPICS = 512  # shared topics (family, work, pets, ...) that users' memories are about
TOPICS_PER_USER = 20
USER_SPREAD = 0.6  # a user's slant on a shared topic: cosine ~0.86 to the topic, ~0.73 to another user's
MEMORY_NOISE = 1.0  # a memory to its topic centroid: cosine ~0.71; two of one user's on one topic: ~0.5
QUERY_NOISE = 0.7  # a query to the memory it paraphrases: cosine ~0.82
BLOCK = 50  # memories per generated block; the loader interleaves users block by block, as time would
K = 10
EF_SEARCH_VALUES = (40, 100, 200, 400)
TARGET_P95_MS = 10.0
TARGET_RECALL = 0.95
TARGET_CONTEXT_P95_MS = 25.0
USERNAME_PREFIX = "bench-mem-"

INDEX_NAME = "memories_embedding_idx"
# Same definition as migration 0003: the bench drops it for the bulk load and builds it again.
CREATE_INDEX_SQL = (
    f"CREATE INDEX {INDEX_NAME} ON memories USING hnsw (embedding vector_cosine_ops)"
    " WITH (m = 16, ef_construction = 64)"
)
COPY_SQL = "COPY memories (id, user_id, text, kind, importance, embedding) FROM STDIN WITH (FORMAT BINARY)"
# The two statements of MemoryStore._nearest without its count, so each strategy can be timed on its own.
# Keep them in step with memory_store.py.
EXACT_SQL = (
    f"SELECT {memory_store.COLUMNS}, 1 - (embedding <=> %s) AS similarity FROM ("
    " SELECT * FROM memories WHERE user_id = %s AND superseded_at IS NULL OFFSET 0) mine"
    " ORDER BY embedding <=> %s LIMIT %s"
)
HNSW_SQL = (
    f"SELECT {memory_store.COLUMNS}, 1 - (embedding <=> %s) AS similarity FROM memories"
    " WHERE user_id = %s AND superseded_at IS NULL ORDER BY embedding <=> %s LIMIT %s"
)

PHRASES = (
    "The user's sister Maya loves the Italian place near the river.",
    "The user works night shifts as a nurse and is tired on Mondays.",
    "The user is training for a 10 km run in the spring.",
    "The user's dog Biscuit is an old beagle who hates thunderstorms.",
    "The user grew up by the sea and misses swimming in summer.",
    "The user is learning Portuguese for their partner's family in Lisbon.",
    "The user prefers short, warm answers and gentle jokes.",
    "A deadline at work moved up last week and it stressed the user out.",
    "The user plans to repaint the kitchen a pale green in May.",
    "The user's father had knee surgery and is recovering slowly.",
    "The user bakes sourdough every Saturday morning.",
    "The user's best friend Tomas is moving to Berlin in the autumn.",
)
_KEY = re.compile(r"^\[(\d+):(\d+)\] ")


def log(message: str) -> None:
    """Progress goes to stderr so stdout stays the result table."""
    print(f"[memory] {message}", file=sys.stderr, flush=True)


def _normalise(rows: Vectors) -> Vectors:
    rows /= np.linalg.norm(rows, axis=-1, keepdims=True)
    return rows


def memory_text(user: int, index: int, topic: int) -> str:
    """The synthetic memory's text: ``[user:index]`` (parsed back by `memory_key`) and a plausible sentence."""
    return f"[{user}:{index}] {PHRASES[topic % len(PHRASES)]}"


def memory_key(text: str) -> tuple[int, int]:
    """``(user, index)`` of a text written by `memory_text`.

    Raises:
        ValueError: ``text`` is not a synthetic memory.
    """
    found = _KEY.match(text)
    if found is None:
        raise ValueError(f"not a synthetic memory: {text!r}")
    return int(found[1]), int(found[2])


@dataclass(frozen=True, slots=True)
class Block:
    """Memories ``start .. start + len(vectors)`` of one user, with their shared-topic ids and importance."""

    user: int
    start: int
    vectors: Vectors
    topics: npt.NDArray[np.int64]
    importance: npt.NDArray[np.float32]


@dataclass(slots=True)
class SyntheticCorpus:
    """Deterministic clustered unit vectors (float32, ``DIM``) for ``memories`` rows across ``users``.

    User 0 holds ``heavy`` memories when that is non-zero; the rest are shared evenly among the others. Every
    array comes from a seed derived from (``seed``, user, block), so a block is the same whenever it is made.
    """

    memories: int
    users: int
    heavy: int = 0
    seed: int = 0
    _topics: Vectors = field(init=False, repr=False)
    _centroids: dict[int, tuple[npt.NDArray[np.int64], Vectors]] = field(init=False, repr=False, default_factory=dict)

    def __post_init__(self) -> None:
        if self.users < 1 or self.memories < self.users or self.heavy >= self.memories:
            raise ValueError(f"cannot split {self.memories} memories across {self.users} users (heavy {self.heavy})")
        rng = np.random.default_rng([self.seed, 0])
        self._topics = _normalise(rng.standard_normal((TOPICS, DIM), dtype=np.float32))

    def count(self, user: int) -> int:
        """How many memories ``user`` has."""
        if self.heavy and user == 0:
            return self.heavy
        rest, shared_by = self.memories - self.heavy, self.users - (1 if self.heavy else 0)
        first = 1 if self.heavy else 0
        return rest // shared_by + (1 if user - first < rest % shared_by else 0)

    def _user_topics(self, user: int) -> tuple[npt.NDArray[np.int64], Vectors]:
        cached = self._centroids.get(user)
        if cached is None:
            rng = np.random.default_rng([self.seed, 1, user])
            chosen = rng.choice(TOPICS, TOPICS_PER_USER, replace=False)
            slant = _normalise(rng.standard_normal((TOPICS_PER_USER, DIM), dtype=np.float32))
            cached = chosen, _normalise(self._topics[chosen] + USER_SPREAD * slant)
            # 30 KB a user (30 MB for 1,000): the loader visits every user once per block round.
            self._centroids[user] = cached
        return cached

    def block(self, user: int, number: int) -> Block:
        """Memories ``number * BLOCK`` onwards (at most ``BLOCK``) of ``user``."""
        start = number * BLOCK
        size = min(BLOCK, self.count(user) - start)
        if size <= 0:
            raise IndexError(f"user {user} has no block {number}")
        chosen, centroids = self._user_topics(user)
        rng = np.random.default_rng([self.seed, 2, user, number])
        which = rng.integers(TOPICS_PER_USER, size=size)
        noise = rng.standard_normal((size, DIM), dtype=np.float32) * np.float32(MEMORY_NOISE / math.sqrt(DIM))
        vectors = _normalise(centroids[which] + noise)
        importance = rng.uniform(0.1, 0.9, size).astype(np.float32)
        return Block(user, start, vectors, chosen[which], importance)

    def user_vectors(self, user: int) -> Vectors:
        """All of ``user``'s vectors, in index order (``(count(user), DIM)``)."""
        blocks = math.ceil(self.count(user) / BLOCK)
        return np.concatenate([self.block(user, b).vectors for b in range(blocks)])

    def load_order(self) -> Iterator[tuple[int, int]]:
        """``(user, block)`` pairs, round-robin over users, so one user's rows are spread over the table as
        they would be after months of conversations (the heavy user's tail comes last, like an import)."""
        most = max(math.ceil(self.count(u) / BLOCK) for u in range(self.users))
        for number in range(most):
            for user in range(self.users):
                if number * BLOCK < self.count(user):
                    yield user, number

    def query(self, user: int, rng: np.random.Generator) -> Vectors:
        """A paraphrase of one of ``user``'s memories: that memory's vector plus noise, unit length."""
        index = int(rng.integers(self.count(user)))
        base = self.block(user, index // BLOCK).vectors[index % BLOCK]
        noise = rng.standard_normal(DIM, dtype=np.float32) * np.float32(QUERY_NOISE / math.sqrt(DIM))
        return _normalise(base + noise)

    def fresh_vector(self, user: int, rng: np.random.Generator) -> Vectors:
        """A new memory for ``user`` (for insert timing): near one of the user's topics, not in the corpus."""
        _, centroids = self._user_topics(user)
        noise = rng.standard_normal(DIM, dtype=np.float32) * np.float32(MEMORY_NOISE / math.sqrt(DIM))
        return _normalise(centroids[int(rng.integers(TOPICS_PER_USER))] + noise)


def exact_top(vectors: Vectors, query: Vectors, k: int = K) -> set[int]:
    """Indices of the ``k`` rows of ``vectors`` most cosine-similar to ``query`` (both unit length)."""
    scores = vectors @ query
    k = min(k, len(scores))
    return {int(i) for i in np.argpartition(-scores, k - 1)[:k]}


def recall_at(found_texts: Sequence[str], truth: set[int], user: int) -> float:
    """Share of ``truth`` among ``found_texts`` (synthetic memories); a row of another user counts as a miss."""
    got = {index for owner, index in map(memory_key, found_texts) if owner == user}
    return len(got & truth) / len(truth)


async def create_users(conn: Conn, count: int) -> list[uuid.UUID]:
    """Insert ``count`` bench users (``bench-mem-00000`` ...) and return their ids in user order."""
    names = [f"{USERNAME_PREFIX}{i:05d}" for i in range(count)]
    cur = await conn.execute(
        "INSERT INTO users (username, password_hash) SELECT unnest(%s::text[]), 'bench: no login'"
        " RETURNING id, username",
        (names,),
    )
    ids = {row[1]: row[0] for row in await cur.fetchall()}
    return [ids[name] for name in names]


async def drop_bench_users(conn: Conn) -> None:
    """Delete the bench users and, by cascade, their memories (for ``--database-url`` runs)."""
    await conn.execute("DELETE FROM users WHERE username LIKE %s", (USERNAME_PREFIX + "%",))


async def copy_corpus(
    conn: Conn,
    keys: Keyring,
    corpus: SyntheticCorpus,
    user_ids: Sequence[uuid.UUID],
    *,
    rows_per_copy: int = 50_000,
    progress: Callable[[int], None] | None = None,
) -> int:
    """Binary-COPY every memory of ``corpus`` into ``memories`` (one transaction per ``rows_per_copy``), each
    text sealed with its owner's data key as the store writes it (the users' keys must be in ``keys``' cache).

    ``conn`` must be in autocommit mode with pgvector registered. Returns the number of rows written.
    """
    order = corpus.load_order()
    step = next(order, None)
    written = 0
    while step is not None:
        batch = 0
        async with conn.cursor() as cur, cur.copy(COPY_SQL) as copy:
            copy.set_types(["uuid", "uuid", "bytea", "text", "float4", "vector"])
            while step is not None and batch < rows_per_copy:
                block = corpus.block(*step)
                step = next(order, None)
                owner = user_ids[block.user]
                key = keys.cached(owner)
                for offset, vector in enumerate(block.vectors):
                    topic = int(block.topics[offset])
                    text = memory_text(block.user, block.start + offset, topic)
                    kind = KINDS[topic % len(KINDS)]
                    memory_id = uuid.uuid4()
                    sealed = key.seal(text, fields.memory("text", memory_id))
                    row = (memory_id, owner, sealed, kind, float(block.importance[offset]), vector)
                    await copy.write_row(row)
                batch += len(block.vectors)
        written += batch
        if progress is not None:
            progress(written)
    return written


def maintenance_work_mem_mb(rows: int) -> int:
    """Enough for pgvector to build the whole graph in memory (~2.5 KB a 384-d row; 4 KB leaves slack)."""
    return max(256, math.ceil(rows * 4 / 1024))


async def build_index(conn: Conn, rows: int, *, parallel_workers: int = 1) -> list[str]:
    """Create the HNSW index as migration 0003 does, with the memory and workers a bulk build wants.

    Returns pgvector's notices (e.g. that the graph stopped fitting in ``maintenance_work_mem``).
    """
    notices: list[str] = []
    conn.add_notice_handler(lambda diag: notices.append(diag.message_primary or ""))
    await conn.execute(f"SET maintenance_work_mem = '{maintenance_work_mem_mb(rows)}MB'")
    await conn.execute(f"SET max_parallel_maintenance_workers = {int(parallel_workers)}")
    await conn.execute(CREATE_INDEX_SQL)
    await conn.execute("RESET maintenance_work_mem")
    await conn.execute("RESET max_parallel_maintenance_workers")
    return notices


async def load_corpus(
    db: Database, keys: Keyring, corpus: SyntheticCorpus, *, progress: bool = False
) -> tuple[list[uuid.UUID], dict[str, Any]]:
    """Users, then memories without the HNSW index, then the index and VACUUM ANALYZE.

    Returns the user ids (index = corpus user) and timings/sizes for the report.
    """
    async with await psycopg.AsyncConnection.connect(db.url, autocommit=True) as conn:
        await register_vector_async(conn)
        await drop_bench_users(conn)  # a scratch --database-url may hold an earlier run's
        user_ids = await create_users(conn, corpus.users)
        for user_id in user_ids:  # every user's data key, created once and cached for sealing
            await keys.user_key(db.pool, user_id)
        await conn.execute(f"DROP INDEX IF EXISTS {INDEX_NAME}")

        started = time.perf_counter()

        def report(written: int) -> None:
            if progress:
                elapsed = time.perf_counter() - started
                log(f"copied {written:,}/{corpus.memories:,} rows ({written / elapsed:,.0f} rows/s)")

        rows = await copy_corpus(conn, keys, corpus, user_ids, progress=report)
        load_s = time.perf_counter() - started

        started = time.perf_counter()
        watcher = asyncio.create_task(_watch_index_build(db, started), name="bench-index-progress")
        try:
            notices = await build_index(conn, rows)
        finally:
            watcher.cancel()
            await asyncio.gather(watcher, return_exceptions=True)
        index_s = time.perf_counter() - started
        if progress:
            log(f"HNSW index built in {index_s:.1f} s")

        started = time.perf_counter()
        # VACUUM as autovacuum would soon after: it sets the visibility map that the per-user count relies on.
        await conn.execute("VACUUM (ANALYZE) memories")
        vacuum_s = time.perf_counter() - started
        cur = await conn.execute(
            "SELECT pg_table_size('memories'), pg_relation_size(%s), pg_indexes_size('memories')", (INDEX_NAME,)
        )
        sizes = await cur.fetchone()
        assert sizes is not None
    mb = 1024 * 1024
    stats: dict[str, Any] = {
        "load_s": round(load_s, 1),
        "load_rows_per_s": round(rows / load_s),
        "index_build_s": round(index_s, 1),
        "index_maintenance_work_mem_mb": maintenance_work_mem_mb(rows),
        "index_notices": "; ".join(notices) or "none",
        "vacuum_analyze_s": round(vacuum_s, 1),
        "table_mb": round(sizes[0] / mb),
        "hnsw_index_mb": round(sizes[1] / mb),
        "all_indexes_mb": round(sizes[2] / mb),
    }
    return user_ids, stats


async def _watch_index_build(db: Database, started: float) -> None:
    """Log the index build's progress every 30 s (pg_stat_progress_create_index), until cancelled."""
    while True:
        await asyncio.sleep(30)
        async with db.pool.connection() as conn:
            cur = await conn.execute(
                "SELECT phase, tuples_done, tuples_total FROM pg_stat_progress_create_index"
                " WHERE relid = 'memories'::regclass"
            )
            rows = await cur.fetchall()
        for row in rows:
            # pgvector reports tuples_done while it loads tuples into the graph, without a total.
            log(f"index build {time.perf_counter() - started:,.0f} s: {row['phase']} ({row['tuples_done']:,} tuples)")


@dataclass(frozen=True, slots=True)
class Query:
    """One recall query: the user (corpus index and id), the vector, numpy's exact top ``K`` (indices) and the
    mean similarity of that top ``K``."""

    user: int
    user_id: uuid.UUID
    vector: Vectors
    truth: set[int]
    truth_similarity: float


def make_queries(
    corpus: SyntheticCorpus, user_ids: Sequence[uuid.UUID], users: Sequence[int], count: int, seed: int
) -> list[Query]:
    """``count`` queries for users drawn from ``users``, grouped by user so each user's vectors are made once."""
    rng = np.random.default_rng([seed, 3])
    chosen = sorted(int(u) for u in rng.choice(users, count))
    queries: list[Query] = []
    vectors: Vectors | None = None
    for position, user in enumerate(chosen):
        if position == 0 or chosen[position - 1] != user:
            vectors = corpus.user_vectors(user)
        assert vectors is not None
        vector = corpus.query(user, rng)
        best = float(np.mean(np.sort(vectors @ vector)[-K:]))
        queries.append(Query(user, user_ids[user], vector, exact_top(vectors, vector), best))
    random.Random(seed).shuffle(queries)  # noqa: S311 - order only, not security
    return queries
