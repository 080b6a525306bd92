"""Time expressions in chat messages and in questions about them, pure (stdlib only).

`resolve_event_date` finds the calendar day a message refers to ("we went hiking on Saturday", "3 days ago",
"12 March"), anchored on the day the message was said; `question_cue` finds the period a question is about
("what did I do in May?") and whether it asks for a date ("when did…?").

Why hand-written rather than dateparser: ``search_dates`` is slow per message, and an import indexes ~100k
messages; it also finds false positives such as the modal verb "may" ("I may go"). Here only a bounded set of
English expressions is recognised, each anchored on the message's own day (never on the wall clock), so an
old imported chat dates its own "yesterday" correctly. Anything else — slash dates (12/03 is ambiguous between
UK and US order), bare weekdays ("Saturday was fun"), clock times, other languages — names no day.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import date, timedelta
from typing import TypeVar

_T = TypeVar("_T")
# A rule: a pattern and what a match of it means, given the anchor day and the whole (normalised) text;
# None when the match turns out not to name anything (31 February), so a later match may still count.
_Rule = tuple[re.Pattern[str], Callable[[re.Match[str], date, str], _T | None]]

_WEEKDAYS = ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday")
_WEEKDAY = "|".join(_WEEKDAYS)
# Full names and 3-letter abbreviations (plus "sept"); every date rule needs a day number or a preposition
# next to it, which is what keeps "may" the verb and "mar" the verb out.
_MONTH = (
    r"jan(?:uary)?|feb(?:ruary)?|mar(?:ch)?|apr(?:il)?|may|june?|july?|aug(?:ust)?|sep(?:t(?:ember)?)?|"
    r"oct(?:ober)?|nov(?:ember)?|dec(?:ember)?"
)
_MONTHS = ("jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec")
_YEAR = r"(?:19|20)\d{2}"  # only plausible years, so "in 1000 ways" is no year
_NUMBER_WORDS = {
    "a": 1, "an": 1, "one": 1, "two": 2, "three": 3, "four": 4, "five": 5, "six": 6,
    "seven": 7, "eight": 8, "nine": 9, "ten": 10, "eleven": 11, "twelve": 12,
}  # fmt: skip
_NUMBER = r"\d{1,4}|a\s+couple(?:\s+of)?|couple\s+of|a\s+few|" + "|".join(_NUMBER_WORDS)
_DAY_WORDS = {
    "the day before yesterday": -2, "day before yesterday": -2, "yesterday": -1, "last night": -1,
    "today": 0, "tonight": 0, "this morning": 0, "this afternoon": 0, "this evening": 0,
    "tomorrow": 1, "the day after tomorrow": 2, "day after tomorrow": 2,
}  # fmt: skip
_SEASON_START = {"spring": 3, "summer": 6, "autumn": 9, "fall": 9, "winter": 12}  # meteorological, northern

# Tense of the whole message decides which "on Saturday" is meant. A future marker wins because a message
# that mentions both ("had a chat with her, she'll come on Saturday") is almost always making a plan.
_FUTURE = re.compile(r"\b(?:will|won't|wont|shall|gonna|\w+'ll)\b", re.IGNORECASE)
_PAST_WORDS = frozenset(
    {"was", "were", "went", "had", "did", "came", "got", "saw", "met", "wasn", "weren", "didn", "hadn"}
)
# "-ed" words that are adjectives or nouns, common beside plans ("I'm excited to see her on Saturday").
_NOT_PAST = frozenset({
    "shed", "sled", "fred", "hundred", "sacred", "naked", "wicked", "kindred", "beloved", "excited", "interested",
    "supposed", "scheduled", "tired", "bored", "worried", "scared", "pleased", "thrilled", "engaged", "married",
    "stressed", "closed",
})  # fmt: skip
_NEGATION = re.compile(r"\b(?:not|never|\w+n't)\b", re.IGNORECASE)


def _rx(pattern: str) -> re.Pattern[str]:
    return re.compile(pattern, re.IGNORECASE)


def _number(text: str) -> int:
    words = text.lower().split()
    if words[0].isdigit():
        return int(words[0])
    if "couple" in words:
        return 2
    return 3 if "few" in words else _NUMBER_WORDS[words[0]]


def _month(name: str) -> int:
    return _MONTHS.index(name[:3].lower()) + 1


def _add_months(day: date, months: int) -> date:
    """``day`` moved by ``months`` calendar months, its day clamped to the target month's length
    (31 March - 1 month → 29 February in a leap year)."""
    index = day.year * 12 + day.month - 1 + months
    year, month = divmod(index, 12)
    return date(year, month + 1, min(day.day, _month_end(year, month + 1).day))


def _month_end(year: int, month: int) -> date:
    return date(year + month // 12, month % 12 + 1, 1) - timedelta(days=1)


def _is_past(text: str) -> bool:
    """Whether the message reads as past tense: a past marker word and no future marker."""
    if _FUTURE.search(text):
        return False
    for word in re.findall(r"[a-z]+", text.lower()):
        if word in _PAST_WORDS:
            return True
        # Length ≥ 4 and not "-eed" keep out "bed", "red", "need", "feed", "speed"…
        if word.endswith("ed") and len(word) >= 4 and not word.endswith("eed") and word not in _NOT_PAST:
            return True
    return False


def _weekday(m: re.Match[str], said_on: date, text: str) -> date | None:
    wd = _WEEKDAYS.index(m["wd"].lower())
    rel = " ".join(m["rel"].lower().split()) if m["rel"] else "just gone"
    past = rel in ("last", "this past", "just gone") or (rel in ("on", "this") and _is_past(text))
    if past:  # strictly before: "last Tuesday" said on a Tuesday is a week earlier
        return said_on - timedelta(days=(said_on.weekday() - wd) % 7 or 7)
    return said_on + timedelta(days=(wd - said_on.weekday()) % 7 or 7)


def _ago(m: re.Match[str], said_on: date, text: str) -> date | None:
    n, unit = _number(m["n"]), m["unit"].lower()
    if unit in ("day", "week"):
        return said_on - timedelta(days=n * (7 if unit == "week" else 1))
    return _add_months(said_on, -n * (12 if unit == "year" else 1))


def _in_future(m: re.Match[str], said_on: date, text: str) -> date | None:
    # "haven't seen her in two weeks" is a duration, not a date: a negated message gets no future day.
    if _NEGATION.search(text):
        return None
    return said_on + timedelta(days=_number(m["n"]) * (7 if m["unit"].lower() == "week" else 1))


def _relative_unit(m: re.Match[str], said_on: date, text: str) -> date | None:
    sign, unit = (-1 if m["rel"].lower() == "last" else 1), m["unit"].lower()
    if unit == "week":
        return said_on + timedelta(days=7 * sign)
    return _add_months(said_on, sign * (12 if unit == "year" else 1))


def _absolute(m: re.Match[str], said_on: date, text: str) -> date | None:
    month, day = _month(m["m"]) if not m["m"].isdigit() else int(m["m"]), int(m["d"])
    if m["y"]:
        return date(int(m["y"]), month, day)  # ValueError (31 February) is caught by `_first`
    # No year: the valid one nearest the day it was said ("3 January" said on 28 December is next year's).
    candidates = []
    for year in (said_on.year - 1, said_on.year, said_on.year + 1):
        try:
            candidates.append(date(year, month, day))
        except ValueError:
            continue
    return min(candidates, key=lambda d: abs((d - said_on).days), default=None)


_EVENT_RULES: tuple[_Rule[date], ...] = (
    (_rx(r"\b(?:(?:the\s+)?day\s+(?:before\s+yesterday|after\s+tomorrow)|yesterday|last\s+night|today|tonight|"
         r"tomorrow|this\s+(?:morning|afternoon|evening))\b"),
     lambda m, said_on, _: said_on + timedelta(days=_DAY_WORDS[" ".join(m[0].lower().split())])),
    (_rx(rf"\b(?P<n>{_NUMBER})\s+(?P<unit>day|week|month|year)s?\s+ago\b"), _ago),
    (_rx(rf"\bin\s+(?P<n>{_NUMBER})\s+(?P<unit>day|week)s?\b"), _in_future),
    # Singular weekday only: "on Tuesdays" is a habit, not a day (the \b fails before the plural "s").
    (_rx(rf"\b(?P<rel>last|next|this\s+past|this\s+coming|coming|this|on)\s+(?P<wd>{_WEEKDAY})\b"), _weekday),
    (_rx(rf"\b(?P<rel>)(?P<wd>{_WEEKDAY})\s+just\s+gone\b"), _weekday),
    (_rx(r"\b(?P<rel>last|next)\s+(?P<unit>week|month|year)\b"), _relative_unit),
    (_rx(r"\b(?P<y>\d{4})-(?P<m>\d{1,2})-(?P<d>\d{1,2})\b"), _absolute),
    (_rx(rf"\b(?P<d>\d{{1,2}})(?:st|nd|rd|th)?\s+(?:of\s+)?(?P<m>{_MONTH})\b\.?(?:,?\s+(?P<y>{_YEAR})\b)?"),
     _absolute),
    (_rx(rf"\b(?P<m>{_MONTH})\b\.?\s+(?:the\s+)?(?P<d>\d{{1,2}})(?:st|nd|rd|th)?\b(?:,?\s+(?P<y>{_YEAR})\b)?"),
     _absolute),
)  # fmt: skip


def _absolute_asked(m: re.Match[str], today: date, text: str) -> date | None:
    """`_absolute` for a question: a yearless day asked about in the past tense ("what happened on 12 March?",
    asked in October) is the last one, not the nearest one, which may be ahead."""
    day = _absolute(m, today, text)
    if day is not None and day > today and not m["y"] and _is_past(text):
        # The nearest to a day a year back is the previous occurrence (a lone 29 February may have none).
        return _absolute(m, today - timedelta(days=366), text) or day
    return day


_QUESTION_DAY_RULES: tuple[_Rule[date], ...] = tuple(
    (pattern, _absolute_asked if meaning is _absolute else meaning) for pattern, meaning in _EVENT_RULES
)


def _first(text: str, rules: Sequence[_Rule[_T]], anchor: date) -> tuple[int, int, _T] | None:
    """The earliest match in ``text`` that means something, as (start, -length, value): the first expression in
    the text wins, and at the same start the longer one ("the day before yesterday" over "yesterday")."""
    best: tuple[int, int, _T] | None = None
    for pattern, meaning in rules:
        for m in pattern.finditer(text):
            if best is not None and (m.start(), -len(m[0])) >= best[:2]:
                break  # finditer goes left to right: nothing later in this rule can beat `best`
            try:
                value = meaning(m, anchor, text)
            except (ValueError, OverflowError):  # 31 February, or "9999 years ago"
                value = None
            if value is not None:
                best = (m.start(), -len(m[0]), value)
                break
    return best


def _normalise(text: str) -> str:
    return text.replace("\u2019", "'")  # curly apostrophes, as phones type them


def resolve_event_date(text: str, said_on: date) -> date | None:
    """The calendar day ``text`` refers to, resolved against ``said_on`` (the day it was said), or None when
    it names no day. Case-insensitive; when several expressions occur, the first one in the text wins.

    Recognised: today/tonight/this morning…, (the day before) yesterday, last night, (the day after) tomorrow;
    "N days/weeks/months/years ago" (N in digits or words: a, one…twelve, a couple of = 2, a few = 3; months
    and years by calendar, day clamped); "in N days/weeks" (not in a negated message); last/next/this/on
    <weekday> ("last" strictly before ``said_on``, "next" strictly after, "on"/"this" before when the message
    is past tense, else after; "on Tuesdays" is no date); "<weekday> just gone"; last/next week/month/year;
    "12 March", "12th of March", "March 12th", with an optional year (else the nearest such day to
    ``said_on``), ISO "2024-03-12". Invalid dates are ignored."""
    found = _first(_normalise(text), _EVENT_RULES, said_on)
    return found[2] if found else None


@dataclass(frozen=True, slots=True)
class TimeCue:
    """The time aspect of a question: the inclusive day range it is about (``start`` and ``end`` both None when
    it names no period), and whether it asks for a date ("when did…?", "what day…", "how long ago…")."""

    start: date | None
    end: date | None
    asks_when: bool


_Period = tuple[date, date]
_ASKS_WHEN = _rx(
    r"\bwhen(?:'s|\s+(?:did|was|is|were|will|would|do|does|are|am|has|have|had)\b)|\bhow\s+long\s+ago\b|"
    r"\bwhat\s+(?:date|day|month|year|time\s+of\s+year)\b|\bwhich\s+(?:date|day|week|month|year)\b"
)


def _month_period(m: re.Match[str], today: date, text: str) -> _Period | None:
    month = _month(m["m"])
    # No year: the most recent such month that started on or before today ("in May", asked in October).
    year = int(m["y"]) if m["y"] else today.year - (date(today.year, month, 1) > today)
    return date(year, month, 1), _month_end(year, month)


def _season(m: re.Match[str], today: date, text: str) -> _Period | None:
    first = _SEASON_START[m["s"].lower()]

    def span(year: int) -> _Period:  # winter starting December `year` ends in February `year + 1`
        start = date(year, first, 1)
        return start, _add_months(start, 3) - timedelta(days=1)

    if m["y"]:
        return span(int(m["y"]))
    latest = today.year - (date(today.year, first, 1) > today)  # the most recent one started by today
    current = span(latest)[1] >= today  # …and today is still in it
    rel = (m["rel"] or "").lower()
    if rel == "last":
        return span(latest - 1 if current else latest)
    if rel == "this":
        return span(latest if current else today.year)
    return span(latest)


def _calendar_unit(m: re.Match[str], today: date, text: str) -> _Period | None:
    rel, unit = m["rel"].lower(), m["unit"].lower()
    if unit == "week":  # rolling 7 days either side; "this week" is the calendar week, Monday to Sunday
        if rel == "this":
            monday = today - timedelta(days=today.weekday())
            return monday, monday + timedelta(days=6)
        return (today - timedelta(days=7), today - timedelta(days=1)) if rel == "last" else (
            today + timedelta(days=1), today + timedelta(days=7))
    shift = {"last": -1, "this": 0, "next": 1}[rel]
    if unit == "year":
        return date(today.year + shift, 1, 1), date(today.year + shift, 12, 31)
    first = _add_months(today.replace(day=1), shift)
    return first, _month_end(first.year, first.month)


def _ago_period(m: re.Match[str], today: date, text: str) -> _Period | None:
    n, unit = _number(m["n"]), m["unit"].lower()
    if unit in ("day", "week"):  # a fuzzy window: people round "3 weeks ago"
        centre, slack = today - timedelta(days=n * (7 if unit == "week" else 1)), (3 if unit == "week" else 1)
        return centre - timedelta(days=slack), centre + timedelta(days=slack)
    if unit == "month":
        first = _add_months(today.replace(day=1), -n)
        return first, _month_end(first.year, first.month)
    return date(today.year - n, 1, 1), date(today.year - n, 12, 31)


_PERIOD_RULES: tuple[_Rule[_Period], ...] = (
    # "in April's flat" is a person, not a month: no possessive after the name.
    (_rx(rf"\b(?:in|during)\s+(?:the\s+month\s+of\s+)?(?P<m>{_MONTH})\b(?!'s)(?:,?\s+(?:of\s+)?(?P<y>{_YEAR})\b)?"),
     _month_period),
    (_rx(rf"\b(?:in|during)\s+(?P<y>{_YEAR})\b"),
     lambda m, today, _: (date(int(m["y"]), 1, 1), date(int(m["y"]), 12, 31))),
    (_rx(rf"\b(?:(?P<rel>last|this)\s+|(?:in|during|over)\s+(?:the\s+)?)(?P<s>spring|summer|autumn|fall|winter)\b"
         rf"(?:\s+(?:of\s+)?(?P<y>{_YEAR})\b)?"), _season),
    (_rx(r"\b(?P<rel>last|this|next)\s+(?P<unit>week|month|year)\b"), _calendar_unit),
    (_rx(rf"\b(?P<n>{_NUMBER})\s+(?P<unit>day|week|month|year)s?\s+ago\b"), _ago_period),
)  # fmt: skip


def question_cue(question: str, today: date) -> TimeCue | None:
    """The time aspect of ``question`` asked on ``today``, or None when it has none (no period, not asking when).

    Periods: "in/during May [2024]" (no year: the most recent May started by ``today``), "in 2023", last week
    (the 7 days ending yesterday), this week (Monday–Sunday), next week (the 7 days from tomorrow), last/this/next
    month and year (calendar), "in the summer" / "last winter" / "this spring" (meteorological, northern
    hemisphere; winter is December–February), "N days/weeks ago" (±1 / ±3 days), "N months/years ago" (that
    calendar month/year); and any single day `resolve_event_date` finds ("yesterday", "last Tuesday",
    "on 12 March"; a yearless date in a past-tense question is the last such day, not the nearest). The first
    expression in the question wins; a period beats a day at the same place."""
    text = _normalise(question)
    period = _first(text, _PERIOD_RULES, today)
    day = _first(text, _QUESTION_DAY_RULES, today)
    span: _Period | None = None
    if period is not None and (day is None or period[:2] <= day[:2]):
        span = period[2]
    elif day is not None:
        span = (day[2], day[2])
    asks_when = _ASKS_WHEN.search(text) is not None
    if span is None and not asks_when:
        return None
    return TimeCue(span[0] if span else None, span[1] if span else None, asks_when)
