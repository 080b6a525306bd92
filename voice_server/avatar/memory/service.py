"""The memory service: recall for a turn (on the hot path, bounded) and extraction after it (background).

`MemoryService` owns one background worker that turns finished turns into memories: rule-based extraction
(plus, optionally, the local LLM), embedding on the embedder's lane, and reconciliation in one transaction
per turn under a per-user advisory lock (so two workers never reconcile one user's memories at once). The
queue is bounded; when it is full the oldest job is dropped with a warning (the turn keeps
``memories_extracted = false`` and is retried at the next start), so a conversation never waits for memory.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from typing import Any, Protocol

import numpy as np

from voice_server.avatar.memory import episodes, policy
from voice_server.avatar.memory.episodes import EpisodeBatch
from voice_server.avatar.memory.evidence import EvidenceSearch, format_evidence
from voice_server.avatar.memory.extraction import LLM_INSTRUCTIONS, Candidate, Forget, extract, parse_llm_candidates
from voice_server.avatar.memory.indexer import EpisodeIndexer, Quiet
from voice_server.avatar.memory.ports import Completer, Embedder
from voice_server.avatar.memory.reflection import Reflector
from voice_server.avatar.memory.store import Conn, Match, MemoryStore, NewMemory, Vector
from voice_server.background import WhenFull, Worker
from voice_server.live_calls import LiveCalls
from voice_server.security.keys import Keyring
from voice_server.stores.postgres import Database

log = logging.getLogger(__name__)

QUEUE_MAX = 256
RECALL_TIMEOUT_S = 0.3
RECENT_MAX = 20
RECALL_HITS = 8  # evidence ranked for a turn's prompt (the relevant ones, within the token budget)
RECENT_CONVERSATIONS = 1024
RECOVER_WITHIN_S = 24 * 3600.0
DRAIN_TIMEOUT_S = 5.0
FORGET_LATEST_WITHIN_S = 15 * 60.0


@dataclass(slots=True)
class Recent:
    """Memories written or recalled in one conversation, most recent first (what "forget that" means)."""

    ids: collections.deque[uuid.UUID] = field(default_factory=lambda: collections.deque(maxlen=RECENT_MAX))

    def push(self, memory_ids: Sequence[uuid.UUID]) -> None:
        for memory_id in reversed(memory_ids):
            with contextlib.suppress(ValueError):
                self.ids.remove(memory_id)
            self.ids.appendleft(memory_id)

    def drop(self, memory_ids: Sequence[uuid.UUID]) -> None:
        for memory_id in memory_ids:
            with contextlib.suppress(ValueError):
                self.ids.remove(memory_id)


@dataclass(frozen=True, slots=True)
class TurnJob:
    """One finished turn to learn from."""

    user_id: uuid.UUID
    conversation_id: uuid.UUID | None
    turn_id: int | None
    user_text: str
    at: datetime
    recent: Recent
    reply_text: str = ""  # what the user heard of the avatar's reply (episodic memory keeps both sides)


class TurnLog(Protocol):
    """The finished turns memory learns from, read and marked by their owner (`voice_server.conversations.
    ConversationStore`). A protocol, because that module imports this one: the turns table is read and
    written only by its owner, which this module must not import."""

    async def unlearned_turns(self, *, within_s: float, limit: int) -> list[dict[str, Any]]:
        """Turns of any user from the last ``within_s`` seconds not yet marked learnt (`mark_learned`), in the
        order they were recorded, at most ``limit``: ``id, user_id, conversation_id, turn_index, user_text``
        (opened with its owner's key)``, created_at``."""
        ...

    async def mark_learned(self, conn: Conn, user_id: uuid.UUID, turn_id: int) -> None:
        """Mark the user's turn as learnt from, on ``conn`` (in the caller's transaction)."""
        ...


@dataclass(frozen=True, slots=True)
class Outcome:
    """What one job changed (for logs and tests)."""

    added: int = 0
    updated: int = 0
    unchanged: int = 0
    deleted: int = 0


def _job_dropped(job: TurnJob) -> None:
    log.warning("memory: queue full, oldest turn left for the next start")


class MemoryService:
    """Recall and background extraction of one server's memories.

    Args:
        db: The database.
        keys: Users' data keys (memory and turn texts are sealed).
        embedder: The MiniLM embedder (384-d, unit vectors).
        turns: The finished turns (`voice_server.conversations.ConversationStore`): those never learnt from
            are queued at `start`, and each learnt turn is marked in the same transaction as its memories.
        weights: Recall ranking.
        llm: When given, the local LLM also proposes candidates (JSON, strictly parsed); rules always run.
        live: The server's live conversations: the episode indexer and the reflector step aside for them.
        reflect_llm: When given, the reflector summarises each thread's days with it (`reflection`).
    """

    def __init__(
        self,
        db: Database,
        keys: Keyring,
        embedder: Embedder,
        *,
        turns: TurnLog,
        weights: policy.RecallWeights | None = None,
        llm: Completer | None = None,
        live: LiveCalls | None = None,
        reflect_llm: Completer | None = None,
    ) -> None:
        self.db = db
        self.keys = keys
        self.turns = turns
        self.store = MemoryStore(db, keys)
        self.embedder = embedder
        self.weights = weights or policy.RecallWeights()
        self.llm = llm
        self.evidence = EvidenceSearch(db, keys, self.store, self.weights)
        self.quiet = Quiet(live)
        self.indexer = EpisodeIndexer(db, keys, embedder, self.quiet)
        self.reflector = (
            Reflector(db, keys, self.store, reflect_llm, embedder, self.quiet) if reflect_llm is not None else None
        )
        self._worker = Worker("memory-worker")
        # Recall stamps (last_recalled_at) are written by the worker, off the turn's critical path; they are
        # cheap, so they go before the turns waiting to be learnt (the first lane is served first). A full
        # stamp lane forgets its oldest stamp silently: it only ages a memory's recency a little.
        self._stamps = self._worker.queue(self._stamp, maxsize=QUEUE_MAX, when_full=WhenFull.DROP_OLDEST)
        self._jobs = self._worker.queue(
            self._learn_logged, maxsize=QUEUE_MAX, when_full=WhenFull.DROP_OLDEST, on_drop=_job_dropped
        )
        self._recent: collections.OrderedDict[uuid.UUID, Recent] = collections.OrderedDict()

    @property
    def dropped(self) -> int:
        """Turns dropped from a full queue since the service was created (learnt at the next start)."""
        return self._jobs.dropped

    def recent_for(self, conversation_id: uuid.UUID) -> Recent:
        """The conversation's recently written/recalled memories (kept for the `RECENT_CONVERSATIONS` most
        recently active conversations, so "forget that" works across chat requests too)."""
        recent = self._recent.pop(conversation_id, None) or Recent()
        self._recent[conversation_id] = recent
        while len(self._recent) > RECENT_CONVERSATIONS:
            self._recent.popitem(last=False)
        return recent

    # ----------------------------------------------------------------------------------------- lifecycle

    async def start(self) -> None:
        """Start the workers and queue turns whose extraction never finished (crash or full queue)."""
        self._worker.start()
        self.indexer.start()
        if self.reflector is not None:
            self.reflector.start()
        try:
            await self._recover()
        except Exception:
            log.exception("memory: could not queue unfinished turns")

    async def aclose(self) -> None:
        """Finish queued jobs for up to `DRAIN_TIMEOUT_S` (the rest are retried at the next start), then stop."""
        await self._worker.close(drain_s=DRAIN_TIMEOUT_S)
        await self.indexer.aclose()
        if self.reflector is not None:
            await self.reflector.aclose()

    async def drained(self) -> None:
        """Wait until the queues are empty and no job is running."""
        await self._worker.drain()

    def submit(self, job: TurnJob) -> None:
        """Queue a finished turn (never blocks; drops the oldest job when `QUEUE_MAX` are waiting)."""
        self._jobs.put(job)

    async def _stamp(self, stamp: tuple[uuid.UUID, list[uuid.UUID]]) -> None:
        user_id, ids = stamp
        try:
            await self.store.mark_recalled(user_id, ids)
        except Exception:
            log.warning("memory: recall not stamped", exc_info=True)

    async def _learn_logged(self, job: TurnJob) -> None:
        try:
            outcome = await self.learn(job)
            log.debug("memory: %s", outcome)
        except Exception:
            log.exception("memory: extraction failed for a turn; it is skipped")

    async def _recover(self) -> None:
        rows = await self.turns.unlearned_turns(within_s=RECOVER_WITHIN_S, limit=QUEUE_MAX)
        for row in rows:
            recent = self.recent_for(row["conversation_id"])
            self.submit(
                TurnJob(row["user_id"], row["conversation_id"], row["id"], row["user_text"], row["created_at"], recent,
                        row["heard_text"])
            )
        if rows:
            log.info("memory: %d unfinished turns queued", len(rows))

    # -------------------------------------------------------------------------------------------- learn

    async def learn(self, job: TurnJob) -> Outcome:
        """Extract, embed and reconcile one turn's memories in one transaction (marks the turn done)."""
        found = await self._candidates(job)
        texts = [item.text if isinstance(item, Candidate) else item.about for item in found]
        said = [t for t in texts if t]
        vectors = await self.embedder.aembed(said) if said else np.zeros((0, 384), dtype=np.float32)
        counts = collections.Counter[str]()
        async with self.db.pool.connection() as conn, conn.transaction():
            await conn.execute("SELECT pg_advisory_xact_lock(hashtextextended(%s, 0))", (str(job.user_id),))
            said_in = await self._remember_turn(conn, job) if job.turn_id is not None else None
            row_vectors = iter(vectors)
            for item, text in zip(found, texts, strict=True):
                vector: Vector | None = next(row_vectors) if text else None
                if isinstance(item, Candidate):
                    assert vector is not None
                    counts[await self._apply(conn, job, item, vector, said_in)] += 1
                else:
                    counts["deleted"] += await self._forget(conn, job, item, vector)
            if job.turn_id is not None:
                await self.turns.mark_learned(conn, job.user_id, job.turn_id)
        if job.turn_id is not None:
            self.indexer.wake()
        return Outcome(counts["add"], counts["update"], counts["none"], counts["deleted"])

    async def _remember_turn(self, conn: Conn, job: TurnJob) -> uuid.UUID | None:
        """The turn's two sides as episodes (a retried turn adds none twice: see `episodes.insert_batch`);
        the episode of the user's words (what a memory taken from them cites)."""
        assert job.turn_id is not None and job.conversation_id is not None
        key = await self.keys.for_user(conn, job.user_id)
        batch = EpisodeBatch()
        thread_id = f"conversation|{job.conversation_id}"
        for text, speaker, is_user in ((job.user_text, "user", True), (job.reply_text, "avatar", False)):
            if text.strip():
                batch.add(key, text=text, speaker=speaker, thread="conversation", thread_id=thread_id,
                          is_user=is_user, said_at=job.at, turn_id=job.turn_id, conversation_id=job.conversation_id)
        await episodes.insert_batch(conn, job.user_id, batch)
        return await episodes.of_turn(conn, job.user_id, job.turn_id)

    async def _candidates(self, job: TurnJob) -> list[Candidate | Forget]:
        today = job.at.date()
        async with self.db.pool.connection() as conn:
            subjects = await self.store.subjects(conn, job.user_id)
        found = extract(job.user_text, today, subjects)
        if self.llm is not None and not any(isinstance(f, Forget) for f in found):
            found += await self._llm_candidates(job.user_text, today, found)
        return found

    async def _llm_candidates(self, text: str, today: date, have: list[Candidate | Forget]) -> list[Candidate]:
        assert self.llm is not None
        try:
            output = await self.llm.acomplete(
                [{"role": "system", "content": LLM_INSTRUCTIONS}, {"role": "user", "content": text[:2000]}],
                max_tokens=200,
                temperature=0.0,
            )
        except Exception:
            log.warning("memory extraction: the LLM failed; rules only", exc_info=True)
            return []
        known = {c.text.lower() for c in have if isinstance(c, Candidate)}
        return [c for c in parse_llm_candidates(output, today) if c.text.lower() not in known]

    async def _apply(
        self, conn: Conn, job: TurnJob, candidate: Candidate, vector: Vector, episode_id: uuid.UUID | None
    ) -> str:
        matches = await self.store.similar(conn, job.user_id, vector, limit=5, subject=candidate.subject)
        decision = policy.reconcile(candidate, matches)
        if decision.action == "none":
            await self.store.touch(conn, job.user_id, decision.targets[0], candidate.importance)
            job.recent.push([decision.targets[0]])
            return "none"
        memory = NewMemory(
            candidate.text,
            candidate.kind,
            candidate.importance,
            candidate.subject,
            candidate.event_date,
            "conversation",
            job.conversation_id,
            job.at,
            episode_id,
        )
        row = await self.store.insert(conn, job.user_id, memory, vector)
        for old in decision.targets:
            await self.store.supersede(conn, job.user_id, old, row["id"])
        job.recent.drop(decision.targets)
        job.recent.push([row["id"]])
        return decision.action

    async def _forget(self, conn: Conn, job: TurnJob, forget: Forget, vector: Vector | None) -> int:
        matches: list[Match] = []
        if vector is not None:
            matches = await self.store.similar(conn, job.user_id, vector, limit=5, subject=forget.subject)
        recent = list(job.recent.ids)
        if not forget.about and not recent:
            # Nothing said or recalled in this conversation yet (a new chat, or after a restart): "that" is
            # the user's newest memory, if it is fresh enough to be what they are thinking of.
            cur = await conn.execute(
                "SELECT id FROM memories WHERE user_id = %s AND superseded_at IS NULL"
                " AND updated_at > now() - make_interval(secs => %s) ORDER BY updated_at DESC LIMIT 1",
                (job.user_id, FORGET_LATEST_WITHIN_S),
            )
            recent = [row["id"] for row in await cur.fetchall()]
        deleted = 0
        targets = policy.forget_targets(forget, matches, recent)
        for memory_id in targets:
            deleted += await self.store.delete(conn, job.user_id, memory_id)
        job.recent.drop(targets)
        return deleted

    # ------------------------------------------------------------------------------------------- recall

    async def recall(self, user_id: uuid.UUID, text: str, recent: Recent | None = None) -> str:
        """The prompt section of memories relevant to ``text`` ("" if none, or if recall takes longer than
        `RECALL_TIMEOUT_S` or fails: a turn is never held up by memory)."""
        return (await self.recall_with_vector(user_id, text, recent))[0]

    async def recall_with_vector(
        self, user_id: uuid.UUID, text: str, recent: Recent | None = None
    ) -> tuple[str, Vector | None]:
        """`recall`, plus the embedding of ``text`` it computed (``None`` if it did not get that far), so the
        turn's other lookups (the persona's examples) reuse it instead of embedding the words again."""
        if not text.strip():
            return "", None
        vector: Vector | None = None
        self.quiet.touch()  # a turn is being answered: background memory work waits
        try:
            async with asyncio.timeout(RECALL_TIMEOUT_S):
                vector = await self.embed_one(text)
                found = await self.evidence.search(user_id, text, vector, limit=RECALL_HITS, context=False)
        except TimeoutError:
            log.warning("memory: recall took over %.0f ms; answering without memories", RECALL_TIMEOUT_S * 1000)
            return "", vector
        except Exception:
            log.warning("memory: recall failed; answering without memories", exc_info=True)
            return "", vector
        relevant = [h for h in found.hits if h.relevant]
        memory_ids = [h.id for h in relevant if h.kind == "memory"]
        if memory_ids:
            self._stamps.put((user_id, memory_ids))
        if recent is not None:
            recent.push(memory_ids)
        return format_evidence(relevant, found.unknown, self.weights.budget_tokens), vector

    def learn_later(
        self, user_id: uuid.UUID, conversation_id: uuid.UUID, turn_id: int, user_text: str, reply_text: str = ""
    ) -> None:
        """Queue a just-recorded turn for extraction and episodic memory (see `submit`)."""
        recent = self.recent_for(conversation_id)
        self.submit(TurnJob(user_id, conversation_id, turn_id, user_text, datetime.now(UTC), recent, reply_text))

    async def relevant(self, user_id: uuid.UUID, text: str) -> list[Match]:
        """The ranked memories (facts) `recall` considers besides messages (no side effects)."""
        return await self._select(user_id, await self.embed_one(text))

    async def _select(self, user_id: uuid.UUID, vector: Vector) -> list[Match]:
        matches = await self.store.nearest(user_id, vector, self.weights.candidates)
        return policy.select(matches, datetime.now(UTC), self.weights)

    async def origins(self, user_id: uuid.UUID, rows: Sequence[dict[str, Any]]) -> dict[uuid.UUID, dict[str, Any]]:
        """The episodes (messages, call turns) that memory ``rows`` were taken from, opened, by episode id."""
        ids = [r["episode_id"] for r in rows if r.get("episode_id") is not None]
        if not ids:
            return {}
        async with self.db.pool.connection() as conn:
            return await episodes.fetch(conn, await self.keys.for_user(conn, user_id), ids)

    async def index_status(self, user_id: uuid.UUID) -> dict[str, int]:
        """The user's episodes waiting for an embedding (``pending``) and embedded (``indexed``), and the
        thread days waiting to be summarised (``reflection_pending``)."""
        async with self.db.pool.connection() as conn:
            return {"pending": await episodes.pending_count(conn, user_id),
                    "indexed": await episodes.indexed_count(conn, user_id),
                    "reflection_pending": await episodes.reflection_pending(conn, user_id)}

    async def search(self, user_id: uuid.UUID, query: str, limit: int) -> list[Match]:
        """Semantic search for the API: the user's live memories nearest ``query``, best first."""
        vector = (await self.embedder.aembed([query]))[0]
        return await self.store.nearest(user_id, vector, limit)

    async def embed_one(self, text: str) -> Vector:
        """The embedding of one memory text."""
        vector: Vector = (await self.embedder.aembed([text]))[0]
        return vector
