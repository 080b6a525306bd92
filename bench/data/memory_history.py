"""A deterministic long multi-session chat history of one person, "Maya Ortiz", with an episodic-memory answer key.

Four one-to-one WhatsApp chats (Android "Export chat" text) with her sister Lena, her best friend Noor, her
colleague Jonas and her Dad, 2024-01-08 to 2024-09-30: dozens of sessions a chat, mostly small talk, with
facts planted as needles in the haystack. The facts come from templates (`bench.data._memory_pools`) whose
values are drawn from word pools with the seed, and every question's gold answer and evidence is taken from
what was planted, never written per question. Five kinds of question, 30 of each, asked "after" the history:

- ``single``: one message states it ("My gym locker is number 47"). Some facts change over time (Lena's job,
  Noor's puppy's name): the question asks for the current value, the evidence is the newest message and the
  older one is listed in ``superseded``.
- ``two``: message A says who someone is ("my neighbour is called Tomasz"), a later message B says something
  about them by name only ("Tomasz is moving to Gdansk"); the question names the role, so it needs both.
- ``when``: an event dated relative to the message's own day ("last Tuesday", "two weeks ago", "next
  Friday") or absolutely ("on 12 March"); the answer is the resolved date, as "12 March 2024 (2024-03-12)".
  A few planned dates move ("the wedding is now on ..."): the newest date wins, the first is superseded.
- ``open``: a storyline told over several sessions ("What happened with Noor's flat hunt?"); the answer is
  the key phrases of its messages joined with "; ", each quoted verbatim from its message.
- ``unanswerable``: plausible questions about people and places that occur nowhere; no answer, no evidence.

Date phrases are chosen so that both common readings agree: "on Tuesday" is this week's, already past;
"this Tuesday" this week's, still ahead; "last Tuesday" the previous week's (said on a Tuesday or earlier in
the week, so this week's has not happened yet); "next Tuesday" the following week's (said on a Tuesday or
later in the week, so this week's has gone).

Message ids are ``<chat slug>:<index>``: the slug is the contact's name in lower case, the index the
message's position among the message lines of that chat's export (0-based; the encryption notice is not a
message), which is also the position of its `ImportedMessage` among those the WhatsApp importer yields.

    python -m bench.data.memory_history --out /tmp/memory_history            # seed 20
    python -m bench.data.memory_history --out /tmp/mh --seed 7

The same seed gives byte-identical files. `filler_history` makes one very long small-talk chat for timing
import and indexing at scale (100,000 messages in about a second).
"""

from __future__ import annotations

import argparse
import json
import random
import re
from collections import Counter, defaultdict
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import date, datetime, time, timedelta
from pathlib import Path
from typing import Literal

from bench.data._memory_pools import (
    ABSENT,
    ACKS,
    B_OPENERS,
    CHANGES,
    CONTACTS,
    FILL,
    FILLER,
    GREETINGS,
    MOVED,
    NEVER,
    POOLS,
    PREDICATES,
    ROLES,
    SIGNOFFS,
    SINGLES,
    STORIES,
    WHENS,
    Line,
)

SEED = 20
USER = "Maya Ortiz"
START, END = date(2024, 1, 8), date(2024, 9, 30)
ASKED_AT = datetime(2024, 10, 7, 9, 0)  # questions are asked a week after the last message, a minute apart
PER_KIND = 30
SESSION_RATE = {"Lena": 0.30, "Noor": 0.32, "Jonas": 0.40, "Dad": 0.26}  # chance of a session on a given day
EMOJI_RATE = {"Lena": 0.15, "Noor": 0.10, "Jonas": 0.02, "Dad": 0.0}
NOTICE = (
    "Messages and calls are end-to-end encrypted. No one outside of this chat, not even WhatsApp, "
    "can read or listen to them."
)
WEEKDAYS = ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday")
Kind = Literal["single", "two", "when", "open", "unanswerable"]
KINDS: tuple[Kind, ...] = ("single", "two", "when", "open", "unanswerable")

_SLOT = re.compile(r"\{(\w+)\}")
_KEY = re.compile(r"«([^»]+)»")


@dataclass(frozen=True, slots=True)
class Message:
    """One chat message as exported (``at`` to the minute, as the export writes it)."""

    id: str
    chat: str  # the contact's name
    index: int
    at: datetime
    sender: str
    text: str
    is_user: bool


@dataclass(frozen=True, slots=True)
class Question:
    """A question Maya asks her avatar after the history ends, with its gold answer and evidence ids."""

    id: str
    kind: Kind
    question: str
    answer: str  # "" for unanswerable
    evidence: tuple[str, ...]
    superseded: tuple[str, ...]
    asked_at: datetime

    def as_json(self) -> dict[str, object]:
        """The question as written to ``questions.json``."""
        return {
            "id": self.id,
            "kind": self.kind,
            "question": self.question,
            "answer": self.answer,
            "evidence": list(self.evidence),
            "superseded": list(self.superseded),
            "asked_at": self.asked_at.isoformat(),
        }


@dataclass(frozen=True, slots=True)
class Fact:
    """What the generator planted for one question: enough to check the answer key against the messages.

    Attributes:
        question: the id of the question it backs.
        value: the answer's core: a value, an ISO date, the summary, or "" (unanswerable).
        link: ``two`` only: the name both evidence messages carry.
        phrase: ``when`` only: the date phrase as written in the newest evidence message.
        on: ``when`` only: the date the phrase resolves to from that message's day.
        keys: ``open`` only: the key phrase quoted from each evidence message, in evidence order.
        absent: ``unanswerable`` only: the name, place or animal that no message mentions.
    """

    question: str
    value: str
    link: str = ""
    phrase: str = ""
    on: date | None = None
    keys: tuple[str, ...] = ()
    absent: str = ""


@dataclass(frozen=True, slots=True)
class History:
    """The generated history: chats keyed by contact name (in `CONTACTS` order), questions and their facts."""

    user: str
    chats: dict[str, list[Message]]
    questions: list[Question]
    facts: list[Fact]  # facts[i] backs questions[i]

    def message(self, message_id: str) -> Message:
        """The message with id ``<slug>:<index>``."""
        chat, _, index = message_id.partition(":")
        return next(m for c, ms in self.chats.items() if slug(c) == chat for m in ms[int(index) : int(index) + 1])


def slug(contact: str) -> str:
    """The chat's part of a message id."""
    return contact.lower()


def human(day: date) -> str:
    """ "12 March 2024"."""
    return f"{day.day} {day:%B %Y}"


def day_month(day: date) -> str:
    """The "12 March" of an absolute date in a message: the nearest such day to the message's day."""
    return f"{day.day} {day:%B}"


def when_answer(day: date) -> str:
    """The gold answer of a ``when`` question: "12 March 2024 (2024-03-12)"."""
    return f"{human(day)} ({day.isoformat()})"


def date_phrase(day: date, future: bool, rng: random.Random, *, absolute: bool = False) -> tuple[str, date]:
    """A phrase that dates an event as seen from a message sent on ``day``, and the date it means.

    Args:
        day: the message's day.
        future: whether the event is still ahead.
        rng: the generator's random source.
        absolute: only "on 12 March" (3 to 40 days away: the nearest 12 March, whatever the year).
    """
    w, t = day.weekday(), rng.randrange(7)
    n = rng.randint(3, 40) if future else -rng.randint(2, 40)
    options: list[tuple[str, int]] = [(f"on {day_month(day + timedelta(n))}", n)] * 3
    if not absolute:
        if future:
            options += [("tomorrow", 1), ("the day after tomorrow", 2), ("in two weeks", 14)]
            options += [(f"this {WEEKDAYS[t]}", t - w)] * 2 if t > w else [(f"next {WEEKDAYS[t]}", 7 - w + t)] * 3
        else:
            options += [("yesterday", -1), ("the day before yesterday", -2), ("three days ago", -3)]
            options += [("a week ago", -7), ("ten days ago", -10), ("two weeks ago", -14)]
            options += [(f"on {WEEKDAYS[t]}", t - w)] * 2 if t < w else [(f"last {WEEKDAYS[t]}", t - w - 7)] * 3
    phrase, offset = rng.choice(options)
    return phrase, day + timedelta(offset)


# --- the voices ---


def casual(text: str, rng: random.Random) -> str:
    """Maya's way of writing: lower case, no apostrophes, no closing full stop, the odd "lol" or emoji."""
    text = text.lower().replace("'", "").rstrip(".")
    if rng.random() < 0.08 and text.count(" ") >= 3:
        text = rng.choice(("omg ", "ok so ", "lol ")) + text
    if rng.random() < 0.12:
        text += rng.choice((" haha", " lol", " x", " 😅", " 🙃", " ✨"))
    return text


def theirs(text: str, contact: str, rng: random.Random) -> str:
    """A contact's way of writing: a capital to start, sometimes an emoji."""
    text = text[:1].upper() + text[1:]
    if rng.random() < EMOJI_RATE[contact]:
        text += " " + rng.choice(("😂", "😊", "❤️", "🙈", "👍", "😅"))
    return text


def _fill(template: str, values: Mapping[str, str]) -> str:
    """``template`` with every ``{slot}`` replaced by ``values[slot]``."""
    return _SLOT.sub(lambda m: values[m[1]], template)


def _parse_exchange(spec: str) -> tuple[tuple[bool, tuple[str, ...]], ...]:
    return tuple((turn[0] == "M", tuple(turn[2:].split("|"))) for turn in spec.split(" / "))


_EXCHANGES = {c: tuple(_parse_exchange(s) for s in FILLER["*"] + FILLER[c]) for c in CONTACTS}
_GREETINGS = tuple(_parse_exchange(s) for s in GREETINGS)
_SIGNOFFS = tuple(_parse_exchange(s)[0] for s in SIGNOFFS)


def _say(turn: tuple[bool, tuple[str, ...]], contact: str, rng: random.Random) -> tuple[bool, str]:
    me, alternatives = turn
    text = rng.choice(alternatives)
    if "{" in text:
        text = _SLOT.sub(lambda m: rng.choice(FILL[m[1]]), text)
    return me, casual(text, rng) if me else theirs(text, contact, rng)


def _small_talk(contact: str, rng: random.Random) -> list[tuple[bool, str]]:
    return [_say(turn, contact, rng) for turn in rng.choice(_EXCHANGES[contact])]


# --- planting facts ---


@dataclass(slots=True)
class _Pending:
    """A question before its tickets (planted messages) have ids."""

    kind: Kind
    question: str
    answer: str
    evidence: list[int]
    superseded: list[int] = field(default_factory=list)
    fact: Fact = field(default_factory=lambda: Fact("", ""))


class _Planter:
    """Chooses the sessions facts are said in and keeps the planted lines until the chats are written."""

    def __init__(self, rng: random.Random) -> None:
        self.rng = rng
        self.sessions = {c: self._session_days(c) for c in CONTACTS}
        self.planted: dict[tuple[str, date], list[tuple[int, bool, str]]] = defaultdict(list)
        self.pending: list[_Pending] = []
        self._used: set[str] = set()
        self._tickets = 0

    def _session_days(self, contact: str) -> list[date]:
        days = [START, END]
        for n in range(1, (END - START).days):
            day = START + timedelta(n)
            weekend = contact == "Jonas" and day.weekday() >= 5  # a colleague: weekends are quiet
            if self.rng.random() < SESSION_RATE[contact] * (0.2 if weekend else 1.0):
                days.append(day)
        return sorted(days)

    def draw(self, choices: tuple[str, ...]) -> str:
        """A value no other fact has (values are unique across the whole history)."""
        value = self.rng.choice([c for c in choices if c not in self._used])
        self._used.add(value)
        return value

    def target(self, lo: float, hi: float) -> date:
        """A day at a random fraction between ``lo`` and ``hi`` of the history."""
        return START + timedelta(int(self.rng.uniform(lo, hi) * (END - START).days))

    def place(self, chat: str, target: date, after: date | None = None, gap: int = 1) -> date:
        """A session day of ``chat`` on or after ``target`` and at least ``gap`` days after ``after``.

        Of the first three such sessions, the one with the fewest planted lines, so facts stay spread out.
        Raises RuntimeError when ``chat`` has no session after ``after`` at all.
        """
        lo = max(target, after + timedelta(gap)) if after else target
        days = [d for d in self.sessions[chat] if d >= lo][:3]
        if not days:
            days = [d for d in self.sessions[chat] if after is None or d > after][-1:]
        if not days:
            raise RuntimeError(f"no session of {chat} after {after}")
        return min(days, key=lambda d: len(self.planted[(chat, d)]))

    def plant(self, line: Line, day: date, **values: str) -> int:
        """Say ``line`` (its slots filled from ``values``) in the session of ``line.chat`` on ``day``."""
        text = _fill(line.text, values)
        text = casual(text, self.rng) if line.me else theirs(text, line.chat, self.rng)
        self._tickets += 1
        self.planted[(line.chat, day)].append((self._tickets, line.me, text))
        return self._tickets

    def singles(self) -> None:
        for s in SINGLES:
            value = self.draw(POOLS[s.pool])
            ticket = self.plant(s.line, self.place(s.line.chat, self.target(0.0, 0.97)), v=value)
            self.pending.append(_Pending("single", self.rng.choice(s.questions), value, [ticket]))
        for c in CHANGES:
            old, new = self.draw(POOLS[c.pool]), self.draw(POOLS[c.pool])
            first = self.place(c.first.chat, self.target(0.03, 0.4))
            then = self.place(c.then.chat, self.target(0.55, 0.95), after=first, gap=14)
            gone = self.plant(c.first, first, v=old)
            ticket = self.plant(c.then, then, v=new, old=old)
            self.pending.append(_Pending("single", self.rng.choice(c.questions), new, [ticket], [gone]))

    def twos(self) -> None:
        predicates = list(PREDICATES)
        self.rng.shuffle(predicates)
        for i, role in enumerate(ROLES):
            name = self.draw(POOLS["name"])
            said = self.place(role.line.chat, self.target(0.0, 0.45))
            who = self.plant(role.line, said, name=name)
            for p in (predicates[2 * i % len(predicates)], predicates[(2 * i + 1) % len(predicates)]):
                value = self.draw(POOLS[p.pool])
                chat = self.rng.choice(CONTACTS) if role.line.me else role.line.chat  # Maya tells anyone
                opener = self.rng.choice(B_OPENERS)
                text = p.text if not opener or p.text.startswith("{") else p.text[:1].lower() + p.text[1:]
                line = Line(chat, role.line.me, opener + text)
                day = self.place(chat, self.target(0.5, 0.97), after=said, gap=7)
                ticket = self.plant(line, day, name=name, v=value)
                question = self.rng.choice(p.questions).format(role=role.role)
                self.pending.append(_Pending("two", question, value, [who, ticket], fact=Fact("", value, link=name)))

    def whens(self) -> None:
        for w in WHENS:
            day = self.place(w.line.chat, self.target(0.02, 0.82))  # future dates stay before ASKED_AT
            phrase, on = date_phrase(day, w.future, self.rng)
            ticket = self.plant(w.line, day, when=phrase)
            fact = Fact("", on.isoformat(), phrase=phrase, on=on)
            self.pending.append(_Pending("when", self.rng.choice(w.questions), when_answer(on), [ticket], fact=fact))
        for m in MOVED:
            first = self.place(m.first.chat, self.target(0.05, 0.5))
            planned = first + timedelta(self.rng.randint(25, 60))
            then = self.place(m.then.chat, first + timedelta(self.rng.randint(5, 15)), after=first, gap=3)
            if then >= planned:
                raise RuntimeError(f"{m.then.text!r}: no session between {first} and {planned}")
            gone = self.plant(m.first, first, when=f"on {day_month(planned)}")
            phrase, on = "", planned
            while on == planned:
                if m.relative:
                    phrase, on = date_phrase(then, True, self.rng)
                else:
                    on = planned + timedelta(self.rng.randint(14, 60))  # plans slip later, not earlier
                    phrase = f"on {day_month(on)}"
            ticket = self.plant(m.then, then, when=phrase)
            fact = Fact("", on.isoformat(), phrase=phrase, on=on)
            question = self.rng.choice(m.questions)
            self.pending.append(_Pending("when", question, when_answer(on), [ticket], [gone], fact=fact))

    def stories(self) -> None:
        told = [(story, owner) for story in STORIES for owner in story.owners]
        self.rng.shuffle(told)
        for story, owner in told[:PER_KIND]:
            me = owner == "me"
            chat = self.rng.choice(CONTACTS) if me else owner
            wanted = {m[1] for text in story.steps + story.questions for m in _SLOT.finditer(text)} - {"poss"}
            slots = {name: self.draw(POOLS[name]) for name in sorted(wanted)}
            day, tickets, keys = self.place(chat, self.target(0.02, 0.5)), [], []
            branch = self.rng.randrange(2)  # variant i of every step with variants: one consistent outcome
            for i, step in enumerate(story.steps):
                if i:
                    day = self.place(chat, day + timedelta(self.rng.randint(5, 20)), after=day, gap=3)
                variants = step.split(" || ")
                text = _fill(variants[min(branch, len(variants) - 1)], slots)
                key = _KEY.search(text)
                if key is None:
                    raise ValueError(f"story step without a «key»: {step!r}")
                keys.append(key[1])
                tickets.append(self.plant(Line(chat, me, text.replace("«", "").replace("»", "")), day))
            question = _fill(self.rng.choice(story.questions), {**slots, "poss": "my" if me else f"{owner}'s"})
            summary = "; ".join(keys)
            self.pending.append(_Pending("open", question, summary, tickets, fact=Fact("", summary, keys=tuple(keys))))

    def absent(self) -> None:
        for i in range(PER_KIND):
            template = ABSENT[i % len(ABSENT)]
            pool = next(p for p in NEVER if "{" + p + "}" in template)
            subject = self.draw(NEVER[pool])
            question = template.format(c=self.rng.choice(CONTACTS), **{pool: subject})
            self.pending.append(_Pending("unanswerable", question, "", [], fact=Fact("", "", absent=subject)))


# --- writing the chats ---


def _session(planter: _Planter, contact: str, day: date) -> list[tuple[bool, str, int]]:
    """One session's turns (Maya?, text, ticket or 0): small talk with the planted lines between exchanges."""
    rng = planter.rng
    blocks: list[list[tuple[bool, str, int]]] = []
    greeted = rng.random() < 0.6
    if greeted:
        blocks.append([(me, text, 0) for me, text in (_say(t, contact, rng) for t in rng.choice(_GREETINGS))])
    for _ in range(rng.randint(2, 4)):
        blocks.append([(me, text, 0) for me, text in _small_talk(contact, rng)])
    for ticket, me, text in planter.planted[(contact, day)]:
        block = [(me, text, ticket)]
        if rng.random() < 0.7:
            reply = rng.choice(ACKS[not me])
            block.append((not me, casual(reply, rng) if not me else theirs(reply, contact, rng), 0))
        blocks.insert(rng.randint(int(greeted), len(blocks)), block)
    if rng.random() < 0.4:
        me, text = _say(rng.choice(_SIGNOFFS), contact, rng)
        blocks.append([(me, text, 0)])
    return [turn for block in blocks for turn in [(False, "", 0), *block]][1:]


def _chat(planter: _Planter, contact: str) -> tuple[list[Message], dict[int, str]]:
    """The chat's messages in time order and the ids its planted tickets got."""
    rng = planter.rng
    messages: list[Message] = []
    ids: dict[int, str] = {}
    for day in planter.sessions[contact]:
        at = datetime.combine(day, time(rng.randint(8, 18), rng.randrange(60)))
        last = datetime.combine(day, time(23, 59))  # a session never runs into the next day: date phrases hold
        before: bool | None = None
        for me, text, ticket in _session(planter, contact, day):
            if not text:  # a pause between exchanges
                at += timedelta(minutes=rng.randint(2, 40))
                continue
            at = min(last, at + timedelta(seconds=rng.randint(5, 60) if me == before else rng.randint(20, 300)))
            before = me
            index = len(messages)
            message_id = f"{slug(contact)}:{index}"
            messages.append(
                Message(message_id, contact, index, at.replace(second=0), USER if me else contact, text, me)
            )
            if ticket:
                ids[ticket] = message_id
    return messages, ids


def generate(seed: int = SEED) -> History:
    """The whole history and answer key for ``seed``; the same seed gives the same history."""
    planter = _Planter(random.Random(seed))
    planter.singles()
    planter.twos()
    planter.whens()
    planter.stories()
    planter.absent()
    chats: dict[str, list[Message]] = {}
    ids: dict[int, str] = {}
    for contact in CONTACTS:
        chats[contact], chat_ids = _chat(planter, contact)
        ids.update(chat_ids)
    questions: list[Question] = []
    facts: list[Fact] = []
    numbers: Counter[str] = Counter()
    for kind in KINDS:  # grouped by kind, ids "single-01" ...
        for p in (p for p in planter.pending if p.kind == kind):
            numbers[kind] += 1
            qid = f"{kind}-{numbers[kind]:02d}"
            at = ASKED_AT + timedelta(minutes=len(questions))
            evidence, superseded = tuple(ids[t] for t in p.evidence), tuple(ids[t] for t in p.superseded)
            questions.append(Question(qid, kind, p.question, p.answer, evidence, superseded, at))
            facts.append(_with_id(p.fact, qid, p.answer))
    return History(USER, chats, questions, facts)


def _with_id(fact: Fact, qid: str, answer: str) -> Fact:
    value = fact.value or answer
    return Fact(qid, value, fact.link, fact.phrase, fact.on, fact.keys, fact.absent)


def _line(at: datetime, sender: str, text: str) -> str:
    return f"{at:%d/%m/%Y, %H:%M} - {sender}: {text}"


def render_whatsapp(history: History, contact: str) -> str:
    """The chat with ``contact`` as an Android export: the encryption notice, then one line a message."""
    messages = history.chats[contact]
    notice = f"{messages[0].at - timedelta(minutes=1):%d/%m/%Y, %H:%M} - {NOTICE}"
    return "\n".join([notice, *(_line(m.at, m.sender, m.text) for m in messages)]) + "\n"


def chat_file(contact: str) -> str:
    """The export's file name, as the phone names it."""
    return f"WhatsApp Chat with {contact}.txt"


def write(history: History, out: Path) -> dict[str, int]:
    """Write the exports and ``questions.json`` into ``out`` (created); returns {file name: messages}.

    ``questions.json`` holds ``{"user", "chats": {slug: file name}, "questions": [Question.as_json()...]}``.
    """
    out.mkdir(parents=True, exist_ok=True)
    counts: dict[str, int] = {}
    for contact, messages in history.chats.items():
        (out / chat_file(contact)).write_text(render_whatsapp(history, contact), encoding="utf-8")
        counts[chat_file(contact)] = len(messages)
    key = {
        "user": history.user,
        "chats": {slug(c): chat_file(c) for c in history.chats},
        "questions": [q.as_json() for q in history.questions],
    }
    (out / "questions.json").write_text(json.dumps(key, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
    return counts


def filler_history(n_messages: int, seed: int = SEED, contact: str = "Noor") -> str:
    """One Android export of exactly ``n_messages`` small-talk messages between Maya and ``contact``.

    Spread over five years from 2019-01-07 in sessions of a few exchanges (several a day when ``n_messages``
    is large); no facts. For timing import and indexing: 100,000 messages take about a second.
    """
    rng = random.Random(seed)
    span = timedelta(days=5 * 365)
    start = datetime(2019, 1, 7, 8, 0)
    lines = [f"{start - timedelta(minutes=1):%d/%m/%Y, %H:%M} - {NOTICE}"]
    at = start
    while len(lines) <= n_messages:
        # The session starts as far into the five years as its messages are into the n: the span holds for any n.
        due = start + span * ((len(lines) - 1) / n_messages) + timedelta(minutes=rng.randrange(600))
        at = max(at + timedelta(minutes=5), due)
        for _ in range(rng.randint(2, 4)):
            for me, text in _small_talk(contact, rng):
                at += timedelta(seconds=rng.randint(20, 300))
                lines.append(_line(at, USER if me else contact, text))
            at += timedelta(minutes=rng.randint(2, 30))
    return "\n".join(lines[: n_messages + 1]) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--seed", type=int, default=SEED)
    args = parser.parse_args()
    history = generate(args.seed)
    counts = write(history, args.out)
    for contact, messages in history.chats.items():
        mine = sum(m.is_user for m in messages)
        days = len({m.at.date() for m in messages})
        print(f"{contact:6} {len(messages):5} messages  Maya {mine:4}  {contact} {len(messages) - mine:4}  {days} days")
    print(f"total  {sum(counts.values()):5} messages")
    kinds = Counter(q.kind for q in history.questions)
    print("questions  " + "  ".join(f"{kind} {kinds[kind]}" for kind in KINDS))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
