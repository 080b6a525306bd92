"""Pure time cues: the day a chat message refers to, and the period a question about the past is about."""

from __future__ import annotations

import dataclasses
from datetime import date

import pytest

from voice_server.avatar.memory.timecues import TimeCue, question_cue, resolve_event_date

MON = date(2024, 3, 11)  # Monday
TUE = date(2024, 3, 12)  # Tuesday
ASKED = date(2024, 10, 7)  # Monday


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("Feeling great today", MON),
        ("Pizza TONIGHT!", MON),
        ("I ran this morning", MON),
        ("Busy This Afternoon", MON),
        ("this evening we cooked", MON),
        ("yesterday was rough", date(2024, 3, 10)),  # Sunday
        ("I barely slept last night", date(2024, 3, 10)),
        ("the day before yesterday", date(2024, 3, 9)),  # Saturday; longer than "yesterday" at the same place
        ("Tomorrow is the big day", date(2024, 3, 12)),
        ("the day after tomorrow", date(2024, 3, 13)),
    ],
)
def test_day_words(text: str, expected: date) -> None:
    assert resolve_event_date(text, MON) == expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("3 days ago", date(2024, 3, 8)),
        ("three days ago", date(2024, 3, 8)),
        ("twelve days ago", date(2024, 2, 28)),
        ("a couple of days ago", date(2024, 3, 9)),
        ("a few days ago", date(2024, 3, 8)),
        ("a week ago", date(2024, 3, 4)),
        ("two weeks ago", date(2024, 2, 26)),
        ("a month ago", date(2024, 2, 11)),
        ("6 months ago", date(2023, 9, 11)),
        ("2 years ago", date(2022, 3, 11)),
        ("an hour ago", None),  # hours name no other day
        ("9999 years ago", None),  # before year 1: ignored, not an error
    ],
)
def test_ago(text: str, expected: date | None) -> None:
    assert resolve_event_date(text, MON) == expected


@pytest.mark.parametrize(
    ("text", "said_on", "expected"),
    [
        ("a month ago", date(2024, 3, 31), date(2024, 2, 29)),  # clamped to the leap February
        ("one month ago", date(2023, 3, 31), date(2023, 2, 28)),
        ("a year ago", date(2024, 2, 29), date(2023, 2, 28)),
        ("last month", date(2024, 3, 31), date(2024, 2, 29)),
        ("last year", date(2024, 2, 29), date(2023, 2, 28)),
        ("a month ago", date(2024, 1, 15), date(2023, 12, 15)),  # across New Year
    ],
)
def test_calendar_months_clamp(text: str, said_on: date, expected: date) -> None:
    assert resolve_event_date(text, said_on) == expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("in 3 days", date(2024, 3, 14)),
        ("in two weeks", date(2024, 3, 25)),
        ("in a week's time", date(2024, 3, 18)),
        ("I haven't seen her in two weeks", None),  # a duration, not a day
    ],
)
def test_in_future(text: str, expected: date | None) -> None:
    assert resolve_event_date(text, MON) == expected


@pytest.mark.parametrize(
    ("text", "said_on", "expected"),
    [
        ("last Tuesday", TUE, date(2024, 3, 5)),  # strictly before: a week earlier, not today
        ("next Tuesday", TUE, date(2024, 3, 19)),  # strictly after
        ("last Friday", MON, date(2024, 3, 8)),  # Friday
        ("next Friday", MON, date(2024, 3, 15)),  # Friday
        ("this past Friday", MON, date(2024, 3, 8)),
        ("this coming Friday", MON, date(2024, 3, 15)),
        ("Sunday just gone", MON, date(2024, 3, 10)),  # Sunday
        ("this Saturday", MON, date(2024, 3, 16)),  # Saturday
        ("on monday", MON, date(2024, 3, 18)),  # no past tense: the next one, not today
        ("We went hiking on Saturday", MON, date(2024, 3, 9)),  # Saturday before
        ("I'm seeing her on Saturday", MON, date(2024, 3, 16)),  # Saturday after
        ("We walked the dog on Sunday", MON, date(2024, 3, 10)),  # an "-ed" verb is past tense
        ("I need to shop on Sunday", MON, date(2024, 3, 17)),  # "need" is no "-ed" verb
        ("I'm so excited to see her on Saturday", MON, date(2024, 3, 16)),  # an adjective, not a past verb
        ("Had a chat with her, she'll come on Saturday", MON, date(2024, 3, 16)),  # a future marker wins
        ("She\u2019ll come on Saturday, we had fun", MON, date(2024, 3, 16)),  # curly apostrophe
        ("I didn't sleep on Friday", MON, date(2024, 3, 8)),
    ],
)
def test_weekdays(text: str, said_on: date, expected: date) -> None:
    assert resolve_event_date(text, said_on) == expected


@pytest.mark.parametrize(
    "text",
    [
        "On Tuesdays I swim",
        "I go to yoga on Tuesdays",  # a habit, not a day
        "Monday is the worst",  # a bare weekday names no particular day
    ],
)
def test_weekdays_that_name_no_day(text: str) -> None:
    assert resolve_event_date(text, MON) is None


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("last week", date(2024, 3, 4)),
        ("next week", date(2024, 3, 18)),
        ("last month", date(2024, 2, 11)),
        ("next month", date(2024, 4, 11)),
        ("last year", date(2023, 3, 11)),
        ("next year", date(2025, 3, 11)),
    ],
)
def test_relative_units(text: str, expected: date) -> None:
    assert resolve_event_date(text, MON) == expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("12 March", date(2024, 3, 12)),
        ("the 12th of March", date(2024, 3, 12)),
        ("March 12", date(2024, 3, 12)),
        ("March 12th", date(2024, 3, 12)),
        ("march the 12th", date(2024, 3, 12)),
        ("12 Mar", date(2024, 3, 12)),
        ("Dec. 25", date(2023, 12, 25)),
        ("Sept 3", date(2024, 9, 3)),  # 176 days ahead is nearer than 190 days back
        ("12 March 2023", date(2023, 3, 12)),
        ("March 12, 2023", date(2023, 3, 12)),
        ("on 2023-03-12 we moved", date(2023, 3, 12)),
        ("5 May", date(2024, 5, 5)),
        ("May 5th", date(2024, 5, 5)),
        ("I may go", None),  # the verb
        ("May I come?", None),
        ("maybe in May", None),  # a month with no day is no day
        ("31 February", None),  # invalid: ignored
        ("2024-02-30", None),
        ("31 February, no, 2 March", date(2024, 3, 2)),  # an invalid date does not block a later one
        ("12/03/2024", None),  # slash dates are ambiguous (UK vs US order): not read
    ],
)
def test_absolute_dates(text: str, expected: date | None) -> None:
    assert resolve_event_date(text, MON) == expected


@pytest.mark.parametrize(
    ("text", "said_on", "expected"),
    [
        ("3 January", date(2024, 12, 28), date(2025, 1, 3)),  # across New Year, forwards
        ("28 December", date(2025, 1, 2), date(2024, 12, 28)),  # and backwards
        ("29 Feb", date(2025, 1, 10), date(2024, 2, 29)),  # the only valid year in reach
    ],
)
def test_year_inference(text: str, said_on: date, expected: date) -> None:
    assert resolve_event_date(text, said_on) == expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("Yesterday I booked a table for next Friday", date(2024, 3, 10)),
        ("Next Friday, not yesterday", date(2024, 3, 15)),
        ("I met him 3 days ago, on 12 March", date(2024, 3, 8)),
        ("On 1 March, or was it last week?", date(2024, 3, 1)),
        ("I love pizza", None),
        ("", None),
    ],
)
def test_first_expression_wins(text: str, expected: date | None) -> None:
    assert resolve_event_date(text, MON) == expected


# --- questions, asked on Monday 2024-10-07 unless said otherwise ---


@pytest.mark.parametrize(
    ("question", "start", "end"),
    [
        ("What did I do in May?", date(2024, 5, 1), date(2024, 5, 31)),
        ("What did I do in December?", date(2023, 12, 1), date(2023, 12, 31)),  # not yet this year
        ("What happened in October?", date(2024, 10, 1), date(2024, 10, 31)),  # started on or before today
        ("What happened in May 2023?", date(2023, 5, 1), date(2023, 5, 31)),
        ("What happened in May of 2022?", date(2022, 5, 1), date(2022, 5, 31)),
        ("Where was I during March?", date(2024, 3, 1), date(2024, 3, 31)),
        ("What did I do in Feb?", date(2024, 2, 1), date(2024, 2, 29)),
        ("What did I do in 2023?", date(2023, 1, 1), date(2023, 12, 31)),
        ("What did I do last week?", date(2024, 9, 30), date(2024, 10, 6)),  # the 7 days ending yesterday
        ("What's on this week?", date(2024, 10, 7), date(2024, 10, 13)),  # Monday..Sunday
        ("What's on next week?", date(2024, 10, 8), date(2024, 10, 14)),
        ("What did I do last month?", date(2024, 9, 1), date(2024, 9, 30)),
        ("What happened this month?", date(2024, 10, 1), date(2024, 10, 31)),
        ("Plans next month?", date(2024, 11, 1), date(2024, 11, 30)),
        ("What did I do last year?", date(2023, 1, 1), date(2023, 12, 31)),
        ("What did I do this year?", date(2024, 1, 1), date(2024, 12, 31)),
        ("What did I eat yesterday?", date(2024, 10, 6), date(2024, 10, 6)),
        ("What am I doing today?", date(2024, 10, 7), date(2024, 10, 7)),
        ("What did I do the day before yesterday?", date(2024, 10, 5), date(2024, 10, 5)),
        ("What did I do 3 days ago?", date(2024, 10, 3), date(2024, 10, 5)),  # ±1 day around the 4th
        ("Who did I see two weeks ago?", date(2024, 9, 20), date(2024, 9, 26)),  # ±3 days around the 23rd
        ("What did I buy a month ago?", date(2024, 9, 1), date(2024, 9, 30)),  # that whole month
        ("Where was I two years ago?", date(2022, 1, 1), date(2022, 12, 31)),  # that whole year
        ("What did I do last Tuesday?", date(2024, 10, 1), date(2024, 10, 1)),  # Tuesday
        ("What did I do on Saturday?", date(2024, 10, 5), date(2024, 10, 5)),  # past tense: Saturday before
        ("What am I doing on Saturday?", date(2024, 10, 12), date(2024, 10, 12)),  # Saturday after
        ("What happened on 12 March?", date(2024, 3, 12), date(2024, 3, 12)),  # past: not March 2025
        ("What's happening on 12 November?", date(2024, 11, 12), date(2024, 11, 12)),
        ("What did I do yesterday and last week?", date(2024, 10, 6), date(2024, 10, 6)),  # first wins
        ("Last week, not yesterday: what did I do?", date(2024, 9, 30), date(2024, 10, 6)),
    ],
)
def test_question_periods(question: str, start: date, end: date) -> None:
    assert question_cue(question, ASKED) == TimeCue(start, end, asks_when=False)


@pytest.mark.parametrize(
    ("question", "today", "start", "end"),
    [
        ("What did we do in the summer?", ASKED, date(2024, 6, 1), date(2024, 8, 31)),
        ("What did we do in summer?", date(2024, 7, 15), date(2024, 6, 1), date(2024, 8, 31)),  # current
        ("Where did we go in the spring?", ASKED, date(2024, 3, 1), date(2024, 5, 31)),
        ("What did we do in the autumn?", ASKED, date(2024, 9, 1), date(2024, 11, 30)),
        ("What did we do in the fall?", ASKED, date(2024, 9, 1), date(2024, 11, 30)),
        ("What did we do in the winter?", ASKED, date(2023, 12, 1), date(2024, 2, 29)),  # spans New Year
        ("What did we do over the winter?", date(2025, 1, 10), date(2024, 12, 1), date(2025, 2, 28)),
        ("What did we do last summer?", ASKED, date(2024, 6, 1), date(2024, 8, 31)),
        ("What did we do last summer?", date(2024, 7, 15), date(2023, 6, 1), date(2023, 8, 31)),  # in it now
        ("Any plans this winter?", ASKED, date(2024, 12, 1), date(2025, 2, 28)),
        ("What did we do this summer?", ASKED, date(2024, 6, 1), date(2024, 8, 31)),
        ("What did we do in the summer of 2022?", ASKED, date(2022, 6, 1), date(2022, 8, 31)),
    ],
)
def test_question_seasons(question: str, today: date, start: date, end: date) -> None:
    assert question_cue(question, today) == TimeCue(start, end, asks_when=False)


@pytest.mark.parametrize(
    "question",
    [
        "When did Dad get the boiler fixed?",
        "when was the wedding",
        "When's her birthday?",
        "How long ago did we move?",
        "What date is the party?",
        "What day did we arrive?",
        "Which year was that?",
        "What month did we meet?",
    ],
)
def test_asks_when_without_a_period(question: str) -> None:
    assert question_cue(question, ASKED) == TimeCue(None, None, asks_when=True)


def test_asks_when_with_a_period() -> None:
    assert question_cue("When did I go to the dentist last month?", ASKED) == TimeCue(
        date(2024, 9, 1), date(2024, 9, 30), asks_when=True
    )


@pytest.mark.parametrize(
    "question",
    [
        "What's the weather?",
        "What did I do when I was in Paris?",  # "when I", not "when did"
        "What did I leave in April's flat?",  # a person's name, not the month
        "May I ask you something?",
        "Do I go swimming on Tuesdays?",
        "",
    ],
)
def test_no_time_aspect(question: str) -> None:
    assert question_cue(question, ASKED) is None


def test_time_cue_is_frozen() -> None:
    cue = TimeCue(None, None, asks_when=True)
    with pytest.raises(dataclasses.FrozenInstanceError):
        cue.asks_when = False  # type: ignore[misc]
