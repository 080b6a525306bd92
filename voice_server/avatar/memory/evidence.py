"""Finding the evidence for a question in everything the user has said and heard: hybrid episodic retrieval.

Several ranked lists, fused by reciprocal rank (RRF, k = `RRF_K`: robust to the lists' different score scales):

1. **dense**: the episodes whose MiniLM embedding is nearest the question's (pgvector; HNSW for large users);
2. **lexical**: episodes sharing the question's content words, weighted by rarity (IDF over the user's own
   messages: names, numbers and places count most), through the keyed term hashes (`terms`);
3. **person**: when the question names someone the user talks with ("How's Noor's shoulder?"), the dense
   ranking within that person's chat and messages only — a long history with others cannot crowd them out;
4. **second hop**: the dense ranking among the messages holding a rare word of the best hits that the question
   does not contain ("my neighbour" → the hit "my new neighbour is called Ayesha" → "Ayesha"), so a fact that
   needs two messages ("Ayesha is originally from Porto") is found;
5. **story**: for a question about how something went ("What happened with…"), what the best hit's speaker said
   later in its chat, ranked by closeness to the question and that hit together;
6. **period**: for a question about a period ("what did I do in May?") the episodes said in it or about a day
   in it, ranked by similarity;
7. **memories**: the extracted facts and summaries (`memories`), ranked as recall ranks them;
8. **cited**: the messages that the matching day summaries cite.

The first lists are independent and run at once, each on a pooled connection of its own. Then each message's
fused score is discounted for small talk said again and again, and for being neither by nor with the person a
question names; a message said again word for word is kept once.

A hit is *relevant* when its similarity reaches `DENSE_FLOOR` or it shares a rare word with the question;
recall puts only relevant hits in the prompt, so a question about something never said recalls nothing.
"""

from __future__ import annotations

import asyncio
import functools
import math
import re
import time
import uuid
from collections import defaultdict
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Any, Literal, TypeVar

import numpy as np

from voice_server.avatar.memory import episodes, policy, terms
from voice_server.avatar.memory.store import Conn, MemoryStore, Vector
from voice_server.avatar.memory.timecues import question_cue
from voice_server.security.keys import Keyring, UserKey
from voice_server.stores.postgres import Database

_T = TypeVar("_T")
RRF_K = 60
DENSE_SPREAD = 0.25  # a dense list keeps the hits within this cosine of its best (`close_to_best`)
LIST_DEPTH = 40  # hits taken from each list
COMMON_SHARE = 0.05  # a word in more than 5 % of the user's distinct wordings is too common to search by
DENSE_FLOOR = 0.45  # cosine similarity that makes a hit relevant on its own (bench/memory_recall.py calibration)
RARE_IDF = 4.0  # shared words this rare (one in < ~2 % of the user's wordings) make a hit relevant
HOP_HITS = 3  # the best hits whose rare words are followed
HOP_MAX_DF = 30  # a second-hop word is in at most this many messages (a name, not a topic)
HOP_WORDS = 2  # per hit
HOP_WEIGHT = 0.8
PERSON_WEIGHT = 1.5  # the named person's own chat and words count more than the whole history
PERSON_IDF = 1.5  # the weight of being by or with the person a question names, among shared words
OTHER_PERSON = 0.5  # a message neither by nor with the person a question names keeps half its score
# A question about how something went ("What happened with…", "How did… go?", "Did… ever…"): its answer is a
# story told over weeks, whose later messages rarely share its words.
OPEN_ENDED = re.compile(
    r"^\s*(what happened|what'?s (the story|new|happening)|how('?s| is| are| was| were| did| does| do)\b|"
    r"did\b.*\bever\b|tell me (about|how)|any news)", re.IGNORECASE)
STORY_WEIGHT = 1.5
STORY_WITHIN = timedelta(days=120)
STORY_DEPTH = 20
SHORTLIST = 4  # hits opened per hit returned (identical messages and other people's fall out)
HOP_POOL = 12  # leading messages opened to choose the hop's and the story's starting hits
REPEATED = episodes.INDEXED_REPEATS  # a message said this many times word for word is small talk…
REPEATED_DISCOUNT = 0.3  # …and keeps this share of its score
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


def close_to_best(ranked: Sequence[tuple[uuid.UUID, float]]) -> list[tuple[uuid.UUID, float]]:
    """A dense list cut where similarity falls more than `DENSE_SPREAD` below its best: reciprocal rank fusion
    weighs ranks, not scores, so a long tail of weak matches (a person's everyday messages when asked about
    their trip) would otherwise count as much as another list's strong ones."""
    if not ranked:
        return []
    floor = ranked[0][1] - DENSE_SPREAD
    return [(i, s) for i, s in ranked if s >= floor]


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
    name a person the user talks with, the user's numbers of distinct wordings and of messages, the names never
    mentioned, its time."""

    weights: dict[int, float]
    people: list[int]
    total: int  # distinct wordings (the lexical weights' base)
    messages: int  # episodes (what a dense scan reads)
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
            run = _Run(conn, key, await self._query(conn, key, question, now), vector)
            hits = await self._fused(run, question, now)
            top = await self._best(run, hits, limit)
            if context:
                near = await episodes.neighbours(conn, key, [h.row for h in top if h.kind == "message"][:CONTEXT_HITS])
                for h in top:
                    h.context = near.get(h.id, [])
        return Found(top, run.query.unknown, (time.perf_counter() - started) * 1000)

    async def _query(self, conn: Conn, key: UserKey, question: str, now: datetime) -> Query:
        words = terms.words(question)
        names = terms.name_words(question)
        people = [terms.thread_term(w) for w in names] + [terms.speaker_term(w) for w in names]
        hashed = {t: terms.term_hash(key, t) for t in (*words, *people)}
        df = await episodes.document_frequencies(
            conn, key.user_id, [episodes.ALL_TERM, episodes.EPISODES_TERM, *hashed.values()])
        total = max(df.get(episodes.ALL_TERM, 0), 1)
        unknown = [name for name, stem in terms.proper_names(question) if total >= UNKNOWN_MIN_HISTORY
                   and hashed.get(stem, 0) not in df and hashed.get(terms.thread_term(name.lower()), 0) not in df]
        weights = {hashed[w]: idf(df[hashed[w]], total) for w in words if hashed[w] in df
                   and df[hashed[w]] <= max(COMMON_SHARE * total, 5)}
        cue = question_cue(question, now.date())
        return Query(weights, [hashed[p] for p in people if hashed[p] in df], total, df.get(episodes.EPISODES_TERM, 0),
                     unknown, cue.start if cue else None, cue.end if cue else None)

    async def _fused(self, run: _Run, question: str, now: datetime) -> dict[Item, Hit]:
        """Every list's hits, scored by reciprocal rank fusion (see the module doc)."""
        user_id, query, vector = run.key.user_id, run.query, run.vector
        hits: dict[Item, Hit] = {}

        def note(kind: Literal["message", "memory"], item_id: uuid.UUID, similarity: float = 0.0,
                 weight: float = 0.0) -> Item:
            hit = hits.setdefault((kind, item_id), Hit(kind, item_id))
            hit.similarity = max(hit.similarity, similarity)
            hit.idf = max(hit.idf, weight)
            return (kind, item_id)

        exact = query.messages <= episodes.EXACT_SCAN_MAX
        # The first lists are independent: each runs on a connection of its own, at once (Postgres serves
        # them in parallel backends; in turn they would add up).
        lexical = {**{p: PERSON_IDF for p in query.people}, **query.weights}  # the person's messages first
        dense, matched, theirs, period, nearest = await asyncio.gather(
            self._own(functools.partial(episodes.nearest, exact=exact), user_id, vector, LIST_DEPTH),
            self._own(episodes.with_terms, user_id, lexical, LIST_DEPTH) if query.weights else _none(),
            self._own(episodes.nearest_with_terms, user_id, vector, query.people, LIST_DEPTH)
            if query.people else _none(),
            self._own(episodes.nearest_in_period, user_id, vector, query.start, query.end, LIST_DEPTH)
            if query.start is not None and query.end is not None else _none(),
            self._own(self._memories.nearest_on, user_id, vector, self._weights.candidates),
        )
        lists = [[note("message", i, s) for i, s in close_to_best(dense)]]
        list_weights = [1.0]
        if matched:
            lists.append([note("message", i, weight=w) for i, w in matched])
            list_weights.append(1.0)
        if theirs:
            lists.append([note("message", i, s) for i, s in close_to_best(theirs)])
            list_weights.append(PERSON_WEIGHT)
        if period:
            lists.append([note("message", i, s) for i, s in close_to_best(period)])
            list_weights.append(1.0)
        # Facts ranked as recall always ranked them (relevance × recency × importance, within the budget).
        memories = policy.select(nearest, now, self._weights)
        lists.append([note("memory", m.id, m.similarity) for m in memories])
        list_weights.append(0.5)
        for m in memories:
            hits[("memory", m.id)].row = m.row
            hits[("memory", m.id)].selected = True
        # A day's summary that matches brings the messages it cites: "what happened with the kitchen?" finds
        # the summary that says "the builders found ancient wiring [3]" when message 3 alone shares no word.
        cited = [i for m in memories if m.row["kind"] == "summary" for i in (m.row["cites"] or [])]
        if cited:
            lists.append([note("message", i) for i in dict.fromkeys(cited)][:LIST_DEPTH])
            list_weights.append(1.0)

        # The hits the next two lists start from: the best messages once small talk is discounted.
        first = fuse(lists, list_weights)
        leading = [i for kind, i in sorted(first, key=lambda item: -first[item]) if kind == "message"][:HOP_POOL]
        await run.open(leading)
        best = sorted((i for i in leading if i in run.rows), key=lambda i: -first[("message", i)] * run.factor(i))
        best = best[:HOP_HITS]
        hop, later = await asyncio.gather(
            self._second_hop(run, best),
            self._own(self._story, run, best) if OPEN_ENDED.search(question) else _none(),
        )
        if hop:
            lists.append([note("message", i, s) for i, s in close_to_best(hop)])
            list_weights.append(HOP_WEIGHT)
        if later:
            lists.append([note("message", i, s) for i, s in later])
            list_weights.append(STORY_WEIGHT)
        for item, score in fuse(lists, list_weights).items():
            hits[item].score = score
        return hits

    async def _second_hop(self, run: _Run, ids: list[uuid.UUID]) -> list[tuple[uuid.UUID, float]]:
        """The dense ranking among episodes holding a rare word of the best hits that the question lacks (a
        name the hit introduced: "my landlord is called Emeka" → Emeka)."""
        if not ids:
            return []
        per_hit = [[h for h in (terms.term_hash(run.key, w) for w in terms.words(str(run.rows[i]["text"])))
                    if h not in run.query.weights] for i in ids]
        df = await episodes.document_frequencies(run.conn, run.key.user_id, [h for hit in per_hit for h in hit])
        # Each hit's own rarest words, the best hit's first: one hit's rare place names must not crowd out
        # the name another introduced.
        rare = list(dict.fromkeys(h for hit in per_hit for h in sorted(
            (h for h in hit if df.get(h, HOP_MAX_DF + 1) <= HOP_MAX_DF), key=lambda h: df[h])[:HOP_WORDS]))
        if not rare:
            return []
        found = await episodes.nearest_with_terms(run.conn, run.key.user_id, run.vector, rare, LIST_DEPTH)
        return [(i, s) for i, s in found if i not in ids]

    async def _own(self, query: Callable[..., Awaitable[_T]], *args: Any) -> _T:
        """``query(conn, *args)`` on a pooled connection of its own (to run beside the others)."""
        async with self._db.pool.connection() as conn:
            return await query(conn, *args)

    async def _story(self, conn: Conn, run: _Run, ids: list[uuid.UUID]) -> list[tuple[uuid.UUID, float]]:
        """How the best hit's story went on: what its speaker said later in its thread, ranked by closeness to
        the question and the best hit together (their mean embedding: "the flights got cancelled" is near
        neither "What happened with my trip to Prague?" nor "We booked a trip to Prague!" alone)."""
        if not ids:
            return []
        found = await episodes.vectors_of(conn, run.key.user_id, ids[:1])
        if not found:
            return []
        mean = np.mean([run.vector, *found], axis=0)
        expanded = (mean / max(float(np.linalg.norm(mean)), 1e-12)).astype(np.float32)
        later = await episodes.nearest_later_in_thread(conn, run.key.user_id, expanded, run.rows[ids[0]],
                                                       STORY_WITHIN, STORY_DEPTH)
        return [(i, s) for i, s in later if i not in ids]

    async def _best(self, run: _Run, hits: dict[Item, Hit], limit: int) -> list[Hit]:
        """The ``limit`` best hits, opened: small talk said again and again counts less, messages of other people
        than the one the question names count less, and a message said again word for word is kept once."""
        ranked = sorted(hits.values(), key=lambda h: -h.score)[: limit * SHORTLIST]
        await run.open([h.id for h in ranked if h.kind == "message"])
        kept: dict[tuple[str, str], Hit] = {}
        for h in ranked:
            if h.kind == "message":
                if h.id not in run.rows:
                    continue
                h.row = run.rows[h.id]
                h.score *= run.factor(h.id)
                same = (str(h.row["speaker"]).lower(), str(h.row["wording"]))
            else:
                same = ("memory", str(h.id))
            held = kept.get(same)
            if held is None or (h.score, _said(h)) > (held.score, _said(held)):
                if held is not None:
                    h.score = max(h.score, held.score)
                kept[same] = h
        return sorted(kept.values(), key=lambda h: -h.score)[:limit]


@dataclass(slots=True)
class _Run:
    """One search's connection, question and the messages opened so far (each is read and opened once)."""

    conn: Conn
    key: UserKey
    query: Query
    vector: Vector
    rows: dict[uuid.UUID, dict[str, Any]] = field(default_factory=dict)

    async def open(self, ids: Sequence[uuid.UUID]) -> None:
        """Read and open those of ``ids`` not read yet (with how often their wording was said)."""
        missing = [i for i in ids if i not in self.rows]
        if missing:
            self.rows.update(await episodes.fetch(self.conn, self.key, missing))

    def factor(self, episode_id: uuid.UUID) -> float:
        """What an opened message keeps of its fused score: `REPEATED_DISCOUNT` when the user's history holds
        it `REPEATED` times or more (small talk: "nearly the weekend"), times `OTHER_PERSON` when the question
        names someone and the message is neither by nor with them."""
        factor = REPEATED_DISCOUNT if self.rows[episode_id]["repeats"] >= REPEATED else 1.0
        if self.query.people and not set(self.query.people).intersection(self.rows[episode_id]["terms"]):
            factor *= OTHER_PERSON
        return factor


async def _none() -> list[Any]:
    """An empty list, awaitable (a list this question does not use)."""
    return []


def _said(hit: Hit) -> datetime:
    said: datetime = hit.row["said_at"]
    return said


_THEIRS = re.compile(r"^[^:\n]{1,60} said: ")
EVIDENCE_HEADER = (
    "What you remember that may bear on this, most relevant first. Each line: when it was said, who said it"
    " ('the user' is who you are talking with), their words; 'about' is the day the words refer to:"
)


def evidence_line(hit: Hit) -> str:
    """One remembered message or fact as a prompt line (see `EVIDENCE_HEADER`)."""
    row = hit.row
    if hit.kind == "memory":
        when = row["event_date"] or row["said_at"].date()
        # Another person's statement already names them ("Ana Souza said: …").
        who = "" if _THEIRS.match(str(row["text"])) else " the user:"
        return f"- {when.isoformat()},{who} {row['text']}"
    who = "the user" if row["is_user"] else ("you" if row["speaker"] == "avatar" else row["speaker"])
    where = f" (chat with {row['thread']})" if row["thread"] not in ("conversation", row["speaker"]) else ""
    about = f" (about {row['event_date'].isoformat()})" if row["event_date"] else ""
    return f"- {row['said_at'].date().isoformat()}, {who}{where}: {row['text']}{about}"


def format_evidence(hits: Sequence[Hit], unknown: Sequence[str], budget_tokens: int) -> str:
    """The prompt section of recalled evidence, best first, within ``budget_tokens`` (empty when there is
    nothing to say, and always with no budget: recall is off); names the user never mentioned are listed so
    the model says it does not know them."""
    if budget_tokens <= 0:
        return ""
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
        # Last, just before the user's words, with a reply to copy: Qwen2.5-0.5B admitted not knowing for 7 of
        # 12 unanswerable questions this way, 3 of 12 without the example and 2 of 12 with it before the
        # evidence (bench/memory_recall.py questions, greedy decoding); the quoted reply is not guarded
        # against as instructions are (`pipeline.llm.context_phrases`).
        names = ", ".join(unknown)
        parts.append(
            f"Nothing you remember mentions {names}, so you do not know the answer. Answer only with something"
            f' like "I don\'t remember you telling me about {names}."'
        )
    return "\n".join(parts)
