"""The episodic-memory benchmark history (`bench.data.memory_history`): sizes, determinism, the real WhatsApp
importer's reading of it, and an answer key that its evidence messages support on their own."""

from __future__ import annotations

import io
import json
import random
import re
import time
from datetime import date, datetime, timedelta
from pathlib import Path

import pytest

from bench.data import memory_history as mh
from voice_server.avatar.importers import ImportedMessage, Me, Skipped
from voice_server.avatar.importers.whatsapp import parse

WEEKDAYS = ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday")
MONTHS = ("january", "february", "march", "april", "may", "june", "july", "august", "september", "october",
          "november", "december")  # fmt: skip
OFFSETS = {
    "yesterday": -1, "the day before yesterday": -2, "three days ago": -3, "a week ago": -7, "ten days ago": -10,
    "two weeks ago": -14, "tomorrow": 1, "the day after tomorrow": 2, "in two weeks": 14,
}  # fmt: skip
_CAPITALISED = re.compile(r"\b[A-Z][a-z]+")


@pytest.fixture(scope="module")
def history() -> mh.History:
    return mh.generate()


def _norm(text: str) -> str:
    """Case, apostrophes, punctuation and emoji ignored: Maya writes "its clay corner lol" for "It's Clay Corner"."""
    return " ".join(re.sub(r"[^\w\s]", " ", text.casefold().replace("'", "").replace("\u2019", "")).split())


def _has(text: str, phrase: str) -> bool:
    return re.search(rf"\b{re.escape(_norm(phrase))}\b", _norm(text)) is not None


def _resolve(phrase: str, said: date) -> date:
    """The test's own reading of a date phrase, checking that both common readings of a weekday agree."""
    p = phrase.casefold()
    if p in OFFSETS:
        return said + timedelta(OFFSETS[p])
    if m := re.fullmatch(r"on (\d{1,2}) (\w+)", p):
        month, day = MONTHS.index(m[2]) + 1, int(m[1])
        years = [y for y in (said.year - 1, said.year, said.year + 1) if month != 2 or day < 29 or y % 4 == 0]
        # "on 2 December" said in January is last December's
        return min((date(y, month, day) for y in years), key=lambda d: abs(d - said))
    m = re.fullmatch(r"(on|this|last|next) (\w+)", p)
    assert m, phrase
    w, t = said.weekday(), WEEKDAYS.index(m[2])
    monday = said - timedelta(w)
    match m[1]:
        case "on":  # earlier this week
            assert t < w, (phrase, said)
            return monday + timedelta(t)
        case "this":  # later this week
            assert t > w, (phrase, said)
            return monday + timedelta(t)
        case "last":  # this week's has not come yet, so "the last one" and "last week's" are the same day
            assert t >= w, (phrase, said)
            return monday - timedelta(7 - t)
        case _:  # "next": this week's has gone, so "the next one" and "next week's" are the same day
            assert t <= w, (phrase, said)
            return monday + timedelta(7 + t)


def _texts(history: mh.History, ids: tuple[str, ...]) -> list[str]:
    return [history.message(i).text for i in ids]


def _kind(history: mh.History, kind: str) -> list[tuple[mh.Question, mh.Fact]]:
    return [(q, f) for q, f in zip(history.questions, history.facts, strict=True) if q.kind == kind]


def test_same_seed_gives_identical_exports_and_another_seed_differs(history: mh.History) -> None:
    """Generation is a pure function of the seed."""
    again, other = mh.generate(mh.SEED), mh.generate(mh.SEED + 1)
    for contact in history.chats:
        assert mh.render_whatsapp(again, contact) == mh.render_whatsapp(history, contact)
        assert mh.render_whatsapp(other, contact) != mh.render_whatsapp(history, contact)
    assert again.questions == history.questions
    assert [q.answer for q in other.questions] != [q.answer for q in history.questions]


def test_each_chat_is_long_and_spread_over_many_sessions(history: mh.History) -> None:
    """>= 500 messages, >= 20 sessions (gaps over 6 h) over >= 180 days a chat, with ids slug:index in time order."""
    assert list(history.chats) == ["Lena", "Noor", "Jonas", "Dad"]
    for contact, messages in history.chats.items():
        assert len(messages) >= 500
        gaps = [b.at - a.at for a, b in zip(messages, messages[1:], strict=False)]
        assert min(gaps) >= timedelta(0)
        assert 1 + sum(gap > timedelta(hours=6) for gap in gaps) >= 20
        assert messages[-1].at - messages[0].at >= timedelta(days=180)
        assert [m.id for m in messages] == [f"{contact.lower()}:{i}" for i in range(len(messages))]
        assert {m.sender for m in messages} == {mh.USER, contact}
        assert all(m.is_user == (m.sender == mh.USER) and m.text and "\n" not in m.text for m in messages)


def test_every_chat_parses_with_the_real_whatsapp_importer(history: mh.History) -> None:
    """The importer's i-th message is message i (sender, time, text, is_user); only the notice is skipped."""
    for contact, messages in history.chats.items():
        text = mh.render_whatsapp(history, contact)
        assert text.splitlines()[0].endswith(mh.NOTICE)
        records = list(parse(io.BytesIO(text.encode()), me=Me.of(mh.USER), conversation=contact))
        assert records[0] == Skipped(1, "system")
        imported = [r for r in records[1:] if isinstance(r, ImportedMessage)]
        assert len(imported) == len(records) - 1 == len(messages)
        for record, message in zip(imported, messages, strict=True):
            assert (record.sender, record.at, record.text, record.is_user, record.attachment) == (
                message.sender, message.at, message.text, message.is_user, None
            )  # fmt: skip


def test_write_creates_the_exports_and_the_answer_key(history: mh.History, tmp_path: Path) -> None:
    """`write` puts one export a contact and questions.json (the documented fields) in the folder."""
    counts = mh.write(history, tmp_path)
    assert counts == {f"WhatsApp Chat with {c}.txt": len(ms) for c, ms in history.chats.items()}
    for name in counts:
        assert (tmp_path / name).read_text(encoding="utf-8") == mh.render_whatsapp(history, name[19:-4])
    key = json.loads((tmp_path / "questions.json").read_text(encoding="utf-8"))
    assert key["user"] == mh.USER and key["chats"]["dad"] == "WhatsApp Chat with Dad.txt"
    assert len(key["questions"]) == len(history.questions)
    for q in key["questions"]:
        assert set(q) == {"id", "kind", "question", "answer", "evidence", "superseded", "asked_at"}
        assert datetime.fromisoformat(q["asked_at"]) > mh.ASKED_AT - timedelta(minutes=1)


def test_questions_of_each_kind_point_at_real_earlier_messages(history: mh.History) -> None:
    """>= 25 questions a kind, unique ids, evidence that exists, asked after the last message."""
    assert all(len(_kind(history, kind)) >= 25 for kind in mh.KINDS)
    assert len({q.id for q in history.questions}) == len(history.questions)
    last = max(m.at for ms in history.chats.values() for m in ms)
    for q in history.questions:
        assert q.asked_at > last
        assert q.question[0].isupper() and q.question.endswith(("?", "."))
        for message_id in q.evidence + q.superseded:
            assert history.message(message_id).id == message_id
        for gone in q.superseded:  # a superseded statement came before the one that replaced it
            assert history.message(gone).at < history.message(q.evidence[-1]).at
    assert len({q.question for q in history.questions}) == len(history.questions)


def test_single_answers_are_stated_by_their_one_message(history: mh.History) -> None:
    """The answer is in the evidence and not in what it superseded; answers are unique; both speakers state facts."""
    singles = _kind(history, "single")
    for q, _ in singles:
        (text,) = _texts(history, q.evidence)
        assert _has(text, q.answer), (q, text)
        assert not any(_has(old, q.answer) for old in _texts(history, q.superseded))
    assert len({_norm(q.answer) for q, _ in singles}) == len(singles)
    assert sum(bool(q.superseded) for q, _ in singles) >= 5
    assert {history.message(q.evidence[0]).is_user for q, _ in singles} == {True, False}


def test_two_message_answers_need_both_messages(history: mh.History) -> None:
    """Message A names the person (no answer), later message B gives the answer by name only."""
    for q, fact in _kind(history, "two"):
        first, second = (history.message(i) for i in q.evidence)
        assert first.at < second.at
        assert _has(first.text, fact.link) and _has(second.text, fact.link)
        assert _has(second.text, q.answer) and not _has(first.text, q.answer)
        assert not _has(q.question, fact.link), q


def test_when_answers_are_the_dates_their_phrases_resolve_to(history: mh.History) -> None:
    """The gold date is what the evidence's date phrase means on the day it was sent; many phrases are relative."""
    relative = 0
    for q, fact in _kind(history, "when"):
        m = re.fullmatch(r"(\d{1,2} \w+ \d{4}) \((\d{4}-\d{2}-\d{2})\)", q.answer)
        assert m, q.answer
        on = date.fromisoformat(m[2])
        assert datetime.strptime(m[1], "%d %B %Y").date() == on == fact.on
        newest = history.message(q.evidence[-1])
        assert _has(newest.text, fact.phrase), (fact.phrase, newest.text)
        assert _resolve(fact.phrase, newest.at.date()) == on
        relative += not re.fullmatch(r"on \d+ \w+", fact.phrase)
    assert relative >= 10


def test_date_phrases_mean_one_day_under_both_readings() -> None:
    """Every phrase `date_phrase` makes, on any weekday, resolves to the date it records."""
    for n in range(400):
        day = mh.START + timedelta(n % 60)
        phrase, on = mh.date_phrase(day, n % 2 == 0, random.Random(n), absolute=n % 7 == 0)
        assert _resolve(phrase, day) == on
        assert (on > day) == (n % 2 == 0)


def test_open_answers_quote_every_evidence_message(history: mh.History) -> None:
    """An open answer is one key phrase from each evidence message, in order, "; "-joined."""
    for q, fact in _kind(history, "open"):
        parts = q.answer.split("; ")
        assert len(parts) == len(q.evidence) >= 3 and tuple(parts) == fact.keys
        for part, text in zip(parts, _texts(history, q.evidence), strict=True):
            assert _has(text, part), (part, text)
        times = [history.message(i).at for i in q.evidence]
        assert times == sorted(times) and len({t.date() for t in times}) == len(times)


def test_unanswerable_questions_are_about_nothing_in_the_history(history: mh.History) -> None:
    """No evidence, no answer, and the subject is in no message and shares no name with any answer."""
    answered = {w for q in history.questions if q.evidence for w in _CAPITALISED.findall(q.answer)}
    everything = "\n".join(m.text for ms in history.chats.values() for m in ms)
    for q, fact in _kind(history, "unanswerable"):
        assert q.answer == "" and q.evidence == () and q.superseded == ()
        assert fact.absent and fact.absent in q.question
        assert not _has(everything, fact.absent)
        assert not set(_CAPITALISED.findall(q.question.split(" ", 1)[1])) & answered, q.question
        assert not any(_has(other.answer, fact.absent) for other in history.questions)


def test_filler_history_makes_100k_importable_messages_quickly() -> None:
    """100,000 small-talk messages over years in well under 10 s, read back one record a message."""
    began = time.perf_counter()
    text = mh.filler_history(100_000, seed=3)
    assert time.perf_counter() - began < 10
    records = list(parse(io.BytesIO(text.encode()), me=Me.of(mh.USER), conversation="Noor"))
    messages = [r for r in records if isinstance(r, ImportedMessage)]
    assert len(records) - 1 == len(messages) == 100_000
    assert messages[0].at is not None and messages[-1].at is not None
    assert messages[-1].at - messages[0].at > timedelta(days=3 * 365)
    assert 0.3 < sum(m.is_user for m in messages) / len(messages) < 0.7
    assert mh.filler_history(50, seed=3) == mh.filler_history(50, seed=3).replace("\r", "")
    assert len(mh.filler_history(50, seed=3).splitlines()) == 51
