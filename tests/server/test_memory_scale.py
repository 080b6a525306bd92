"""`MemoryStore` similarity search at scale, on a real embedded Postgres + pgvector.

20,000 synthetic memories across 20 users (`bench.memory.SyntheticCorpus`, loaded the way the benchmark loads
them: binary COPY, then the HNSW index). Both search strategies must return only the asking user's rows and
find numpy's exact top 10; text that looks like SQL is stored and returned as plain text.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass

import numpy as np
import pytest
import pytest_asyncio

from bench._memory_corpus import (
    HNSW_SQL,
    INDEX_NAME,
    K,
    Query,
    SyntheticCorpus,
    load_corpus,
    make_queries,
    memory_key,
)
from bench.memory import plan_of
from voice_server.avatar.memory import store as memory_store
from voice_server.avatar.memory.store import Match, MemoryStore, NewMemory
from voice_server.security.keys import Keyring, new_master_key
from voice_server.stores.postgres import Database

pytestmark = [pytest.mark.asyncio(loop_scope="module"), pytest.mark.slow, pytest.mark.timeout(180)]

CORPUS = SyntheticCorpus(20_000, 20, seed=7)
QUERIES = 40


@dataclass(frozen=True, slots=True)
class Loaded:
    """The loaded database and the user ids (index = corpus user)."""

    db: Database
    keys: Keyring
    user_ids: list[uuid.UUID]

    def queries(self, seed: int) -> list[Query]:
        return make_queries(CORPUS, self.user_ids, list(range(CORPUS.users)), QUERIES, seed)


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def loaded(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Loaded]:
    """One database for the module: loading and indexing 20,000 rows is most of its run time."""
    async with Database.open(None, tmp_path_factory.mktemp("memory-scale")) as db:
        keys = Keyring([new_master_key()])
        user_ids, _ = await load_corpus(db, keys, CORPUS)
        yield Loaded(db, keys, user_ids)


async def owners(db: Database, matches: Sequence[Match]) -> set[uuid.UUID]:
    """The user ids that the matched rows belong to, read from the table itself."""
    async with db.pool.connection() as conn:
        cur = await conn.execute("SELECT DISTINCT user_id FROM memories WHERE id = ANY(%s)", ([m.id for m in matches],))
        return {row["user_id"] for row in await cur.fetchall()}


async def search_all(loaded: Loaded, queries: Sequence[Query]) -> float:
    """Run every query through `MemoryStore.nearest`, asserting per-user isolation and best-first order;
    returns the mean recall@K against numpy's exact per-user top K."""
    store = MemoryStore(loaded.db, loaded.keys)
    recalls = []
    for query in queries:
        matches = await store.nearest(query.user_id, query.vector, K)
        assert len(matches) == K
        assert await owners(loaded.db, matches) == {query.user_id}
        keys = [memory_key(m.row["text"]) for m in matches]
        assert {user for user, _ in keys} == {query.user}
        similarities = [m.similarity for m in matches]
        assert similarities == sorted(similarities, reverse=True)
        recalls.append(len({index for _, index in keys} & query.truth) / K)
    return float(np.mean(recalls))


async def test_exact_path_returns_only_the_users_rows_with_full_recall(loaded: Loaded) -> None:
    """Users under EXACT_SCAN_MAX are searched exactly: only their rows, numpy's top 10, and a perfect match
    planted in another user's memories is never returned to them."""
    assert CORPUS.count(0) <= memory_store.EXACT_SCAN_MAX
    queries = loaded.queries(seed=1)
    assert await search_all(loaded, queries) >= 0.95

    store = MemoryStore(loaded.db, loaded.keys)
    victim, other = queries[0], loaded.user_ids[(queries[0].user + 1) % CORPUS.users]
    async with loaded.db.pool.connection() as conn:
        decoy = await store.insert(conn, other, NewMemory("decoy: the exact query vector"), victim.vector)
    try:
        mine = await store.nearest(victim.user_id, victim.vector, K)
        assert decoy["id"] not in {m.id for m in mine}
        theirs = await store.nearest(other, victim.vector, 1)
        assert theirs[0].id == decoy["id"] and theirs[0].similarity == pytest.approx(1.0, abs=1e-5)
    finally:
        assert await store.delete_one(other, decoy["id"])


async def test_hnsw_path_returns_only_the_users_rows_with_high_recall(
    loaded: Loaded, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Users over EXACT_SCAN_MAX go through the HNSW index (filtered, iterative scan): still only their own
    rows, and recall@10 of at least 0.95."""
    monkeypatch.setattr(memory_store, "EXACT_SCAN_MAX", 100)
    queries = loaded.queries(seed=2)
    async with loaded.db.pool.connection() as conn:
        plan = await plan_of(
            conn,
            HNSW_SQL,
            queries[0],
            [f"hnsw.ef_search = {memory_store.HNSW_EF_SEARCH}", "hnsw.iterative_scan = relaxed_order"],
        )
    assert INDEX_NAME in plan, f"the HNSW statement does not use the HNSW index: {plan}"
    assert await search_all(loaded, queries) >= 0.95


INJECTIONS = (
    "Robert'); DROP TABLE memories; --",
    "' OR '1'='1",
    "x'); DELETE FROM memories WHERE ('1'='1",
    '"; SELECT pg_sleep(10); --',
    "%s %(text)s {0} $1 \\' \\x00",
    "Ünïcödé 💬 'single' \"double\" `back`",
)


async def test_sql_looking_text_is_stored_and_returned_verbatim(loaded: Loaded) -> None:
    """Memory text and subject are values, never SQL: they round-trip unchanged through insert, nearest,
    similar and get, nothing else in the table changes, and an unknown update field is refused."""
    store = MemoryStore(loaded.db, loaded.keys)
    user = 3
    owner = loaded.user_ids[user]
    rng = np.random.default_rng(11)
    async with loaded.db.pool.connection() as conn:
        cur = await conn.execute("SELECT count(*) AS n FROM memories")
        before = (await cur.fetchone() or {})["n"]
    inserted: list[tuple[uuid.UUID, str, np.ndarray]] = []
    try:
        async with loaded.db.pool.connection() as conn:
            for text in INJECTIONS:
                vector = CORPUS.fresh_vector(user, rng)
                row = await store.insert(conn, owner, NewMemory(text, subject=text), vector)
                assert row["text"] == text and row["subject"] == text
                inserted.append((row["id"], text, vector))
        for memory_id, text, vector in inserted:
            best = (await store.nearest(owner, vector, 1))[0]
            assert best.id == memory_id and best.row["text"] == text
            assert (await store.get(owner, memory_id) or {})["text"] == text
            async with loaded.db.pool.connection() as conn:
                found = await store.similar(conn, owner, vector, limit=1, subject=text)
            assert [m.id for m in found] == [memory_id]  # its own subject matches only itself
            assert await store.get(loaded.user_ids[user + 1], memory_id) is None
        with pytest.raises(ValueError):
            await store.update(owner, inserted[0][0], {"text = 'x', user_id": "x"}, None)
        async with loaded.db.pool.connection() as conn:
            cur = await conn.execute("SELECT count(*) AS n FROM memories")
            assert (await cur.fetchone() or {})["n"] == before + len(INJECTIONS)
    finally:
        for memory_id, _, _ in inserted:
            await store.delete_one(owner, memory_id)


async def test_paging_by_cursor_visits_every_row_once(loaded: Loaded) -> None:
    """Rows stored in one go share a creation time (each COPY batch here, an import in the product); paging by
    the (created_at, id) cursor still visits every live row exactly once, newest first."""
    store = MemoryStore(loaded.db, loaded.keys)
    user = loaded.user_ids[0]
    async with loaded.db.pool.connection() as conn:
        cur = await conn.execute(
            "SELECT count(*) AS n, count(DISTINCT created_at) AS times FROM memories"
            " WHERE user_id = %s AND superseded_at IS NULL", (user,))
        counts = await cur.fetchone()
    assert counts is not None and counts["times"] < counts["n"]  # the case that paging by time alone gets wrong
    seen: list[dict[str, object]] = []
    after = None
    while rows := await store.page(user, limit=97, after=after):
        seen += rows
        after = memory_store.parse_page_cursor(memory_store.page_cursor(rows[-1]))
    assert len(seen) == counts["n"] == len({row["id"] for row in seen})
    keys = [(row["created_at"], row["id"]) for row in seen]
    assert keys == sorted(keys, reverse=True)  # type: ignore[type-var]
