"""Finding the evidence for a question in everything the user has said and heard: hybrid episodic retrieval.

Several ranked lists, fused by reciprocal rank (RRF, k = `RRF_K`: robust to the lists' different score scales):

1. **dense**: the episodes whose MiniLM embedding is nearest the question's (pgvector; HNSW for large users);
2. **lexical**: episodes sharing the question's content words, weighted by rarity (IDF over the user's own
   messages: names, numbers and places count most), through the keyed term hashes (`terms`);
3. **person**: when the question names someone the user talks with ("How's Noor's shoulder?"), the dense
   ranking within that person's chat and messages only — a long history with others cannot crowd them out;
4. **second hop**: rare words of the best hits that the question does not contain ("my neighbour" → the hit
   "my new neighbour is called Ayesha" → "Ayesha") searched together with the question's words, so a fact that
   needs two messages ("Ayesha is originally from Porto") is found;
5. **period**: for a question about a period ("what did I do in May?") the episodes said in it or about a day
   in it, ranked by similarity;
6. **memories**: the extracted facts (`memories`), nearest the question.

A hit is *relevant* when its similarity reaches `DENSE_FLOOR` or it shares a rare word with the question;
recall puts only relevant hits in the prompt, so a question about something never said recalls nothing.
"""

from __future__ import annotations

import math
import re
import time
import uuid
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Any, Literal

import numpy as np

from voice_server.avatar.memory import episodes, policy, terms
from voice_server.avatar.memory.store import Conn, MemoryStore, Vector
from voice_server.avatar.memory.timecues import question_cue
from voice_server.security.keys import Keyring, UserKey
from voice_server.stores.postgres import Database

RRF_K = 60
LIST_DEPTH = 40  # hits taken from each list
LEXICAL_CANDIDATES = 400  # episodes read to score the lexical list
COMMON_SHARE = 0.05  # a word in more than 5 % of the user's messages is too common to search by
DENSE_FLOOR = 0.45  # cosine similarity that makes a hit relevant on its own (bench/memory_recall.py calibration)
RARE_IDF = 4.0  # a shared word at least this rare (in < ~2 % of the user's messages) makes a hit relevant
HOP_HITS = 3  # the best hits whose rare words are followed
HOP_MAX_DF = 30  # a second-hop word is in at most this many messages (a name, not a topic)
HOP_WORDS = 4
HOP_WEIGHT = 0.8
PERSON_WEIGHT = 1.5  # the named person's own chat and words count more than the whole history
OTHER_PERSON = 0.5  # a message neither by nor with the person a question names keeps half its score
# A question about how something went ("What happened with…", "How did… go?", "Did… ever…"): its answer is a
# story told over weeks, whose later messages rarely share its words.
OPEN_ENDED = re.compile(
    r"^\s*(what happened|what'?s (the story|new|happening)|how('?s| is| are| was| were| did| does| do)\b|"
    r"did\b.*\bever\b|tell me (about|how)|any news)", re.IGNORECASE)
STORY_WEIGHT = 0.8
STORY_WITHIN = timedelta(days=120)
STORY_DEPTH = 20
SHORTLIST = 4  # hits opened per hit returned (identical messages and other people's fall out)
CONTEXT_HITS = 5  # hits that bring their neighbouring messages along
UNKNOWN_MIN_HISTORY = 200  # messages a history needs before a name missing from it says "never mentioned"


@dataclass(slots=True)
class Hit:
    """One piece of evidence: an episode (a message) or a memory (a fact), with what ranked it."""

    kind: Literal["message", "memory"]
    id: uuid.UUID
    score: float = 0.0
    similarity: float = 0.0  # cosine to the question (dense lists), 0 if only lexical
    idf: float = 0.0  # the summed weight of the question's words it shares
    row: dict[str, Any] = field(default_factory=dict)  # opened episode row or memory row
    context: list[dict[str, Any]] = field(default_factory=list)  # neighbouring messages (episodes)
    selected: bool = False  # a memory that recall's ranking (`policy.select`) keeps

    @property
    def relevant(self) -> bool:
        """What recall may put in a prompt: a message close enough in meaning or sharing a rare word with the
        question; a memory that recall's ranking of facts keeps (`policy.RecallWeights.min_relevance`)."""
        if self.kind == "memory":
            return self.selected
        return self.similarity >= DENSE_FLOOR or self.idf >= RARE_IDF


@dataclass(frozen=True, slots=True)
class Found:
    """A search's result, best first; the question's names that nothing the user ever said or heard
    contains ("Havana": recall tells the model it has no memory of them); its timing (ms)."""

    hits: list[Hit]
    unknown: list[str]
    search_ms: float


def idf(df: int, total: int) -> float:
    """Inverse document frequency of a word in ``df`` of ``total`` messages (BM25's, floored at 0)."""
    return max(0.0, math.log((total - df + 0.5) / (df + 0.5)))


Item = tuple[str, uuid.UUID]  # ("message" | "memory", id)


def fuse(lists: Sequence[Sequence[Item]], weights: Sequence[float]) -> dict[Item, float]:
    """Reciprocal rank fusion: each list gives its rank-``r`` item ``weight / (RRF_K + r)`` (r from 1)."""
    scores: dict[Item, float] = defaultdict(float)
    for ranked, weight in zip(lists, weights, strict=True):
        for rank, item in enumerate(ranked, start=1):
            scores[item] += weight / (RRF_K + rank)
    return scores


@dataclass(frozen=True, slots=True)
class Query:
    """A question as the lists search it: its searchable words' hashes with their weights, the hashes that
    name a person the user talks with, the user's number of messages, the names never mentioned, its time."""

    weights: dict[int, float]
    people: list[int]
    total: int
    unknown: list[str]
    start: date | None
    end: date | None


class EvidenceSearch:
    """Hybrid search over one user's episodes and memories (see the module doc). Stateless besides its
    collaborators; every query filters by the user."""

    def __init__(self, db: Database, keys: Keyring, memories: MemoryStore, weights: policy.RecallWeights) -> None:
        self._db = db
        self._keys = keys
        self._memories = memories
        self._weights = weights

    async def search(
        self, user_id: uuid.UUID, question: str, vector: Vector, *, limit: int, now: datetime | None = None,
        context: bool = True,
    ) -> Found:
        """The ``limit`` best hits for ``question`` (embedded as ``vector``), each opened, identical messages
        once; the first `CONTEXT_HITS` messages with their neighbours when ``context``."""
        started = time.perf_counter()
        now = now or datetime.now(UTC)
        async with self._db.pool.connection() as conn:
            key = await self._keys.for_user(conn, user_id)
            query = await self._query(conn, key, question, now)
            hits = await self._fused(conn, key, question, query, vector, now)
            top = await self._best(conn, key, query, hits, limit)
            if context:
                near = await episodes.neighbours(conn, key, [h.row for h in top if h.kind == "message"][:CONTEXT_HITS])
                for h in top:
                    h.context = near.get(h.id, [])
        return Found(top, query.unknown, (time.perf_counter() - started) * 1000)

    async def _query(self, conn: Conn, key: UserKey, question: str, now: datetime) -> Query:
        words = terms.words(question)
        names = terms.name_words(question)
        people = [terms.thread_term(w) for w in names] + [terms.speaker_term(w) for w in names]
        hashed = {t: terms.term_hash(key, t) for t in (*words, *people)}
        df = await episodes.document_frequencies(conn, key.user_id, [episodes.ALL_TERM, *hashed.values()])
        total = max(df.get(episodes.ALL_TERM, 0), 1)
        unknown = [name for name, stem in terms.proper_names(question) if total >= UNKNOWN_MIN_HISTORY
                   and hashed.get(stem, 0) not in df and hashed.get(terms.thread_term(name.lower()), 0) not in df]
        weights = {hashed[w]: idf(df[hashed[w]], total) for w in words if hashed[w] in df
                   and df[hashed[w]] <= max(COMMON_SHARE * total, 5)}
        cue = question_cue(question, now.date())
        return Query(weights, [hashed[p] for p in people if hashed[p] in df], total, unknown,
                     cue.start if cue else None, cue.end if cue else None)

    async def _fused(
        self, conn: Conn, key: UserKey, question: str, query: Query, vector: Vector, now: datetime
    ) -> dict[Item, Hit]:
        """Every list's hits, scored by reciprocal rank fusion (see the module doc)."""
        user_id = key.user_id
        hits: dict[Item, Hit] = {}

        def note(kind: Literal["message", "memory"], item_id: uuid.UUID, similarity: float = 0.0,
                 weight: float = 0.0) -> Item:
            hit = hits.setdefault((kind, item_id), Hit(kind, item_id))
            hit.similarity = max(hit.similarity, similarity)
            hit.idf = max(hit.idf, weight)
            return (kind, item_id)

        exact = query.total <= episodes.EXACT_SCAN_MAX
        dense = await episodes.nearest(conn, user_id, vector, LIST_DEPTH, exact=exact)
        lists = [[note("message", i, s) for i, s in dense]]
        list_weights = [1.0]
        if query.weights:
            lexical = await episodes.with_terms(conn, user_id, query.weights, LIST_DEPTH)
            lists.append([note("message", i, weight=w) for i, w in lexical])
            list_weights.append(1.0)
        if query.people:
            theirs = await episodes.nearest_with_terms(conn, user_id, vector, query.people, LIST_DEPTH)
            lists.append([note("message", i, s) for i, s in theirs])
            list_weights.append(PERSON_WEIGHT)
        if query.start is not None and query.end is not None:
            period = await episodes.nearest_in_period(conn, user_id, vector, query.start, query.end, LIST_DEPTH)
            lists.append([note("message", i, s) for i, s in period])
            list_weights.append(1.0)
        # Facts ranked as recall always ranked them (relevance × recency × importance, within the budget).
        nearest = await self._memories.nearest_on(conn, user_id, vector, self._weights.candidates)
        memories = policy.select(nearest, now, self._weights)
        lists.append([note("memory", m.id, m.similarity) for m in memories])
        list_weights.append(0.5)
        for m in memories:
            hits[("memory", m.id)].row = m.row
            hits[("memory", m.id)].selected = True

        first = fuse(lists, list_weights)
        best = [i for kind, i in sorted(first, key=lambda item: -first[item])[:HOP_HITS] if kind == "message"]
        hop = await self._second_hop(conn, key, best, query, vector)
        if hop:
            lists.append([note("message", i, s) for i, s in hop])
            list_weights.append(HOP_WEIGHT)
        later = await self._story(conn, key, best, vector) if OPEN_ENDED.search(question) else []
        if later:
            lists.append([note("message", i, s) for i, s in later])
            list_weights.append(STORY_WEIGHT)
        for item, score in fuse(lists, list_weights).items():
            hits[item].score = score
        return hits

    async def _second_hop(
        self, conn: Conn, key: UserKey, ids: list[uuid.UUID], query: Query, vector: Vector
    ) -> list[tuple[uuid.UUID, float]]:
        """The dense ranking among episodes holding a rare word of the best hits that the question lacks (a
        name the hit introduced: "my landlord is called Emeka" → Emeka)."""
        if not ids:
            return []
        rows = await episodes.fetch(conn, key, ids)
        fresh = {w for row in rows.values() for w in terms.words(str(row["text"]))}
        candidates = [h for h in (terms.term_hash(key, w) for w in fresh) if h not in query.weights]
        df = await episodes.document_frequencies(conn, key.user_id, candidates)
        rare = sorted((h for h in df if df[h] <= HOP_MAX_DF), key=lambda h: df[h])[:HOP_WORDS]
        if not rare:
            return []
        found = await episodes.nearest_with_terms(conn, key.user_id, vector, rare, LIST_DEPTH)
        return [(i, s) for i, s in found if i not in rows]

    async def _story(
        self, conn: Conn, key: UserKey, ids: list[uuid.UUID], vector: Vector
    ) -> list[tuple[uuid.UUID, float]]:
        """How the best hit's story went on: what its speaker said later in its thread, ranked by closeness to
        the question and the best hits together (their mean embedding: "the flights got cancelled" is near
        neither "What happened with my trip to Prague?" nor "We booked a trip to Prague!" alone)."""
        if not ids:
            return []
        rows = await episodes.fetch(conn, key, ids[:1])
        found = await episodes.vectors_of(conn, key.user_id, ids)
        if not rows or not found:
            return []
        mean = np.mean([vector, *found], axis=0)
        expanded = (mean / max(float(np.linalg.norm(mean)), 1e-12)).astype(np.float32)
        later = await episodes.nearest_later_in_thread(conn, key.user_id, expanded, rows[ids[0]], STORY_WITHIN,
                                                       STORY_DEPTH)
        return [(i, s) for i, s in later if i not in ids]

    async def _best(self, conn: Conn, key: UserKey, query: Query, hits: dict[Item, Hit], limit: int) -> list[Hit]:
        """The ``limit`` best hits, opened: messages of other people than the one the question names count
        less, and a message said again word for word (small talk) is kept once, its newest time."""
        ranked = sorted(hits.values(), key=lambda h: -h.score)[: limit * SHORTLIST]
        rows = await episodes.fetch(conn, key, [h.id for h in ranked if h.kind == "message"])
        people = set(query.people)
        kept: dict[tuple[str, str], Hit] = {}
        for h in ranked:
            if h.kind == "message":
                if h.id not in rows:
                    continue
                h.row = rows[h.id]
                if people and not people.intersection(h.row["terms"]):
                    h.score *= OTHER_PERSON
                same = (str(h.row["speaker"]).lower(), " ".join(terms.words(str(h.row["text"]))) or h.row["text"])
            else:
                same = ("memory", str(h.id))
            held = kept.get(same)
            if held is None or (h.score, _said(h)) > (held.score, _said(held)):
                if held is not None:
                    h.score = max(h.score, held.score)
                kept[same] = h
        return sorted(kept.values(), key=lambda h: -h.score)[:limit]


def _said(hit: Hit) -> datetime:
    said: datetime = hit.row["said_at"]
    return said


EVIDENCE_HEADER = (
    "What you remember that may bear on this, most relevant first. Each line: when it was said, who said it"
    " ('the user' is who you are talking with), their words; 'about' is the day the words refer to:"
)


def evidence_line(hit: Hit) -> str:
    """One remembered message or fact as a prompt line (see `EVIDENCE_HEADER`)."""
    row = hit.row
    if hit.kind == "memory":
        when = row["event_date"] or row["said_at"].date()
        return f"- {when.isoformat()}, the user: {row['text']}"
    who = "the user" if row["is_user"] else ("you" if row["speaker"] == "avatar" else row["speaker"])
    where = f" (chat with {row['thread']})" if row["thread"] not in ("conversation", row["speaker"]) else ""
    about = f" (about {row['event_date'].isoformat()})" if row["event_date"] else ""
    return f"- {row['said_at'].date().isoformat()}, {who}{where}: {row['text']}{about}"


def format_evidence(hits: Sequence[Hit], unknown: Sequence[str], budget_tokens: int) -> str:
    """The prompt section of recalled evidence, best first, within ``budget_tokens`` (empty when there is
    nothing to say); names the user never mentioned are listed so the model says it does not know them."""
    lines: list[str] = []
    spent = policy.estimate_tokens(EVIDENCE_HEADER)
    for hit in hits:
        line = evidence_line(hit)
        cost = policy.estimate_tokens(line)
        if spent + cost > budget_tokens:
            continue
        lines.append(line)
        spent += cost
    parts = [EVIDENCE_HEADER + "\n" + "\n".join(lines)] if lines else []
    if unknown:
        parts.append(
            f"Nothing you remember mentions {', '.join(unknown)}. Asked about it, admit that plainly instead of"
            " guessing."
        )
    return "\n".join(parts)
