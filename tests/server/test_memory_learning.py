"""MemoryService against a real embedded Postgres+pgvector and the real MiniLM embedder (ci models).

The LLM extractor is the one part replaced here, by canned outputs, because the point is what happens when
an LLM answers garbage: malformed output is ignored with a warning, the rules still work, nothing corrupt is
stored. (A run with the real ci LLM is included too.)
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import AsyncIterator, Sequence
from datetime import UTC, datetime
from typing import Any

import pytest

from models.embed import MiniLmEmbedder, load_embedder
from voice_server.avatar.memory.service import MemoryService, Recent, TurnJob
from voice_server.conversations import ConversationStore
from voice_server.security.keys import Keyring, new_master_key
from voice_server.stores.postgres import Database

# One throwaway master key for the module's databases (each test's rows die with its database).
KEYS = Keyring([new_master_key()])


class CannedLlm:
    """Answers every extraction request with the next canned output."""

    def __init__(self, outputs: Sequence[str]) -> None:
        self.outputs = list(outputs)

    async def acomplete(self, messages: Sequence[Any], **options: Any) -> str:
        return self.outputs.pop(0)


@pytest.fixture(scope="module")
def embedder() -> MiniLmEmbedder:
    return load_embedder(None, "ci")


@pytest.fixture
async def db(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Database]:
    async with Database.open(None, tmp_path_factory.mktemp("memdb")) as database:
        yield database


async def new_user(db: Database) -> uuid.UUID:
    async with db.pool.connection() as conn:
        cur = await conn.execute(
            "INSERT INTO users (username, password_hash) VALUES (%s, 'x') RETURNING id", (f"u{uuid.uuid4().hex[:8]}",)
        )
        row = await cur.fetchone()
    assert row is not None
    user_id: uuid.UUID = row["id"]
    return user_id


def job(user_id: uuid.UUID, text: str) -> TurnJob:
    return TurnJob(user_id, None, None, text, datetime.now(UTC), Recent())


MALFORMED = [
    "Sure! Here is what I remember: the user likes tea.",  # prose, no JSON
    '[{"text": "I like tea", "kind": "preference"',  # truncated JSON
    '{"text": "I like tea", "kind": "preference"}',  # an object, not an array
    '[{"text": 42, "kind": "fact"}, {"text": "ok", "kind": "secret"}, "string", null, [1, 2]]',  # wrong types
    '[{"text": "I like tea.", "kind": "preference", "importance": "very"}]',  # importance not a number
    '[{"text": "' + "x" * 5000 + '", "kind": "fact"}]',  # a huge item
    "[" * 100_000,  # huge and nested
    '[{"text": "I like tea.", "kind": "preference", "importance": NaN}]',
]


async def test_malformed_llm_output_is_ignored_and_rules_still_work(
    db: Database, embedder: MiniLmEmbedder, caplog: pytest.LogCaptureFixture
) -> None:
    user = await new_user(db)
    service = MemoryService(db, KEYS, embedder, turns=ConversationStore(db, KEYS), llm=CannedLlm(MALFORMED))
    caplog.set_level(logging.WARNING, logger="voice_server.avatar")
    for n in range(len(MALFORMED)):
        outcome = await service.learn(job(user, f"Good morning number {n}, how are you?"))
        assert outcome.added == 0
    assert len([r for r in caplog.records if "memory extraction" in r.getMessage()]) >= len(MALFORMED)
    # Rules keep working next to a broken LLM; only well-formed LLM items are added.
    service.llm = CannedLlm(['junk [{"text": "I collect stamps.", "kind": "preference", "importance": 0.4}] more'])
    outcome = await service.learn(job(user, "My brother Tom is a pilot."))
    assert outcome.added == 2
    rows = await service.store.page(user, limit=10)
    assert sorted(r["text"] for r in rows) == ["I collect stamps.", "My brother Tom is a pilot."]
    assert all(0 <= r["importance"] <= 1 for r in rows)


async def test_the_real_ci_llm_as_extractor_never_breaks_learning(db: Database, embedder: MiniLmEmbedder) -> None:
    from models.llm import load_llm

    llm = load_llm(None, "ci")
    try:
        user = await new_user(db)
        service = MemoryService(db, KEYS, embedder, turns=ConversationStore(db, KEYS), llm=llm)
        outcome = await service.learn(job(user, "My dog Rex loves the beach. I feel great today."))
        assert outcome.added >= 2  # the rules' two, plus whatever well-formed items the tiny LLM produced
        rows = await service.store.page(user, limit=20)
        assert {"My dog Rex loves the beach.", "I feel great today."} <= {r["text"] for r in rows}
    finally:
        llm.close()


async def test_reconciling_add_update_none_delete(db: Database, embedder: MiniLmEmbedder) -> None:
    user = await new_user(db)
    service = MemoryService(db, KEYS, embedder, turns=ConversationStore(db, KEYS))
    recent = Recent()

    async def say(text: str) -> Any:
        return await service.learn(TurnJob(user, None, None, text, datetime.now(UTC), recent))

    assert (await say("I live in Berlin.")).added == 1
    assert (await say("I live in Berlin!")).unchanged == 1  # a near duplicate only refreshes the old one
    assert (await say("I love hiking in the mountains.")).added == 1
    assert (await say("I moved to Munich.")).updated == 1  # same subject (me) and attribute (location)
    live = {r["text"] for r in await service.store.page(user, limit=10)}
    assert live == {"I moved to Munich.", "I love hiking in the mountains."}
    everything = await service.store.page(user, limit=10, include_superseded=True)
    berlin = next(r for r in everything if r["text"] == "I live in Berlin.")
    munich = next(r for r in everything if r["text"] == "I moved to Munich.")
    assert berlin["superseded_by"] == munich["id"]
    assert (await say("Forget about the hiking.")).deleted == 1
    assert (await say("That is no longer true.")).deleted == 2  # Munich, and Berlin with it
    assert await service.store.page(user, limit=10, include_superseded=True) == []
    # Recall respects the budget and the relevance floor.
    await say("My favourite colour is green. My sister Ana lives in Porto. My boss Carl is strict.")
    chosen = await service.relevant(user, "Where does my sister live?")
    assert chosen and "Porto" in chosen[0].row["text"]
    assert all("colour" not in m.row["text"] for m in chosen)
