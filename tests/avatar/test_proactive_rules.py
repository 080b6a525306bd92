"""The proactive rules (when each kind is due, quiet hours, which memory "on this day" picks) and the message
guard (an LLM wording that invents a number or date is rejected for the template), as pure functions."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import UTC, date, datetime, time, timedelta
from typing import Any

import pytest

from voice_server.avatar.proactive import messages, rules
from voice_server.avatar.proactive.messages import Draft, compose, invents_facts
from voice_server.avatar.proactive.rules import DatedMemory, Milestone, PastMessage, Preferences

TOKYO = Preferences(timezone="Asia/Tokyo")  # UTC+9, no DST
OLD_ACCOUNT = datetime(2020, 1, 1, tzinfo=UTC)


def tokyo(day: date, hour: int, minute: int = 0) -> datetime:
    return datetime.combine(day, time(hour, minute), tzinfo=TOKYO.zone).astimezone(UTC)


def test_greeting_is_due_at_local_morning_not_before() -> None:
    """08:00 in Tokyo is 23:00 UTC the day before: nothing at 07:59 local, the greeting at 08:00, keyed by the
    local date, good for four hours after."""
    day = date(2025, 6, 10)
    assert rules.greeting(TOKYO, OLD_ACCOUNT, tokyo(day, 7, 59)) is None
    due = rules.greeting(TOKYO, OLD_ACCOUNT, tokyo(day, 8, 0))
    assert due is not None and due.key == "greeting:2025-06-10" and due.due_at == datetime(2025, 6, 9, 23, tzinfo=UTC)
    assert due.expires_at == due.due_at + rules.GREETING_VALID
    assert rules.greeting(TOKYO, OLD_ACCOUNT, tokyo(day, 13, 0)) == due  # the same occurrence all day


def test_a_new_account_is_not_greeted_the_morning_it_signs_up_but_the_next() -> None:
    """An account younger than an hour at the morning time waits for the next morning."""
    day = date(2025, 6, 10)
    created = tokyo(day, 7, 30)
    assert rules.greeting(TOKYO, created, tokyo(day, 9)) is None
    nxt = rules.greeting(TOKYO, created, tokyo(day + timedelta(days=1), 8))
    assert nxt is not None and nxt.key == "greeting:2025-06-11"


def test_quiet_hours_across_midnight_and_a_greeting_inside_them() -> None:
    """22:00–07:00 is quiet at 23:00 and 06:59, not at 07:00; a greeting at 06:00 waits until 07:00 and
    stays valid four hours after that; equal start and end mean no quiet hours."""
    prefs = Preferences(timezone="Asia/Tokyo", morning_time=time(6, 0))
    day = date(2025, 6, 10)
    assert prefs.in_quiet_hours(tokyo(day, 23)) and prefs.in_quiet_hours(tokyo(day, 6, 59))
    assert not prefs.in_quiet_hours(tokyo(day, 7)) and not prefs.in_quiet_hours(tokyo(day, 21, 59))
    assert prefs.quiet_end_after(tokyo(day, 23)) == tokyo(day + timedelta(days=1), 7)
    assert prefs.quiet_end_after(tokyo(day, 3)) == tokyo(day, 7)
    assert prefs.quiet_end_after(tokyo(day, 12)) == tokyo(day, 12)
    g = rules.greeting(prefs, OLD_ACCOUNT, tokyo(day, 6))
    assert g is not None and g.expires_at == tokyo(day, 11)
    daytime = Preferences(quiet_start=time(13), quiet_end=time(14))
    assert daytime.in_quiet_hours(datetime(2025, 1, 1, 13, 30, tzinfo=UTC))
    assert not daytime.in_quiet_hours(datetime(2025, 1, 1, 14, tzinfo=UTC))
    assert not Preferences(quiet_start=time(9), quiet_end=time(9)).in_quiet_hours(datetime(2025, 1, 1, 9, tzinfo=UTC))


def test_dst_gap_resolves_forward() -> None:
    """A 02:30 morning on the night clocks jump 02:00→03:00 (Lisbon, 30 March 2025) is 01:30 UTC."""
    prefs = Preferences(timezone="Europe/Lisbon", morning_time=time(2, 30))
    assert prefs.morning(date(2025, 3, 30)) == datetime(2025, 3, 30, 1, 30, tzinfo=UTC)


def test_checkin_after_silence_scaled_by_the_reach_out_factor() -> None:
    """Three days after the last contact at factor 1; sooner for a warm bond; one occurrence per silence;
    never for someone who never talked."""
    last = datetime(2025, 6, 1, 10, tzinfo=UTC)
    prefs = Preferences(checkin_after_days=3)
    assert rules.checkin(prefs, None, 1.0, last + timedelta(days=30)) is None
    assert rules.checkin(prefs, last, 1.0, last + timedelta(days=3) - timedelta(seconds=1)) is None
    due = rules.checkin(prefs, last, 1.0, last + timedelta(days=3))
    assert due is not None and due.key == "checkin:20250601T100000" and due.grounding["days"] == 3
    assert rules.checkin(prefs, last, 1.5, last + timedelta(days=2)) is not None
    later = rules.checkin(prefs, last, 1.0, last + timedelta(days=9))
    assert later is not None and later.key == due.key  # the same silence: the same occurrence
    assert rules.reach_out_delay(prefs, 99.0) == timedelta(days=2)  # the factor is clamped to 0.5..1.5


def memory(text: str, d: date, importance: float = 0.5, kind: str = "event") -> DatedMemory:
    return DatedMemory(uuid.uuid4(), kind, text, d, importance)


def test_on_this_day_picks_the_earlier_years_memory_of_todays_date() -> None:
    """Of memories dated today's month/day, one from this year and celebrations are passed over; the most
    important earlier one wins, with its date and years from the data."""
    today = date(2025, 6, 10)
    this_year = memory("I start my new job today.", date(2025, 6, 10), 0.9)
    other_day = memory("We went to the beach.", date(2022, 6, 11), 0.9)
    birthday = memory("It's Ana's birthday today.", date(2021, 6, 10), 0.9)
    minor = memory("I had a long walk in the rain.", date(2020, 6, 10), 0.4)
    right = memory("I passed my driving test!", date(2023, 6, 10), 0.8)
    chosen = rules.pick_on_this_day(today, [this_year, other_day, birthday, minor, right], [],
                                    skip={birthday.id})
    assert chosen == {"memory_ids": [str(right.id)], "date": "2023-06-10", "years": 2}


def test_on_this_day_falls_back_to_the_users_own_imported_message() -> None:
    """Without a memory, the longest substantial message written on this day in an earlier year; "ok" never."""
    today = date(2025, 6, 10)
    msgs = [
        PastMessage(uuid.uuid4(), "ok", datetime(2019, 6, 10, 9, tzinfo=UTC)),
        PastMessage(uuid.uuid4(), "Finally moved into the flat by the river, boxes everywhere.",
                    datetime(2021, 6, 10, 20, tzinfo=UTC)),
        PastMessage(uuid.uuid4(), "Long day at work, heading home now.", datetime(2022, 6, 10, 18, tzinfo=UTC)),
        PastMessage(uuid.uuid4(), "A message from another day, much longer than the others here.",
                    datetime(2021, 6, 11, 8, tzinfo=UTC)),
    ]
    chosen = rules.pick_on_this_day(today, [], msgs)
    assert chosen == {"message_ids": [str(msgs[1].id)], "date": "2021-06-10", "years": 4}
    assert rules.pick_on_this_day(today, [], msgs[:1]) == {}


def test_day_scan_marks_the_day_even_when_nothing_fits_and_finds_celebrations() -> None:
    """The scan returns an empty on-this-day occurrence (the day is looked at once) and a memory birthday."""
    day = date(2025, 6, 10)
    now = tokyo(day, 9)
    assert [o.grounding for o in rules.day_scan(TOKYO, OLD_ACCOUNT, [], [], now)] == [{}]
    bday = memory("My sister Ana's birthday is on June 10.", date(2025, 6, 10), 0.8)
    found = rules.day_scan(TOKYO, OLD_ACCOUNT, [bday], [], now)
    assert [o.key for o in found] == [f"memory:{bday.id}:2025", "on_this_day:2025-06-10"]
    assert found[1].grounding == {}  # the celebration is not also shared as a memory of this day
    assert rules.day_scan(TOKYO, OLD_ACCOUNT, [bday], [], tokyo(day, 7)) == []  # not before the morning


def test_birthday_and_user_milestones_fire_on_their_day_each_year() -> None:
    """The birthday setting and an anniversary count from the year after their date; 29 February is kept on
    the 28th in other years; milestones the user set need no account age."""
    prefs = Preferences(birthday=date(1990, 4, 12))
    at = datetime(2025, 4, 12, 9, tzinfo=UTC)
    wedding = Milestone(uuid.uuid4(), date(2015, 4, 12), "anniversary")
    future = Milestone(uuid.uuid4(), date(2025, 4, 12), "anniversary")
    found = rules.dated_milestones(prefs, [wedding, future], at)
    assert [o.key for o in found] == ["birthday:2025", f"milestone:{wedding.id}:2025"]
    assert found[1].grounding["years"] == 10
    assert rules.dated_milestones(prefs, [wedding], at - timedelta(days=1)) == []
    leap = Preferences(birthday=date(2000, 2, 29))
    assert [o.key for o in rules.dated_milestones(leap, [], datetime(2025, 2, 28, 9, tzinfo=UTC))] == ["birthday:2025"]
    assert rules.month_days(date(2025, 2, 28)) == ([2, 2], [28, 29])
    assert rules.month_days(date(2024, 2, 28)) == ([2], [28])


def test_streaks_and_conversation_counts() -> None:
    """The highest threshold reached, keyed by the streak's first day; a broken streak celebrates nothing."""
    now = datetime(2025, 6, 10, 12, tzinfo=UTC)
    s = rules.streak(Preferences(), 8, date(2025, 6, 10), now)
    assert s is not None and s.key == "streak:7:2025-06-03" and s.grounding["streak_days"] == 7
    assert rules.streak(Preferences(), 8, date(2025, 6, 8), now) is None
    assert rules.streak(Preferences(), 6, date(2025, 6, 10), now) is None
    c = rules.conversation_count(104, now)
    assert c is not None and c.key == "conversations:100" and rules.conversation_count(99, now) is None


def test_zone_of_rejects_what_is_not_an_iana_zone() -> None:
    """Europe/Lisbon and UTC resolve; a made-up name or a path does not."""
    assert str(rules.zone_of("Europe/Lisbon")) == "Europe/Lisbon" and rules.zone_of("UTC")
    for bad in ("Mars/Olympus", "../../etc/passwd", "", "x" * 100, "/etc/localtime"):
        with pytest.raises(rules.SettingsError):
            rules.zone_of(bad)


# --------------------------------------------------------------------------------------------- messages


def otd_draft() -> Draft:
    return Draft("on_this_day", "Ana", date(2025, 6, 10), {"memory_ids": ["x"], "date": "2023-06-10", "years": 2},
                 ("I passed my driving test after 3 tries!",))


def test_the_template_states_only_dates_from_the_data() -> None:
    """Code writes the date and years; the memory is quoted."""
    text = messages.template(otd_draft())
    assert text.startswith("On this day 2 years ago (10 June 2023), you told me: “I passed my driving test")
    assert not invents_facts(text, " ".join(["10 June 2023 2 years", *otd_draft().quotes]))


@pytest.mark.parametrize(
    ("output", "invented"),
    [
        ("What a proud moment that was!", False),
        ("Three tries, and you made it!", False),  # "3" is in the memory: three is grounded
        ("That was back in 2019, right?", True),  # a year nobody said
        ("Four years flew by!", True),
        ("I remember that sunny Tuesday.", True),  # a weekday nobody said
        ("Back in July you were so happy.", True),
        ("You may remember it fondly.", False),  # "may" the verb is not a month
        ("It took 12 lessons.", True),
    ],
)
def test_the_guard_rejects_numbers_and_dates_not_in_the_grounding(output: str, invented: bool) -> None:
    """Numbers (digits or words), months and weekdays must appear in the grounding; other words are free."""
    draft = otd_draft()
    grounding = " ".join([messages.header(draft), *draft.quotes])
    assert invents_facts(output, grounding) is invented


class ScriptedLlm:
    """Returns fixed text (or raises) — the seam `compose` is tested through; the real model is tested in
    tests/server/test_proactive_scheduler.py."""

    def __init__(self, output: str | Exception) -> None:
        self.output = output
        self.prompts: list[Sequence[Any]] = []

    async def acomplete(self, prompt: Sequence[Any], **options: Any) -> str:
        self.prompts.append(prompt)
        if isinstance(self.output, Exception):
            raise self.output
        return self.output


async def test_compose_uses_grounded_llm_words_after_codes_header_and_the_template_otherwise() -> None:
    """Grounded wording follows the factual header; an invented year, unusable output or a failing LLM
    gives the template; without an LLM the template too."""
    draft = otd_draft()
    text, source = await compose(draft, ScriptedLlm("What a proud moment that was!"))
    assert source == "llm" and text == messages.header(draft) + " What a proud moment that was!"
    for bad in ("That was in 2021, what a day!", "User: hi", "", "x" * 400, RuntimeError("model gone")):
        assert await compose(draft, ScriptedLlm(bad)) == (messages.template(draft), "template")
    assert await compose(draft, None) == (messages.template(draft), "template")
    llm = ScriptedLlm("Have a wonderful day!")
    text, source = await compose(Draft("greeting", "Ana", date(2025, 6, 10)), llm)
    assert (text, source) == ("Have a wonderful day!", "llm")
    assert "Never mention any date" in llm.prompts[0][0]["content"]
