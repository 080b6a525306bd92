"""When the avatar reaches out: the user's preferences and the pure rules that turn them, the clock and the
user's data into due occurrences. No I/O and no clock reads here: every function takes ``now``.

An occurrence is one thing that should be said once: the greeting of one local date, a birthday in one
year, the check-in after one silence. Its ``key`` is unique per user and kind, which is what makes it fire at
most once (`voice_server.avatar.proactive.scheduler`).

Timing, in the user's timezone:

- Day-based kinds (greeting, "on this day", dated milestones) are due at the morning time of the local date.
  The ones the avatar decides on by itself (greeting, "on this day", celebrations found in memories) only
  for an account that existed an hour before it: someone who signs up at 07:59 is not greeted at 08:00
  (and tests that create accounts never race a morning). What the user set (their birthday, a milestone)
  counts from the moment they set it. A greeting is good for `GREETING_VALID` after the moment it could
  first be delivered; the others until the local day ends.
- A check-in is due ``checkin_after_days / reach_out`` days after the last contact (the bond's reach-out
  factor: a close bond or a low mood checks in sooner), once per silence.
- Streak and conversation-count milestones are due when reached.
- Quiet hours: nothing is delivered inside them; a due occurrence waits for their end (`quiet_end_after`).
  ``quiet_start == quiet_end`` means no quiet hours.

Local times that do not exist (a DST gap) resolve the way `zoneinfo` does with ``fold=0``: 02:30 on a
spring-forward night is 03:30.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from typing import Any, Final, Literal, get_args
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

Kind = Literal["greeting", "checkin", "on_this_day", "milestone"]
KINDS: Final[tuple[Kind, ...]] = get_args(Kind)
MilestoneKind = Literal["birthday", "anniversary"]
MILESTONE_KINDS: Final[tuple[MilestoneKind, ...]] = get_args(MilestoneKind)

GREETING_VALID: Final = timedelta(hours=4)
MIN_ACCOUNT_AGE: Final = timedelta(hours=1)
STREAKS: Final = (7, 30, 100, 365)
CONVERSATION_COUNTS: Final = (100, 500, 1000)
MIN_MESSAGE_CHARS: Final = 20  # an imported "ok" is not worth remembering on its anniversary
_CELEBRATION = re.compile(r"\b(?:birthday|anniversary|b-?day)\b", re.IGNORECASE)


class SettingsError(ValueError):
    """An invalid setting; the message names it and is safe to show."""


def zone_of(name: str) -> ZoneInfo:
    """The IANA timezone ``name``.

    Raises:
        SettingsError: Not a known IANA zone (``Europe/Lisbon``, ``UTC``, ...).
    """
    if not name or len(name) > 64 or name.startswith(("/", ".")) or ".." in name:
        raise SettingsError(f"timezone: {name[:64]!r} is not an IANA timezone like Europe/Lisbon")
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise SettingsError(f"timezone: {name[:64]!r} is not an IANA timezone like Europe/Lisbon") from None


@dataclass(frozen=True, slots=True)
class Preferences:
    """A user's proactive settings (defaults = a user who never changed them)."""

    timezone: str = "UTC"
    morning_time: time = time(8, 0)
    quiet_start: time = time(22, 0)
    quiet_end: time = time(7, 0)
    checkin_after_days: int = 3
    disabled_kinds: frozenset[Kind] = frozenset()
    birthday: date | None = None

    @property
    def zone(self) -> ZoneInfo:
        return zone_of(self.timezone)

    def allows(self, kind: Kind) -> bool:
        return kind not in self.disabled_kinds

    def local(self, at: datetime) -> datetime:
        """``at`` on the user's wall clock."""
        return at.astimezone(self.zone)

    def moment(self, day: date, at: time) -> datetime:
        """The UTC instant of local ``day`` ``at`` (see the module doc for DST gaps)."""
        return datetime.combine(day, at, tzinfo=self.zone).astimezone(UTC)

    def morning(self, day: date) -> datetime:
        return self.moment(day, self.morning_time)

    def in_quiet_hours(self, at: datetime) -> bool:
        """Whether ``at`` falls inside the quiet hours."""
        start, end = self.quiet_start, self.quiet_end
        if start == end:
            return False
        t = self.local(at).time().replace(tzinfo=None)
        return start <= t < end if start < end else (t >= start or t < end)

    def quiet_end_after(self, at: datetime) -> datetime:
        """``at`` itself outside the quiet hours, else the instant they end."""
        if not self.in_quiet_hours(at):
            return at
        local = self.local(at)
        day = local.date()
        if self.quiet_start > self.quiet_end and local.time().replace(tzinfo=None) >= self.quiet_start:
            day += timedelta(days=1)  # quiet from the evening: they end tomorrow morning
        return max(self.moment(day, self.quiet_end), at)


@dataclass(frozen=True, slots=True)
class Occurrence:
    """One thing to say once.

    Attributes:
        kind: Which opt-out covers it.
        key: Unique per user and kind (``greeting:2025-03-01``, ``birthday:2025``, ...).
        due_at: Not delivered before (quiet hours may push it later).
        expires_at: Not delivered after (``None``: no end).
        grounding: What it is about — ids, dates and numbers only (JSON-able); the message is built from it.
    """

    kind: Kind
    key: str
    due_at: datetime
    expires_at: datetime | None
    grounding: dict[str, Any] = field(default_factory=dict)


def annual(d: date, year: int) -> date:
    """``d``'s month and day in ``year`` (29 February is kept on the 28th in other years)."""
    try:
        return d.replace(year=year)
    except ValueError:
        return date(year, 2, 28)


def next_midnight(prefs: Preferences, day: date) -> datetime:
    return prefs.moment(day + timedelta(days=1), time(0, 0))


def _day_window(
    prefs: Preferences, created_at: datetime | None, now: datetime
) -> tuple[date, datetime, datetime] | None:
    """(local date, due, end of day) when today's day-based kinds are due, else ``None``; ``created_at``
    (the account's) applies `MIN_ACCOUNT_AGE`, ``None`` does not."""
    today = prefs.local(now).date()
    due = prefs.morning(today)
    if now < due or (created_at is not None and created_at > due - MIN_ACCOUNT_AGE):
        return None
    return today, due, next_midnight(prefs, today)


def day_due(prefs: Preferences, created_at: datetime | None, now: datetime) -> bool:
    """Whether today's morning has come (for an account created at ``created_at``: see `MIN_ACCOUNT_AGE`)."""
    return _day_window(prefs, created_at, now) is not None


def month_days(today: date) -> tuple[list[int], list[int]]:
    """The (months, days) a yearly date must have to fall on ``today``: 29 February counts on the 28th in
    years without one."""
    days = {(today.month, today.day)}
    if (today.month, today.day) == (2, 28) and annual(date(2000, 2, 29), today.year) == today:
        days.add((2, 29))
    pairs = sorted(days)
    return [m for m, _ in pairs], [d for _, d in pairs]


def greeting(prefs: Preferences, created_at: datetime, now: datetime) -> Occurrence | None:
    """Today's morning greeting, once its time has come."""
    window = _day_window(prefs, created_at, now)
    if window is None:
        return None
    today, due, _ = window
    expires = prefs.quiet_end_after(due) + GREETING_VALID
    return Occurrence("greeting", f"greeting:{today.isoformat()}", due, expires, {"date": today.isoformat()})


def reach_out_delay(prefs: Preferences, reach_out: float) -> timedelta:
    """Silence before a check-in: ``checkin_after_days`` scaled by the bond's reach-out factor (0.5–1.5)."""
    factor = min(max(reach_out, 0.5), 1.5)
    return timedelta(days=prefs.checkin_after_days) / factor


def checkin(prefs: Preferences, last_contact: datetime | None, reach_out: float, now: datetime) -> Occurrence | None:
    """The check-in after the silence since ``last_contact`` (one per silence; none for someone who never
    talked)."""
    if last_contact is None:
        return None
    due = last_contact + reach_out_delay(prefs, reach_out)
    if now < due:
        return None
    stamp = last_contact.astimezone(UTC).strftime("%Y%m%dT%H%M%S")
    grounding = {"last_contact": last_contact.astimezone(UTC).isoformat(),
                 "days": max(1, (now - last_contact).days)}
    return Occurrence("checkin", f"checkin:{stamp}", due, None, grounding)


def streak(prefs: Preferences, streak_days: int, last_day: date | None, now: datetime) -> Occurrence | None:
    """The highest streak threshold reached by a streak that is still alive (talked today or yesterday)."""
    today = prefs.local(now).date()
    if last_day is None or last_day < today - timedelta(days=1):
        return None
    reached = [n for n in STREAKS if streak_days >= n]
    if not reached:
        return None
    n = reached[-1]
    since = last_day - timedelta(days=streak_days - 1)
    return Occurrence("milestone", f"streak:{n}:{since.isoformat()}", now, None,
                      {"streak_days": n, "since": since.isoformat()})


def conversation_count(count: int, now: datetime) -> Occurrence | None:
    """The highest conversation-count threshold reached."""
    reached = [n for n in CONVERSATION_COUNTS if count >= n]
    if not reached:
        return None
    return Occurrence("milestone", f"conversations:{reached[-1]}", now, None, {"conversations": reached[-1]})


@dataclass(frozen=True, slots=True)
class Milestone:
    """A user-set birthday or anniversary."""

    id: uuid.UUID
    date: date
    kind: MilestoneKind


def dated_milestones(prefs: Preferences, milestones: Sequence[Milestone], now: datetime) -> list[Occurrence]:
    """Today's birthday (the setting) and today's user-set milestones.

    A user-set date counts from the year after it (an anniversary's own day is not its anniversary; a date
    in the future has no occurrence yet). The birthday setting counts every year, its own year excepted.
    """
    window = _day_window(prefs, None, now)
    if window is None:
        return []
    today, due, end = window
    found = []
    if prefs.birthday is not None and annual(prefs.birthday, today.year) == today and prefs.birthday < today:
        found.append(Occurrence("milestone", f"birthday:{today.year}", due, end,
                                {"birthday": True, "date": prefs.birthday.isoformat()}))
    for m in milestones:
        if m.date.year < today.year and annual(m.date, today.year) == today:
            found.append(Occurrence("milestone", f"milestone:{m.id}:{today.year}", due, end,
                                    {"milestone_id": str(m.id), "date": m.date.isoformat(),
                                     "years": today.year - m.date.year, "milestone_kind": m.kind}))
    return found


@dataclass(frozen=True, slots=True)
class DatedMemory:
    """A live memory with an event date (its text opened, for choosing; never stored in a job)."""

    id: uuid.UUID
    kind: str
    text: str
    event_date: date
    importance: float


@dataclass(frozen=True, slots=True)
class PastMessage:
    """One of the user's own imported messages."""

    id: uuid.UUID
    text: str
    at: datetime


def is_celebration(text: str) -> bool:
    """Whether a memory is about a birthday or an anniversary."""
    return bool(_CELEBRATION.search(text))


def day_scan(
    prefs: Preferences,
    created_at: datetime,
    memories: Sequence[DatedMemory],
    messages: Sequence[PastMessage],
    now: datetime,
) -> list[Occurrence]:
    """Today's data-driven occurrences: celebrations found in memories and the "on this day" memory.

    ``memories`` are the user's live memories whose event date falls on today's month and day (any year);
    ``messages`` the user's own imported messages written on this month and day in earlier years. The
    on-this-day occurrence is always returned once the day is due — with empty grounding when nothing fits,
    so the day is marked as looked at and not scanned again.
    """
    window = _day_window(prefs, created_at, now)
    if window is None:
        return []
    today, due, end = window
    found = []
    celebrations = [m for m in memories if m.kind in ("event", "person") and is_celebration(m.text)]
    for m in celebrations:
        found.append(Occurrence("milestone", f"memory:{m.id}:{today.year}", due, end,
                                {"memory_ids": [str(m.id)], "date": m.event_date.isoformat()}))
    chosen = pick_on_this_day(today, memories, messages, skip={m.id for m in celebrations})
    found.append(Occurrence("on_this_day", f"on_this_day:{today.isoformat()}", due, end, chosen))
    return found


def pick_on_this_day(
    today: date,
    memories: Sequence[DatedMemory],
    messages: Sequence[PastMessage],
    skip: set[uuid.UUID] | None = None,
) -> dict[str, Any]:
    """The grounding of today's "on this day" message, or ``{}`` when nothing fits.

    A memory dated this month and day in an earlier year wins (the most important; among equals the most
    recent year, the one most likely still meaningful); celebrations are left to the milestone kind.
    Otherwise the user's own imported message from this day in an earlier year with the most to say
    (at least `MIN_MESSAGE_CHARS`; among equals the oldest).
    """
    skip = skip or set()
    same_day = [
        m for m in memories
        if m.id not in skip and m.event_date.year < today.year and annual(m.event_date, today.year) == today
    ]
    if same_day:
        best = max(same_day, key=lambda m: (m.importance, m.event_date))
        return {"memory_ids": [str(best.id)], "date": best.event_date.isoformat(),
                "years": today.year - best.event_date.year}
    said = [
        m for m in messages
        if len(m.text.strip()) >= MIN_MESSAGE_CHARS and m.at.year < today.year
        and annual(m.at.date(), today.year) == today
    ]
    if said:
        best_message = max(said, key=lambda m: (min(len(m.text), 280), -m.at.timestamp()))
        day = best_message.at.date()
        return {"message_ids": [str(best_message.id)], "date": day.isoformat(), "years": today.year - day.year}
    return {}
