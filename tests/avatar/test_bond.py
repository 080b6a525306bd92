"""The bond's update rule, decay and what it implies (pure functions), and the real VADER lexicon offline."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

import pytest

from voice_server.avatar.bond import model as bond
from voice_server.avatar.bond.model import STARTING_STATE, BondState
from voice_server.avatar.bond.sentiment import Sentiment

T0 = datetime(2025, 3, 1, 12, 0, tzinfo=UTC)


def talk(state: BondState, sentiment: float, at: datetime) -> BondState:
    return bond.observe(state, sentiment, at, at.date())


def test_a_turn_is_contact_and_positive_words_grow_affinity_more() -> None:
    """Any turn raises affinity and trust a little; a positive one raises affinity more; the mood follows."""
    neutral = talk(STARTING_STATE, 0.0, T0)
    happy = talk(STARTING_STATE, 0.9, T0)
    assert STARTING_STATE.affinity < neutral.affinity < happy.affinity <= 1
    assert neutral.trust > STARTING_STATE.trust
    assert neutral.last_contact == T0 and neutral.turns == 1 and neutral.streak_days == 1
    assert bond.mood_label(happy.mood) == "positive" and bond.mood_label(neutral.mood) == "neutral"
    once = talk(happy, -0.8, T0)
    assert once.mood is not None and happy.mood is not None and once.mood < happy.mood  # an average, not a switch
    sad = talk(talk(once, -0.8, T0), -0.8, T0)
    assert bond.mood_label(sad.mood) == "negative"
    assert sad.trust > happy.trust  # sharing strong feelings builds trust


def test_values_stay_bounded_after_many_turns() -> None:
    """A thousand enthusiastic turns approach but never exceed 1."""
    state = STARTING_STATE
    for i in range(1000):
        state = talk(state, 1.0, T0 + timedelta(minutes=i))
    assert 0.99 < state.affinity <= 1.0 and 0.99 < state.trust <= 1.0 and state.mood == pytest.approx(1.0, abs=1e-3)


def test_decay_halves_the_distance_to_the_start_per_half_life() -> None:
    """After 14 days of silence affinity is half-way back to its start; trust (30 days) decays slower; the
    mood (3 days) fades fastest."""
    state = BondState(affinity=0.9, trust=0.9, last_contact=T0, mood=-0.8, last_day=T0.date(), streak_days=4)
    later = bond.decayed(state, T0 + timedelta(days=14))
    assert later.affinity == pytest.approx(bond.AFFINITY_START + (0.9 - bond.AFFINITY_START) / 2)
    assert later.trust > later.affinity
    assert bond.decayed(state, T0 + timedelta(days=3)).mood == pytest.approx(-0.4)
    assert bond.decayed(state, T0).affinity == pytest.approx(0.9)  # no time, no decay
    assert bond.decayed(STARTING_STATE, T0) == STARTING_STATE


def test_streak_counts_consecutive_local_days_and_breaks_after_a_missed_day() -> None:
    """Same day: unchanged; next day: +1; a gap: back to 1; the current streak reads 0 once a day is missed."""
    s = STARTING_STATE
    for day in range(5):
        s = talk(s, 0.1, T0 + timedelta(days=day))
        s = talk(s, 0.1, T0 + timedelta(days=day, hours=2))
    assert s.streak_days == 5
    assert bond.current_streak(s, (T0 + timedelta(days=5)).date()) == 5  # today not talked yet: still alive
    assert bond.current_streak(s, (T0 + timedelta(days=6)).date()) == 0
    assert talk(s, 0.1, T0 + timedelta(days=7)).streak_days == 1
    # The local date decides, not UTC: 23:30 UTC on 1 March is already 2 March in Tokyo.
    local = bond.observe(STARTING_STATE, 0.0, T0, date(2025, 3, 1))
    assert bond.observe(local, 0.0, datetime(2025, 3, 1, 23, 30, tzinfo=UTC), date(2025, 3, 2)).streak_days == 2


def test_a_late_turn_does_not_move_the_clock_back() -> None:
    """An out-of-order observation counts as contact without rewinding the last contact."""
    s = talk(STARTING_STATE, 0.0, T0 + timedelta(hours=5))
    late = talk(s, 0.0, T0)
    assert late.last_contact == T0 + timedelta(hours=5) and late.turns == 2


def test_tone_line_and_reach_out_follow_the_state() -> None:
    """A low mood asks for gentleness and checks in sooner; a long silence is welcomed back; a stranger gets
    no tone at all."""
    assert bond.tone_line(STARTING_STATE, T0, T0.date()) == ""
    down = talk(talk(STARTING_STATE, -0.9, T0), -0.9, T0)
    tone = bond.tone_line(down, T0 + timedelta(hours=1), T0.date())
    assert tone.startswith("Tone: ") and "gentle" in tone
    assert bond.reach_out(down, T0) > bond.reach_out(talk(STARTING_STATE, 0.0, T0), T0)
    close = BondState(affinity=0.95, trust=0.8, last_contact=T0, mood=0.5, last_day=T0.date(), streak_days=4)
    tone = bond.tone_line(close, T0 + timedelta(days=5), (T0 + timedelta(days=5)).date())
    assert "5 days since you last talked" in tone and "in a row" not in tone  # the streak broke meanwhile
    assert 0.5 <= bond.reach_out(close, T0) <= 1.5 and bond.reach_out(close, T0) > 1.0


def test_public_object_has_the_contract_fields() -> None:
    """``GET /v1/bond``'s shape: affinity, trust, streak_days, last_contact, mood {label, score} | null, tone."""
    start = bond.public(STARTING_STATE, T0, T0.date())
    assert start["mood"] is None and start["last_contact"] is None and start["streak_days"] == 0
    assert start["affinity"] == bond.AFFINITY_START and start["tone"] == ""
    view = bond.public(talk(STARTING_STATE, -0.9, T0), T0, T0.date())
    assert view["mood"]["label"] == "negative" and -1 <= view["mood"]["score"] < 0
    assert view["last_contact"] == T0.isoformat() and view["streak_days"] == 1


async def test_the_real_vader_lexicon_scores_offline() -> None:
    """vaderSentiment ships its lexicon: scores need no network; very long texts are cut and stay fast."""
    sentiment = Sentiment()
    await sentiment.start()
    try:
        assert await sentiment.score("I had a terrible day and I feel awful.") < -0.5
        assert await sentiment.score("I love this, what great news!") > 0.5
        assert await sentiment.score("   ") == 0.0
        assert -1.0 <= await sentiment.score("so sad " * 50_000) <= 1.0  # cut to MAX_CHARS, not 350 kB
    finally:
        sentiment.close()
