"""Reflection: a short, grounded summary of each thread's day of messages, written in the background.

Broad questions ("what happened with the house?") are answered better by "On 2 March, in the chat with Dad:
the roofer found a cracked tile [4]; …" than by any single message. Every day of a thread that got messages is
queued (`episodes.insert_batch`); once the day has settled (an earlier day, or `SETTLE_S` without new messages
today's), the reflector
asks the local LLM for one or two sentences that cite the numbered messages they come from, and stores them as
a memory of kind ``summary`` (source ``reflection``) with those messages' episode ids (``cites``). A summary
that cites nothing, cites messages that do not exist, or is empty or outsized is not stored: an ungrounded
summary would be a made-up memory. A day summarised again (it grew) supersedes its older summary.

Calls first: before each summary the reflector waits for `Quiet` (no call live and no turn answered for a few
seconds), without a limit — a summary is never urgent. Days are taken newest first.
"""

from __future__ import annotations

import asyncio
import logging
import re
import uuid
from collections.abc import Sequence
from datetime import UTC, date, datetime, timedelta
from typing import TYPE_CHECKING, Any

from voice_server.avatar.memory import episodes
from voice_server.avatar.memory.indexer import Quiet
from voice_server.avatar.memory.ports import Completer, Embedder
from voice_server.avatar.memory.store import MemoryStore, NewMemory, summary_of
from voice_server.background import OwnedTask
from voice_server.security.keys import Keyring
from voice_server.stores.postgres import Database

if TYPE_CHECKING:  # types only: the LLM runtime is imported when the models load
    from models.chat_prompt import Message

log = logging.getLogger(__name__)

MIN_MESSAGES = 6  # a day with fewer is a greeting or two: nothing to summarise
MAX_LINES = 40  # messages of one day shown to the model (the first)
MAX_LINE_CHARS = 200
MAX_TOKENS = 90
MIN_CHARS, MAX_CHARS = 20, 600
SETTLE_S = 15 * 60.0  # a day's last message this long ago: the conversation is over for now
POLL_S = 30.0
ERROR_BACKOFF_S = 30.0
INSTRUCTIONS = (
    "You summarise one day of a chat for someone's memory. Write one or two short sentences in the third"
    " person: what happened, news, plans, decisions; skip greetings and small talk. After each fact put the"
    " number of the message it comes from in brackets, like [3]. If nothing of note happened, write NOTHING."
)
_CITE = re.compile(r"\[(\d{1,3})\]")
_REFUSAL = re.compile(r"\b(I'?m sorry|I can'?t|I cannot|as an AI|I don'?t have)\b", re.IGNORECASE)
MIN_WORDS = 5
COPY_MIN_CHARS = 25  # a message this long found whole in the output: copied, not summarised


def prompt(lines: Sequence[dict[str, Any]], day: date) -> list[Message]:
    """The LLM prompt for one thread's day: the instructions, then the numbered messages (1-based)."""
    thread = str(lines[0]["thread"]) if lines else ""
    header = f"Chat with {thread}" if thread != "conversation" else "A conversation with the avatar"
    numbered = "\n".join(
        f"[{n}] {_speaker(row)}: {' '.join(str(row['text']).split())[:MAX_LINE_CHARS]}"
        for n, row in enumerate(lines, start=1)
    )
    return [{"role": "system", "content": INSTRUCTIONS},
            {"role": "user", "content": f"{header}, {day.isoformat()}:\n{numbered}"}]


def parse(output: str, lines: Sequence[dict[str, Any]]) -> tuple[str, list[int]] | None:
    """The summary's text without its citations, and the 0-based messages it cites, or ``None`` when it is not
    a grounded summary of ``lines``: NOTHING, no valid citation or one past the last message, too short or long,
    a refusal, or the transcript given back instead of a summary (it starts with a citation, labels speakers
    like the prompt's lines, or repeats a message word for word) — what Qwen2.5-0.5B writes for nearly every
    day (see the README)."""
    text = output.strip()
    if not text or text.upper().startswith("NOTHING") or text.startswith("[") or _REFUSAL.search(text):
        return None
    cited = [int(n) for n in _CITE.findall(text)]
    if not cited or any(not 1 <= n <= len(lines) for n in cited):
        return None
    clean = " ".join(_CITE.sub("", text).split()).replace(" .", ".").replace(" ,", ",")
    if not MIN_CHARS <= len(clean) <= MAX_CHARS or len(clean.split()) < MIN_WORDS:
        return None
    if any(f"{_speaker(row)}:" in clean for row in lines):
        return None
    lowered = clean.lower()
    if any(len(said := " ".join(str(row["text"]).split()).lower()) >= COPY_MIN_CHARS and said in lowered
           for row in lines):
        return None
    return clean, sorted({n - 1 for n in cited})


def _speaker(row: dict[str, Any]) -> str:
    if row["speaker"] == "avatar":
        return "Avatar"
    return "User" if row["speaker"] == "user" else str(row["speaker"])


class Reflector:
    """The background task that summarises settled thread days (see the module doc).

    Args:
        db: The database.
        keys: Users' data keys.
        store: Where summaries go (memories).
        llm: The local LLM.
        embedder: Embeds each summary (recall finds it like any memory).
        quiet: When background work may run.
    """

    def __init__(
        self, db: Database, keys: Keyring, store: MemoryStore, llm: Completer, embedder: Embedder, quiet: Quiet
    ) -> None:
        self._db = db
        self._keys = keys
        self._store = store
        self._llm = llm
        self._embedder = embedder
        self._quiet = quiet
        self._task = OwnedTask("memory-reflector")
        self.written = 0  # summaries stored since start

    def start(self) -> None:
        """Start the task (idempotent)."""
        if not self._task.running:
            self._task.start(self._run())

    async def aclose(self) -> None:
        """Stop the task; a day being summarised stays queued."""
        await self._task.close()

    async def _run(self) -> None:
        while True:
            try:
                await self._quiet.wait(None)
                if await self.reflect_once(datetime.now(UTC) - timedelta(seconds=SETTLE_S)):
                    continue
            except Exception:
                log.exception("reflection: a day could not be summarised; trying again later")
                await asyncio.sleep(ERROR_BACKOFF_S)
                continue
            await asyncio.sleep(POLL_S)

    async def reflect_once(self, settled_before: datetime) -> bool:
        """Summarise the newest settled queued day, if any (stored when grounded); false when none waits."""
        async with self._db.pool.connection() as conn, conn.transaction():
            day = await episodes.next_day(conn, settled_before)
            if day is None:
                return False
            user_id, tag, on = day["user_id"], bytes(day["thread_tag"]), day["day"]
            key = await self._keys.for_user(conn, user_id)
            lines = await episodes.day_of_thread(conn, key, tag, on, MAX_LINES)
            await episodes.day_done(conn, user_id, tag, on)
        if len(lines) >= MIN_MESSAGES:
            output = await self._llm.acomplete(prompt(lines, on), max_tokens=MAX_TOKENS, temperature=0.0)
            found = parse(output, lines)
            if found is not None:
                await self._store_summary(user_id, tag, on, lines, *found)
            else:
                log.debug("reflection: no grounded summary for a day of %d messages", len(lines))
        return True

    async def _store_summary(
        self, user_id: uuid.UUID, tag: bytes, on: date, lines: list[dict[str, Any]], text: str, cited: list[int]
    ) -> None:
        thread = str(lines[0]["thread"])
        where = f"in the chat with {thread}" if thread != "conversation" else "in a conversation with you"
        summary = f"On {on.isoformat()}, {where}: {text}"
        vector = (await self._embedder.aembed([summary]))[0]
        async with self._db.pool.connection() as conn, conn.transaction():
            key = await self._keys.for_user(conn, user_id)
            reflects = key.tag(f"reflects|{tag.hex()}|{on.isoformat()}")
            # The same lock as the memory service's learning: one writer of a user's memories at a time.
            await conn.execute("SELECT pg_advisory_xact_lock(hashtextextended(%s, 0))", (str(user_id),))
            older = await summary_of(conn, user_id, reflects)
            memory = NewMemory(
                summary, "summary", 0.5, None, on, "reflection", lines[0].get("conversation_id"),
                lines[-1]["said_at"], None, tuple(lines[i]["id"] for i in cited), reflects,
            )
            row = await self._store.insert(conn, user_id, memory, vector)
            if older is not None:
                await self._store.supersede(conn, user_id, older, row["id"])
        self.written += 1
