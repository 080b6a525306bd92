"""Issue 20, "It remembers what happened": past events and ongoing activities become memories, their dates are
resolved against the day they were said, and the other person in a chat is remembered as having said it."""

from __future__ import annotations

from datetime import date

import pytest

from voice_server.avatar.memory.extraction import (
    MAX_CANDIDATES,
    MAX_MEMORY_CHARS,
    Candidate,
    Forget,
    activity_of,
    date_in,
    extract,
    extract_theirs,
)

TODAY = date(2026, 11, 30)  # a Monday


def only(said: str, today: date = TODAY) -> Candidate:
    (found,) = extract(said, today)
    assert isinstance(found, Candidate)
    return found


@pytest.mark.parametrize(
    ("said", "kind", "event_date"),
    [
        ("we adopted another puppy called Pixie", "event", None),
        ("last year I visited Italy", "event", date(2025, 11, 30)),
        ("I went to a support group yesterday", "event", date(2026, 11, 29)),
        ("I'm learning the violin now", "fact", None),
        ("we got married in June", "event", None),  # a month alone names no day
        ("I finished the book", "event", None),
        ("I've started a pottery class", "fact", None),
        ("We moved to Lisbon two weeks ago.", "event", date(2026, 11, 16)),
        ("I've been to Japan twice.", "event", None),
        ("I have been studying Portuguese at night.", "fact", None),
        ("We ran the Lisbon half marathon on 12 March.", "event", date(2026, 3, 12)),  # done: the last 12 March
        ("I\u2019ve joined a choir.", "fact", None),  # a phone's curly apostrophe
    ],
)
def test_events_and_activities_become_candidates(said: str, kind: str, event_date: date | None) -> None:
    found = only(said)
    assert (found.kind, found.subject, found.event_date) == (kind, "me", event_date)
    assert found.text == said[0].upper() + said[1:].rstrip(".") + "."  # the user's own words


def test_the_marathon_is_an_event_not_a_fact_about_my_first() -> None:
    """ "my first" used to make this a catch-all fact; the activity rule comes first. "last weekend" is a
    period, so whatever day the date rules give it, it is not after the day it was said."""
    found = only("I ran my first marathon last weekend")
    assert (found.kind, found.subject) == ("event", "me")
    assert found.event_date is None or found.event_date < TODAY


def test_importance_follows_the_kind_and_a_named_day() -> None:
    assert only("I finished the book").importance == 0.7  # an event
    assert only("I went to a support group yesterday").importance == 0.8  # …on a named day
    assert only("I'm learning the violin now").importance == 0.6  # a fact
    assert only("Remember that I finished the book").importance == 0.9


@pytest.mark.parametrize(
    "said",
    [
        "I went to bed",
        "I got up",
        "I got it",
        "I saw that",
        "I went quiet",
        "I went to bed early last night",
        "I got your message",
        "I'm doing well",
        "I took a nap",
        "I went ahead",
        "I got there eventually",
        "I left early",
        "I'm running late",
        "I won",
        "I got up and had breakfast",
        "I didn't go to the concert",
        "I never visited Italy",
        "I might visit Italy",
        "If we moved to Lisbon we would be happier",
        "I'd have visited Italy",
        "Did you go to Italy?",
        "Have you finished the book",
        "You went to Italy",
        "Carlos adopted a puppy",
    ],
)
def test_chat_negations_hypotheticals_and_questions_are_not_events(said: str) -> None:
    assert activity_of(said) is None
    assert extract(said, TODAY) == []


def test_an_activity_needs_a_content_word_in_its_own_clause() -> None:
    assert activity_of("I got home, then I bought a new car") == "event"
    assert activity_of("We visited Ana in Porto") == "event"
    assert activity_of("I've started it") is None
    assert activity_of("I've got to go") is None
    assert activity_of("I signed up for a 10k") == "event"  # a number with a unit is content, a bare one not
    assert activity_of("I ran 5") is None


def test_contractions_are_no_peoples_names() -> None:
    """ "I've", "We" and "You" at the start of a sentence were taken for names ("I've got a dog" was a person
    memory about "i've"); they are the speaker, or not about the user at all."""
    dog = only("I've got a dog.")
    assert (dog.kind, dog.subject) == ("fact", "me")
    assert only("We moved to Lisbon.").subject == "me"
    assert extract("You went to Italy.", TODAY) == []


def test_existing_kinds_keep_their_precedence() -> None:
    """People, plans, feelings and named events still win over the activity rule, as before."""
    assert only("I visited my grandma yesterday").kind == "person"
    assert only("I visited my grandma yesterday").subject == "grandma"
    assert only("I booked a flight to Rome for next week").kind == "plan"
    assert only("I went to her funeral").kind == "event"
    assert only("I went to the doctor and I'm so tired").kind == "feeling"


def test_max_candidates_still_bounds_a_turn() -> None:
    said = " ".join(f"I visited museum number {n}." for n in range(12))
    assert len(extract(said, TODAY)) == MAX_CANDIDATES


@pytest.mark.parametrize(
    ("said", "expected"),
    [
        ("My sister Ana lives in Porto.", Candidate("My sister Ana lives in Porto.", "person", 0.7, "ana", "location")),
        ("I love hiking in the mountains.", Candidate("I love hiking in the mountains.", "preference", 0.5, "me")),
        ("I work as a nurse.", Candidate("I work as a nurse.", "fact", 0.6, "me", "job")),
        ("My dog Rex is sick.", Candidate("My dog Rex is sick.", "person", 0.7, "rex")),
        ("I'm flying to Rome tomorrow.",
         Candidate("I'm flying to Rome tomorrow.", "plan", 0.75, "me", None, date(2026, 12, 1))),
        ("I'm visiting my aunt on January 5th.",
         Candidate("I'm visiting my aunt on January 5th.", "plan", 0.75, "aunt", None, date(2027, 1, 5))),
        ("I want to live authentically.", Candidate("I want to live authentically.", "plan", 0.65, "me")),
    ],
)
def test_existing_outputs_are_unchanged(said: str, expected: Candidate) -> None:
    assert extract(said, TODAY) == [expected]


def test_dates_the_old_parser_missed_are_now_resolved() -> None:
    """The one intended change to existing outputs: `date_in` is `timecues`' parser, which knows "next month"."""
    assert extract("I am moving to Berlin next month.", TODAY) == [
        Candidate("I am moving to Berlin next month.", "plan", 0.75, "me", "location", date(2026, 12, 30))
    ]


def test_a_yearless_date_follows_the_tense() -> None:
    """The nearest 5 January to 1 March is in the past, but a plan is ahead; the nearest 12 March to 30 November
    is ahead, but a marathon that was run is behind. Relative and dated expressions never move."""
    said_on = date(2024, 3, 1)
    assert only("I'm visiting my aunt on January 5th.", said_on).event_date == date(2025, 1, 5)
    assert only("I ran the Lisbon half marathon on 12 March.").event_date == date(2026, 3, 12)
    assert only("I ran the Lisbon half marathon on 12 March 2027.").event_date == date(2027, 3, 12)
    assert only("I'm visiting my aunt on 5 January 2024.", said_on).event_date == date(2024, 1, 5)
    assert only("I bought a car on 10 January.", said_on).event_date == date(2024, 1, 10)  # already behind
    assert date_in("It is on 12 March.", TODAY) == date(2027, 3, 12)  # no tense to follow: the nearest


def test_existing_forgets_and_non_memories_are_unchanged() -> None:
    assert extract("Forget that.", TODAY) == [Forget("")]
    named = Forget("Ana moved to Lisbon", "ana", "location")
    assert extract("Please forget that Ana moved to Lisbon", TODAY) == [named]
    for said in ("What is my name?", "Hello there.", "Tell me a joke about cats.", "Carlos adopted a puppy."):
        assert extract(said, TODAY) == []


@pytest.mark.parametrize(
    ("said", "day"),
    [
        ("yesterday", date(2026, 11, 29)),
        ("tomorrow", date(2026, 12, 1)),
        ("tonight", TODAY),
        ("next week", date(2026, 12, 7)),
        ("last year", date(2025, 11, 30)),
        ("two weeks ago", date(2026, 11, 16)),
        ("next Tuesday", date(2026, 12, 1)),
        ("on 12 March", date(2027, 3, 12)),
        ("on March 3", date(2027, 3, 3)),
        ("in June", None),
        ("nothing here", None),
    ],
)
def test_date_in_resolves_against_the_day_it_was_said(said: str, day: date | None) -> None:
    assert date_in(f"It was {said}.", TODAY) == day


def test_event_dates_follow_the_day_it_was_said_not_the_wall_clock() -> None:
    said_on = date(2023, 5, 12)
    assert only("I went to a support group yesterday", said_on).event_date == date(2023, 5, 11)
    assert only("last year I visited Italy", said_on).event_date == date(2022, 5, 12)


ANA = "Ana Souza"


def theirs(said: str, speaker: str = ANA, today: date = TODAY) -> Candidate:
    (found,) = extract_theirs(said, speaker, today)
    return found


def test_the_other_persons_facts_record_who_said_them() -> None:
    job = theirs("I got the job in Berlin!")
    assert job == Candidate("Ana Souza said: I got the job in Berlin!", "event", 0.7, "ana", "job")
    moved = theirs("We moved to Lisbon last month")
    assert moved == Candidate(
        "Ana Souza said: We moved to Lisbon last month.", "event", 0.8, "ana", "location", date(2026, 10, 30)
    )
    brother = theirs("My brother Tomas is a nurse")
    assert (brother.text, brother.kind, brother.subject) == ("Ana Souza said: My brother Tomas is a nurse.",
                                                             "person", "tomas")


def test_their_unnamed_relation_is_theirs_not_the_users() -> None:
    """Convention: an unnamed relation of the speaker is "<speaker's first name>'s <relation>"."""
    sister = theirs("My sister lives in Porto.")
    assert (sister.subject, sister.attribute, sister.kind) == ("ana's sister", "location", "person")
    (mine,) = extract("My sister lives in Porto.", TODAY)
    assert isinstance(mine, Candidate) and mine.subject == "sister"
    assert theirs("My best friend Rui moved to Faro.").subject == "rui"


def test_their_kinds_dates_and_attributes_come_from_the_same_rules() -> None:
    said = "I'm learning the violin now. I went to a support group yesterday. Whatever."
    violin, group = extract_theirs(said, ANA, TODAY)
    assert (violin.kind, violin.subject, violin.event_date) == ("fact", "ana", None)
    assert (group.kind, group.event_date) == ("event", date(2026, 11, 29))
    assert group.text == "Ana Souza said: I went to a support group yesterday."
    many = extract_theirs(" ".join(f"I visited museum number {n}." for n in range(9)), ANA, TODAY)
    assert len(many) == MAX_CANDIDATES


@pytest.mark.parametrize(
    "said",
    [
        "Forget that.",
        "Please forget that I moved to Lisbon",
        "That's not true anymore.",
        "I don't live in Lisbon anymore.",
        "Did you get the job?",
        "Carlos adopted a puppy.",  # not about themselves
        "I went to bed",
        "haha ok",
    ],
)
def test_the_other_person_cannot_make_the_avatar_forget_and_chat_is_skipped(said: str) -> None:
    assert extract_theirs(said, ANA, TODAY) == []


def test_speaker_names_are_tidied_and_bounded() -> None:
    assert theirs("I got the job in Berlin!", "  Ana \n Souza ").text.startswith("Ana Souza said: I got")
    number = theirs("I got the job in Berlin!", "+351 912 345 678")
    assert (number.text, number.subject) == ("+351 912 345 678 said: I got the job in Berlin!", "+351 912 345 678")
    blank = theirs("My sister lives in Porto.", " ")
    assert (blank.text, blank.subject) == ("Someone said: My sister lives in Porto.", None)
    long = theirs("I visited " + "very " * 100 + "far Italy", ANA)
    assert len(long.text) <= MAX_MEMORY_CHARS + 1 and long.text.startswith("Ana Souza said: I visited very")
