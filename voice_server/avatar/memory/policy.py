"""Memory policy, pure: how a new statement reconciles with what is remembered, and what a turn recalls.

Reconciling (one candidate against its most similar live memories):
- a near-duplicate (cosine ≥ `DUPLICATE_SIMILARITY`) → NONE (the old one is refreshed);
- the same subject and attribute with another value ("Ana lives in Porto" → "Ana moved to Lisbon": ana/location,
  porto → lisbon), or the same subject and kind said very similarly → UPDATE: the new memory supersedes the old;
- otherwise → ADD.
A `Forget` deletes the memory it names (best semantic match about the same subject), or — for a bare
"forget that" — the memory written or recalled most recently in this conversation.

Recall ranks the live memories (facts) most similar to the turn by relevance × recency × importance
(`RecallWeights`, each factor raised to its weight) and keeps as many as fit a token budget.
"""

from __future__ import annotations

import math
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Literal

from voice_server.avatar.memory.extraction import Candidate, Forget, attribute_of, property_of
from voice_server.avatar.memory.store import Match

DUPLICATE_SIMILARITY = 0.9
SAME_TOPIC_SIMILARITY = 0.8
FORGET_SIMILARITY = 0.5


@dataclass(frozen=True, slots=True)
class Decision:
    """What to do with one candidate: ``add``; ``update`` (insert, then supersede ``targets``); ``none``
    (``targets`` holds the duplicate to refresh); ``history`` (an older statement than the memory it conflicts
    with, e.g. from an imported chat: insert it already superseded by ``targets[0]``)."""

    action: Literal["add", "update", "none", "history"]
    targets: tuple[uuid.UUID, ...] = ()


def reconcile(candidate: Candidate, matches: Sequence[Match], said_at: datetime | None = None) -> Decision:
    """Decide ADD / UPDATE / NONE / HISTORY for ``candidate``, said at ``said_at`` (``None``: now), given the
    user's similar live memories: a statement supersedes only memories said before it."""
    said = property_of(candidate.text) if candidate.attribute is not None else None
    best = max(matches, key=lambda m: m.similarity, default=None)
    if best is not None and best.similarity >= DUPLICATE_SIMILARITY:
        return Decision("none", (best.id,))
    replaced = tuple(
        m.id
        for m in matches
        if candidate.subject is not None
        and m.row["subject"] == candidate.subject
        and (
            (said is not None and _conflicts(said, property_of(str(m.row["text"]))))
            or (m.similarity >= SAME_TOPIC_SIMILARITY and m.row["kind"] == candidate.kind)
        )
    )
    if said_at is not None:
        newer = [m for m in matches if m.id in replaced and m.row["said_at"] > said_at]
        if newer:
            return Decision("history", (max(newer, key=lambda m: m.row["said_at"]).id,))
    return Decision("update", replaced) if replaced else Decision("add")


def _conflicts(said: tuple[str, str], stored: tuple[str, str] | None) -> bool:
    """The same property with another value."""
    return stored is not None and stored[0] == said[0] and stored[1] != said[1]


def _attribute(match: Match) -> str | None:
    return attribute_of(str(match.row["text"]))


def forget_targets(forget: Forget, matches: Sequence[Match], recent: Sequence[uuid.UUID]) -> list[uuid.UUID]:
    """The memories a forget request removes.

    Args:
        forget: The request.
        matches: Live memories similar to ``forget.about`` (empty for a bare "forget that").
        recent: Memories written or recalled in this conversation, most recent first.
    """
    if not forget.about:
        return list(recent[:1])
    chosen = [
        m.id
        for m in matches
        if (forget.subject in (None, "me") or m.row["subject"] == forget.subject)
        and (
            m.similarity >= FORGET_SIMILARITY
            or (
                forget.attribute is not None
                and m.row["subject"] == forget.subject
                and _attribute(m) == forget.attribute
            )
        )
    ]
    return chosen[:3]


@dataclass(frozen=True, slots=True)
class RecallWeights:
    """Tunable recall ranking: score = relevance^relevance_w · recency^recency_w · importance^importance_w.

    Attributes:
        relevance: Exponent of the cosine similarity to the turn (clamped to ≥ 0).
        recency: Exponent of the recency factor, which halves every ``half_life_days`` since the memory was
            last stated and never drops below ``recency_floor`` (old but important facts still surface).
        importance: Exponent of ``0.2 + 0.8 * importance``.
        min_relevance: Memories less similar than this are never recalled.
        budget_tokens: Most prompt tokens the recalled memories may take (~4 characters a token).
        candidates: How many nearest memories are ranked.
    """

    relevance: float = 1.0
    recency: float = 0.3
    importance: float = 0.5
    half_life_days: float = 30.0
    recency_floor: float = 0.2
    min_relevance: float = 0.3
    budget_tokens: int = 200
    candidates: int = 30


def recall_score(similarity: float, age_days: float, importance: float, w: RecallWeights) -> float:
    """The ranking score of one memory (see `RecallWeights`)."""
    recency = w.recency_floor + (1 - w.recency_floor) * math.pow(0.5, max(age_days, 0.0) / w.half_life_days)
    return (
        math.pow(max(similarity, 0.0), w.relevance)
        * math.pow(recency, w.recency)
        * math.pow(0.2 + 0.8 * importance, w.importance)
    )


def estimate_tokens(text: str) -> int:
    """A cheap token estimate for budgeting (English averages ~4 characters a token) plus the bullet."""
    return len(text) // 4 + 2


def select(matches: Sequence[Match], now: datetime, w: RecallWeights) -> list[Match]:
    """The memories to put in the prompt, best first, within ``w.budget_tokens``."""
    scored = []
    for m in matches:
        if m.similarity < w.min_relevance:
            continue
        age_days = (now - m.row["updated_at"]).total_seconds() / 86400
        scored.append((recall_score(m.similarity, age_days, float(m.row["importance"]), w), m))
    scored.sort(key=lambda pair: -pair[0])
    chosen: list[Match] = []
    spent = 0
    for _, m in scored:
        cost = estimate_tokens(str(m.row["text"]))
        if spent + cost > w.budget_tokens:
            continue
        chosen.append(m)
        spent += cost
    return chosen
