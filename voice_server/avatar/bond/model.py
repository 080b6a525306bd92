"""The emotional bond between a user and their avatar: a small state, its update rule and what it implies.

State (per user): affinity and trust (0..1), the streak of consecutive local days with contact, the last
contact, and the recent mood (a sentiment score, -1..1). It is stored as of the last contact; `view` decays
it to any later moment, so idle users need no background job:

- affinity and trust relax toward their starting values with a half-life of `AFFINITY_HALF_LIFE_DAYS`
  (14 days) and `TRUST_HALF_LIFE_DAYS` (30 days) of silence — a bond fades slowly, trust slower;
- the mood relaxes toward neutral with a half-life of `MOOD_HALF_LIFE_DAYS` (3 days): "they seemed down"
  matters at the next conversation, not a month later.

Each user turn is contact: affinity grows a little (more when the words are positive), trust grows a little
(more when the user shares strong feelings either way), and the mood moves toward the turn's sentiment
(an exponential average, weight `MOOD_WEIGHT`). Sentiment is VADER's compound score
(`voice_server.avatar.bond.sentiment`).

What it implies: a tone line for the per-turn prompt (`tone_line`) and the reach-out factor the scheduler
divides the check-in delay by (`reach_out`: 1–1.5; a close bond or a low mood checks in sooner).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import date, datetime, timedelta
from typing import Any, Final, Literal

AFFINITY_START: Final = 0.3
TRUST_START: Final = 0.3
AFFINITY_HALF_LIFE_DAYS: Final = 14.0
TRUST_HALF_LIFE_DAYS: Final = 30.0
MOOD_HALF_LIFE_DAYS: Final = 3.0
MOOD_WEIGHT: Final = 0.4
MOOD_THRESHOLD: Final = 0.2  # |mood| below this is neutral (VADER scores plain statements mildly positive)
AFFINITY_STEP: Final = 0.02
AFFINITY_POSITIVE_STEP: Final = 0.03
TRUST_STEP: Final = 0.01
TRUST_DISCLOSURE_STEP: Final = 0.02
DISCLOSURE: Final = 0.5  # |sentiment| at which a turn counts as sharing a strong feeling
MoodLabel = Literal["positive", "neutral", "negative"]


@dataclass(frozen=True, slots=True)
class BondState:
    """The stored bond, as of ``last_contact`` (``None``: never talked — the starting state)."""

    affinity: float = AFFINITY_START
    trust: float = TRUST_START
    streak_days: int = 0
    last_day: date | None = None
    last_contact: datetime | None = None
    mood: float | None = None
    turns: int = 0


STARTING_STATE: Final = BondState()


def _relax(value: float, start: float, days: float, half_life: float) -> float:
    return start + (value - start) * float(0.5 ** (max(days, 0.0) / half_life))


def decayed(state: BondState, now: datetime) -> BondState:
    """``state`` as it stands at ``now`` after the silence since its last contact."""
    if state.last_contact is None:
        return state
    days = (now - state.last_contact).total_seconds() / 86400.0
    mood = None if state.mood is None else state.mood * float(0.5 ** (max(days, 0.0) / MOOD_HALF_LIFE_DAYS))
    return replace(
        state,
        affinity=_relax(state.affinity, AFFINITY_START, days, AFFINITY_HALF_LIFE_DAYS),
        trust=_relax(state.trust, TRUST_START, days, TRUST_HALF_LIFE_DAYS),
        mood=mood,
    )


def observe(state: BondState, sentiment: float, at: datetime, local_day: date) -> BondState:
    """The state after a user turn with ``sentiment`` (-1..1) at ``at`` (the user's local date ``local_day``).

    A turn older than the last contact (a late, out-of-order write) still counts, without moving the clock
    back.
    """
    s = min(max(sentiment, -1.0), 1.0)
    now = max(at, state.last_contact) if state.last_contact is not None else at
    base = decayed(state, now)
    affinity = base.affinity + (AFFINITY_STEP + AFFINITY_POSITIVE_STEP * max(s, 0.0)) * (1.0 - base.affinity)
    trust = base.trust + (TRUST_STEP + (TRUST_DISCLOSURE_STEP if abs(s) >= DISCLOSURE else 0.0)) * (1.0 - base.trust)
    mood = s if base.mood is None else base.mood * (1.0 - MOOD_WEIGHT) + s * MOOD_WEIGHT
    if state.last_day is None or local_day > state.last_day + timedelta(days=1):
        streak, last_day = 1, local_day
    elif local_day == state.last_day + timedelta(days=1):
        streak, last_day = state.streak_days + 1, local_day
    else:  # the same day, or an earlier one arriving late
        streak, last_day = max(state.streak_days, 1), state.last_day
    return BondState(round(min(affinity, 1.0), 6), round(min(trust, 1.0), 6), streak, last_day, now,
                     round(mood, 6), state.turns + 1)


def mood_label(score: float | None) -> MoodLabel | None:
    """``positive``/``neutral``/``negative`` for a mood score (``None`` when there is no mood yet)."""
    if score is None:
        return None
    if score >= MOOD_THRESHOLD:
        return "positive"
    if score <= -MOOD_THRESHOLD:
        return "negative"
    return "neutral"


def current_streak(state: BondState, today: date) -> int:
    """The streak as of the user's local ``today``: broken (0) once a whole day passed without contact."""
    if state.last_day is None or state.last_day < today - timedelta(days=1):
        return 0
    return state.streak_days


def reach_out(state: BondState, now: datetime) -> float:
    """How eagerly to check in (1–1.5): 1 at the starting affinity, up to +0.56 for the closest bond, +0.3 for
    a low mood; clamped to 0.5–1.5. The check-in delay is divided by it."""
    s = decayed(state, now)
    factor = 1.0 + 0.8 * (s.affinity - AFFINITY_START) + (0.3 if mood_label(s.mood) == "negative" else 0.0)
    return round(min(max(factor, 0.5), 1.5), 3)


def tone_line(state: BondState, now: datetime, today: date) -> str:
    """One short instruction for the per-turn prompt, only when something about the bond is notable (a mood, a
    long silence, a close bond, a streak); "" otherwise."""
    if state.last_contact is None:
        return ""
    s = decayed(state, now)
    parts = []
    days = (now - state.last_contact).days
    if days >= 3:
        parts.append(f"it has been {days} days since you last talked, so welcome them back")
    match mood_label(s.mood):
        case "negative":
            parts.append("they seemed down last time, so be gentle and ask how they are")
        case "positive":
            parts.append("they seemed in good spirits last time, so match their warmth")
    if s.affinity >= 0.7:  # nothing for the ordinary case: a tone line in every prompt would only add noise
        parts.append("you are close, so be warm and familiar")
    streak = current_streak(state, today)
    if streak >= 3:
        parts.append(f"they have talked with you {streak} days in a row")
    if not parts:
        return ""
    text = "; ".join(parts)
    return f"Tone: {text[0].upper()}{text[1:]}."


def public(state: BondState, now: datetime, today: date) -> dict[str, Any]:
    """The ``GET /v1/bond`` object: the bond as it stands at ``now``."""
    s = decayed(state, now)
    label = mood_label(s.mood)
    return {
        "affinity": round(s.affinity, 3),
        "trust": round(s.trust, 3),
        "streak_days": current_streak(state, today),
        "last_contact": state.last_contact.isoformat() if state.last_contact is not None else None,
        "mood": {"label": label, "score": round(s.mood or 0.0, 3)} if label is not None else None,
        "tone": tone_line(state, now, today),
        "reach_out": reach_out(state, now),
    }
