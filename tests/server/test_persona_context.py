"""The persona against a real embedded Postgres+pgvector and the real MiniLM embedder (ci models): a build
from an imported chat, its examples in a turn's context (voice/realtime and chat completions), one
embedding per turn shared by recall and examples, and the service's queue and cache."""

from __future__ import annotations

import io
import uuid
from collections.abc import AsyncIterator, Sequence
from typing import Any

import numpy as np
import pytest

from models.embed import MiniLmEmbedder, load_embedder
from pipeline.session import DEFAULT_PERSONA
from tests.avatar import persona_fixtures as fx
from voice_server.accounts import Principal
from voice_server.api.chat_routes import ChatCompletionRequest, _prompt
from voice_server.avatar.directory import Avatar, resolve_avatar
from voice_server.avatar.importers import Me
from voice_server.avatar.imports.job import create_import, run_import
from voice_server.avatar.memory.evidence import EVIDENCE_HEADER
from voice_server.avatar.memory.service import MemoryService
from voice_server.avatar.persona.service import PersonaService
from voice_server.conversations import AvatarContext, ConversationStore
from voice_server.security.keys import Keyring, new_master_key
from voice_server.stores.postgres import Database

pytestmark = pytest.mark.models
KEYS = Keyring([new_master_key()])


class CountingEmbedder:
    """The real embedder, counting how many texts it was asked to embed."""

    def __init__(self, inner: MiniLmEmbedder) -> None:
        self.inner = inner
        self.texts = 0

    async def aembed(self, texts: Sequence[str]) -> Any:
        self.texts += len(texts)
        return await self.inner.aembed(texts)


@pytest.fixture(scope="module")
def embedder() -> MiniLmEmbedder:
    return load_embedder(None, "ci")


@pytest.fixture
async def db(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Database]:
    async with Database.open(None, tmp_path_factory.mktemp("personadb")) as database:
        yield database


async def sam_with_history(db: Database, embedder: Any) -> uuid.UUID:
    """A user who imported the generated chat of `persona_fixtures`."""
    async with db.pool.connection() as conn:
        cur = await conn.execute(
            "INSERT INTO users (username, password_hash) VALUES (%s, 'x') RETURNING id", (f"sam{uuid.uuid4().hex[:6]}",)
        )
        row = await cur.fetchone()
        assert row is not None
        user_id: uuid.UUID = row["id"]
        import_id = await create_import(conn, KEYS, user_id, "chat.txt", None, worker="test")
    body = fx.whatsapp_export()
    await run_import(db, KEYS, embedder, user_id=user_id, import_id=import_id, open_file=lambda: io.BytesIO(body),
                     name="WhatsApp Chat with Ana Souza.txt", me=Me.of(fx.ME))
    return user_id


def principal(user_id: uuid.UUID) -> Principal:
    return Principal(user_id, "sam", False, frozenset({"*"}), uuid.uuid4())


async def test_a_build_stores_the_profile_examples_and_prompt(db: Database, embedder: MiniLmEmbedder) -> None:
    """Rebuilding after an import gives a ready persona whose prompt replaces the default one."""
    user_id = await sam_with_history(db, embedder)
    service = PersonaService(db, KEYS, embedder, turns=ConversationStore(db, KEYS))
    await service.start()  # the import finished after any build: queued at start
    try:
        await service.drained()
        persona = await service.get(user_id, "sam")
        assert persona["status"] == "ready" and persona["sources"] == {"messages": 150, "imports": 1}
        assert persona["profile"]["style"]["sign_offs"] == ["cheers"]
        assert persona["profile"]["people"][:2] == ["Ana Souza", "Bob"]
        assert user_id not in await service.store.stale()  # built after its import finished
        async with db.pool.connection() as conn:  # an import that finishes after the build (`soma import`)
            await conn.execute("UPDATE imports SET finished_at = now() + interval '1 minute' WHERE user_id = %s",
                               (user_id,))
        assert user_id in await service.store.stale()
        assert "never uses capital letters" in persona["prompt"] and '"cheers"' in persona["prompt"]
        avatar = await resolve_avatar(principal(user_id), "soma", service)
        assert avatar.persona == persona["prompt"] != DEFAULT_PERSONA
        async with db.pool.connection() as conn:
            cur = await conn.execute("SELECT count(*) AS n FROM persona_examples WHERE user_id = %s", (user_id,))
            row = await cur.fetchone()
            assert row is not None and row["n"] >= 20
            assert row["n"] == (await service.store.load(user_id)).examples
            cur = await conn.execute("SELECT text FROM persona_examples WHERE user_id = %s LIMIT 1", (user_id,))
            sealed = await cur.fetchone()
        assert sealed is not None and bytes(sealed["text"])[:1] == b"\x01"  # sealed, not text

        edited = await service.edit(user_id, "sam", {"name": "Sammy", "instructions": "Mention the weather."})
        assert edited["prompt"].startswith("You are Sammy.") and edited["prompt"].endswith("Mention the weather.")
        assert await service.prompt_for(user_id, "sam") == edited["prompt"]  # the cache was dropped at the edit
        cleared = await service.edit(user_id, "sam", {"name": None})
        assert cleared["edits"] == {"instructions": "Mention the weather."}
        assert cleared["prompt"].startswith("You are Sam Rivers.")
    finally:
        await service.aclose()


async def test_a_turn_quotes_similar_examples_with_one_embedding(db: Database, embedder: MiniLmEmbedder) -> None:
    """build_context puts the user's messages nearest to their words in the late system message, embedding
    the words once for recall and examples together; chat completions do the same, unless the client sent
    its own system prompt."""
    user_id = await sam_with_history(db, embedder)
    counting = CountingEmbedder(embedder)
    service = PersonaService(db, KEYS, embedder, turns=ConversationStore(db, KEYS))
    memory = MemoryService(db, KEYS, counting, turns=ConversationStore(db, KEYS))
    await service.rebuild(user_id)
    await service.start()
    try:
        await service.drained()
        persona = await service.prompt_for(user_id, "sam")
        store = ConversationStore(db, KEYS)
        conversation = await store.start(user_id, "soma", "realtime")
        context = AvatarContext(store, conversation, user_id, persona, memory, examples=service, username="sam")
        before = counting.texts
        messages = await context.build_context("sam", "any plans for hiking this weekend?", [])
        assert counting.texts == before + 1  # one embedding for recall and examples
        assert messages[0] == {"role": "system", "content": persona}
        late = messages[-2]["content"]
        assert late.startswith(EVIDENCE_HEADER) or late.startswith("How Sam Rivers writes")
        quoted = late[late.index("How Sam Rivers writes") :].splitlines()[1:]
        assert 1 <= len(quoted) <= 3 and any("hik" in line for line in quoted), quoted
        sam_lines = {text for sender, text in fx.sam_messages() if sender == fx.ME}
        assert all(line.removeprefix("- ") in sam_lines for line in quoted)

        context.persona = "Client instructions."  # a session.update replaced the persona: no examples
        replaced = await context.build_context("sam", "any plans for hiking this weekend?", [])
        assert all("How Sam Rivers writes" not in m["content"] for m in replaced)

        avatar = Avatar("soma", "sam", persona)
        body = ChatCompletionRequest(model="soma", messages=[{"role": "user", "content": "who won the football?"}])
        chat, _ = await _prompt(body, avatar, principal(user_id), store, memory, service)
        assert chat[0]["content"] == persona and "How Sam Rivers writes" in chat[-2]["content"]
        assert any("football" in line for line in chat[-2]["content"].splitlines()[1:])
        pirate = [{"role": "system", "content": "Be a pirate."}, {"role": "user", "content": "who won the football?"}]
        body = ChatCompletionRequest(model="soma", messages=pirate)
        own, _ = await _prompt(body, avatar, principal(user_id), store, memory, service)
        assert own[0]["content"] == "Be a pirate." and all("How Sam" not in m["content"] for m in own)
    finally:
        await service.aclose()
        await memory.aclose()


async def test_no_data_means_the_default_persona_and_no_examples(db: Database, embedder: MiniLmEmbedder) -> None:
    """A user with nothing to learn from stays ``empty`` with the default prompt, and a turn has no examples."""
    async with db.pool.connection() as conn:
        cur = await conn.execute("INSERT INTO users (username, password_hash) VALUES ('nobody', 'x') RETURNING id")
        row = await cur.fetchone()
    assert row is not None
    user_id: uuid.UUID = row["id"]
    service = PersonaService(db, KEYS, embedder, turns=ConversationStore(db, KEYS))
    await service.start()
    try:
        await service.rebuild(user_id)
        assert (await service.get(user_id, "nobody"))["status"] in ("building", "empty")
        await service.drained()
        persona = await service.get(user_id, "nobody")
        assert persona["status"] == "empty" and persona["prompt"] == DEFAULT_PERSONA and persona["built_at"]
        vector = np.asarray((await embedder.aembed(["hello"]))[0], dtype=np.float32)
        assert await service.examples_for(user_id, "nobody", vector) == ""
        assert await service.examples_for(user_id, "nobody", None) == ""
    finally:
        await service.aclose()
