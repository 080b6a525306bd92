"""Finding memory candidates in what the user said: deterministic rules, and a strict parser for LLM output.

Sans-I/O and pure: text in, `Candidate`/`Forget` values out. The rules catch the statements people make
about their own lives in conversation ("my sister Ana lives in Porto", "I love hiking", "I'm moving to Berlin
next month", "Ana moved to Lisbon", "forget that"). A memory keeps the user's own words (first person), which
is what the user reads back in the memories screen and what the prompt quotes.
"""

from __future__ import annotations

import json
import logging
import re
from dataclasses import dataclass
from datetime import date, timedelta
from typing import Any

from voice_server.avatar.memory.store import KINDS, Kind

log = logging.getLogger(__name__)

MAX_CANDIDATES = 5  # per turn
MAX_MEMORY_CHARS = 300
MAX_LLM_OUTPUT_CHARS = 8000

RELATIONS = (
    "mother|mom|mum|father|dad|sister|brother|wife|husband|partner|girlfriend|boyfriend|son|daughter|"
    "grandmother|grandma|grandfather|grandpa|aunt|uncle|cousin|niece|nephew|friend|best friend|boss|colleague|"
    "neighbor|neighbour|roommate|dog|cat|kid|kids|children|parents|family"
)
_SENTENCES = re.compile(r"(?<=[.!?])\s+|\n+")
_FORGET = re.compile(
    r"^(?:please\s+)?(?:forget|don'?t remember|do not remember|stop remembering|erase|delete)"
    r"(?:\s+(?:that|about|it|this))?\s*(?P<rest>.*)$",
    re.IGNORECASE,
)
_NO_LONGER = re.compile(
    r"\b(?:that'?s|that is|it'?s|it is)\s+(?:no longer|not)\s+true\b|\bnot true any ?more\b|"
    r"\bno longer\b|\bany ?more\b|\bnot any ?more\b",
    re.IGNORECASE,
)
_NEGATED = re.compile(r"n't\b|\b(?:not|never|no longer)\b", re.IGNORECASE)
_FIRST_PERSON = re.compile(r"\b(?:i|i'm|i've|i'll|i'd|my|me|mine|we|our|us)\b", re.IGNORECASE)
_MY_RELATION = re.compile(rf"\bmy\s+(?P<rel>{RELATIONS})(?:'s)?(?:,?\s+(?P<name>[A-Z][a-zA-Z'-]+))?", re.IGNORECASE)
_LEADING_NAME = re.compile(r"^(?P<name>[A-Z][a-z'-]+)\s+(?:is|was|has|had|lives|lived|moved|works|worked|"
                           r"got|loves|likes|hates|will|just|married|started|left|died|passed|turned|"
                           r"studies|plays|bought|broke|came|went|does|doesn't|did|didn't|isn't|wasn't|"
                           r"never|no longer|can|can't|won't)\b")
_PREFERENCE = re.compile(
    r"\bi\s+(?:really\s+|just\s+|absolutely\s+)?(?:love|like|enjoy|prefer|adore|hate|dislike|can'?t stand|"
    r"am into|'m into)\b|\bmy favou?rite\b",
    re.IGNORECASE,
)
_PLAN = re.compile(
    r"\bi(?:'m| am)\s+(?:going to|gonna|planning|moving|starting|flying|visiting|getting)\b|\bi will\b|\bi'll\b|"
    r"\bi plan\b|\bi want to\b|\bmy plan\b|\bnext (?:week|month|year|monday|tuesday|wednesday|thursday|friday|"
    r"saturday|sunday)\b|\btomorrow\b",
    re.IGNORECASE,
)
_FEELING = re.compile(
    r"\bi(?:'m| am| feel| have been| 've been)\s+(?:so\s+|really\s+|very\s+|a bit\s+|feeling\s+)?"
    r"(?:sad|happy|tired|exhausted|stressed|anxious|worried|excited|lonely|depressed|angry|upset|nervous|"
    r"overwhelmed|great|down|sick|ill|proud|grateful|scared|bored)\b",
    re.IGNORECASE,
)
_EVENT = re.compile(
    r"\b(?:birthday|anniversary|wedding|graduat\w*|funeral|born|died|passed away|interview|exam|surgery|"
    r"appointment|trip|vacation|holiday)\b",
    re.IGNORECASE,
)
_FACT = re.compile(
    r"\bmy\s+\w+|\bi(?:'m| am)\s+(?:a|an|from|\d+)\b|\bi\s+(?:live|work|study|grew up|was born|have|own|"
    r"moved|speak|play|drive|teach|retired)\b|\bmy name is\b|\bcall me\b",
    re.IGNORECASE,
)
_CAPITALISED = re.compile(r"\b[A-Z][a-z'-]+\b")
_REMEMBER = re.compile(r"\b(?:remember|don'?t forget|never forget|important)\b", re.IGNORECASE)
_QUESTION_START = re.compile(
    r"^(?:what|who|where|when|why|how|which|do|does|did|can|could|would|should|is|are|was|were|will|have|has)\b",
    re.IGNORECASE,
)
# What a statement says about a property of its subject, with the value it gives it. A property is recognised
# only with its value (a place is a capitalised name, as people write places), because a newer statement of the
# same property supersedes the older one: keywords alone made "I've known them since I moved from my home
# country" and "I want to live authentically" one property, and the second erased the first (issue 20).
_PLACE = r"(?P<value>[A-Z][\w'-]+(?:[ -][A-Z][\w'-]+){0,2})"
_LOCATION = re.compile(
    r"\b(?:(?i:live[sd]?|living|moved|moving|relocat\w+|based|stays?|staying)(?:\s+(?i:back|over|out|away))?"
    rf"\s+(?i:in|to|at|near)|(?i:i(?:'m| am)|is|are|comes?)\s+(?i:originally\s+)?(?i:from))\s+{_PLACE}"
)
_JOB = re.compile(
    r"\b(?:(?:works?|worked|working|job|employed)\s+(?:as|at|for|in)\s+(?:an?\s+|the\s+)?"
    r"|(?:teach(?:es)?|study|studies|studying)\s+)(?P<value>[\w'&-]+(?:\s+(?-i:[A-Z])[\w'&-]+)*)"
    r"|\b(?P<retired>retired)\b",
    re.I,
)
_RELATIONSHIP = re.compile(r"\b(?P<value>married|divorced|dating|engaged|separated|broke up)\b", re.I)
_AGE = re.compile(r"\b(?:(?P<value>\d+)\s+years? old|turned (?P<turned>\d+))\b", re.I)
_NAME = re.compile(r"\b(?:(?i:my name is)\s+(?P<value>[\w'-]+)|(?i:call me)\s+(?P<called>[A-Z][\w'-]+))")
_MONTHS = ("january", "february", "march", "april", "may", "june", "july", "august", "september", "october",
           "november", "december")
_DATE = re.compile(rf"\b(?:on\s+)?(?P<month>{'|'.join(_MONTHS)})\s+(?P<day>\d{{1,2}})(?:st|nd|rd|th)?\b", re.I)
_RELATIVE = {"today": 0, "tonight": 0, "tomorrow": 1, "yesterday": -1, "next week": 7}
_NOT_NAMES = frozenset(
    "i the a an this that these those it he she they we you my our your his her their there here what who "
    "today tomorrow yesterday yes no ok okay well so and but or also then now".split()
)
_IMPORTANCE: dict[Kind, float] = {
    "person": 0.7, "event": 0.7, "plan": 0.65, "fact": 0.6, "preference": 0.5, "feeling": 0.35,
}


@dataclass(frozen=True, slots=True)
class Candidate:
    """A statement worth remembering.

    Attributes:
        text: The statement in the user's words, one sentence, capitalised, ending in punctuation.
        kind: One of `KINDS`.
        importance: 0..1.
        subject: Who/what it is about, lower-case ("ana", "sister", "me").
        attribute: Which property of the subject it states ("location", "job", …) or ``None``; a newer
            statement of the same subject and attribute supersedes the older one.
        event_date: The date it refers to, if one was said.
    """

    text: str
    kind: Kind
    importance: float
    subject: str | None = None
    attribute: str | None = None
    event_date: date | None = None


@dataclass(frozen=True, slots=True)
class Forget:
    """The user asked to forget something: ``about`` names it, or is empty for "forget that" (the latest)."""

    about: str
    subject: str | None = None
    attribute: str | None = None


def split_sentences(text: str) -> list[str]:
    """Sentences of ``text``, stripped, empty ones dropped."""
    return [s.strip() for s in _SENTENCES.split(text) if s.strip()]


def subject_of(sentence: str) -> str | None:
    """Who a statement is about: a named relation ("my sister Ana" → ``ana``), a relation (``sister``), a
    leading name ("Ana moved…" → ``ana``), the user (``me``), or ``None``."""
    if m := _MY_RELATION.search(sentence):
        name = m.group("name")
        if name and name[0].isupper() and name.lower() not in _NOT_NAMES:
            return name.lower()
        return m.group("rel").lower()
    if (m := _LEADING_NAME.match(sentence)) and m.group("name").lower() not in _NOT_NAMES:
        return m.group("name").lower()
    if _FIRST_PERSON.search(sentence):
        return "me"
    return None


def property_of(sentence: str) -> tuple[str, str] | None:
    """The property a statement sets and the value it gives it (lower case), for superseding: ``name``,
    ``location`` (a capitalised place after "live in", "moved to", "is from", ...), ``job`` ("works as a
    nurse", "works at Acme", "retired"), ``relationship`` or ``age``; ``None`` when it sets none with a value."""
    for name, pattern in (("name", _NAME), ("location", _LOCATION), ("job", _JOB),
                          ("relationship", _RELATIONSHIP), ("age", _AGE)):
        if (m := pattern.search(sentence)) is not None:
            value = next(v for v in m.groupdict().values() if v)
            return name, value.lower()
    return None


def attribute_of(sentence: str) -> str | None:
    """The property a statement sets (`property_of`) without its value."""
    found = property_of(sentence)
    return None if found is None else found[0]


def date_in(sentence: str, today: date) -> date | None:
    """A date the sentence names: "on March 3" (this year, or next if it has passed) or today/tomorrow/…"""
    if m := _DATE.search(sentence):
        month = _MONTHS.index(m.group("month").lower()) + 1
        try:
            found = date(today.year, month, int(m.group("day")))
        except ValueError:
            return None
        if found < today and _PLAN.search(sentence):
            found = found.replace(year=today.year + 1)
        return found
    lowered = sentence.lower()
    for word, days in _RELATIVE.items():
        if re.search(rf"\b{word}\b", lowered):
            return today + timedelta(days=days)
    return None


def _kind(sentence: str) -> Kind | None:
    if _EVENT.search(sentence):
        return "event"
    if _FEELING.search(sentence):
        return "feeling"
    if _PLAN.search(sentence):
        return "plan"
    if _MY_RELATION.search(sentence) or _LEADING_NAME.match(sentence):
        return "person"
    if _PREFERENCE.search(sentence):
        return "preference"
    if _FACT.search(sentence):
        return "fact"
    return None


def _tidy(sentence: str) -> str:
    text = re.sub(r"\s+", " ", sentence).strip()
    text = re.sub(r"^(?:well|so|oh|hey|hi|and|but|also|actually|by the way|btw),?\s+", "", text, flags=re.I)
    text = text[:MAX_MEMORY_CHARS].rstrip()
    if not text:
        return text
    text = text[0].upper() + text[1:]
    return text if text[-1] in ".!" else text.rstrip(",;:") + "."


def extract(text: str, today: date, known_subjects: frozenset[str] = frozenset()) -> list[Candidate | Forget]:
    """Memory candidates and forget requests in one user turn, in order (at most `MAX_CANDIDATES`).

    Args:
        text: What the user said (a transcript or a typed message).
        today: The turn's date, for "tomorrow" and "on March 3".
        known_subjects: Subjects the user already has memories about; a sentence naming one ("Ana got a
            dog") is kept even without "my"/"I".
    """
    found: list[Candidate | Forget] = []
    for sentence in split_sentences(text):
        if len(found) >= MAX_CANDIDATES:
            break
        words = sentence.split()
        if sentence.endswith("?") or _QUESTION_START.match(sentence):
            continue
        if m := _FORGET.match(sentence):
            about = m.group("rest").strip(" .!")
            found.append(Forget(about, subject_of(about) if about else None, attribute_of(about) if about else None))
            continue
        subject = subject_of(sentence)
        if _NO_LONGER.search(sentence) and (len(words) <= 5 or _NEGATED.search(sentence)):
            # "that's not true anymore" / "Ana doesn't live in Lisbon anymore": the old fact goes.
            specific = subject not in (None, "me") or len(words) > 5
            found.append(Forget(sentence if specific else "", subject, attribute_of(sentence)))
            continue
        if len(words) < 3:
            continue
        kind = _kind(sentence)
        if kind is None:
            named = [w.lower() for w in _CAPITALISED.findall(sentence) if w.lower() in known_subjects]
            if named:
                kind, subject = "person", named[0]
        if kind is None:
            continue
        importance = _IMPORTANCE[kind] + (0.2 if _REMEMBER.search(sentence) else 0.0)
        when = date_in(sentence, today)
        if when is not None:
            importance += 0.1
        found.append(
            Candidate(_tidy(sentence), kind, round(min(importance, 1.0), 2), subject, attribute_of(sentence), when)
        )
    return found


# ------------------------------------------------------------------------------------------ LLM extraction

LLM_INSTRUCTIONS = (
    "Extract facts worth remembering long-term about the user from their message. Answer with only a JSON "
    'array (no prose) of at most 5 objects: {"text": "<one short sentence in the user\'s own first-person '
    'words>", "kind": "fact|preference|person|plan|feeling|event", "importance": <0..1>, "subject": "<who it '
    'is about, lower-case, or me>"}. Answer [] if there is nothing to remember.'
)


def parse_llm_candidates(output: str, today: date) -> list[Candidate]:
    """Candidates from an LLM's answer to `LLM_INSTRUCTIONS`; anything malformed is dropped, never raised.

    Accepts a JSON array (optionally inside a code fence or after prose); each element must be an object with
    a non-empty string ``text`` and a known ``kind``; ``importance`` must be a number (clamped to 0..1,
    default by kind); ``subject`` a short string. Output over `MAX_LLM_OUTPUT_CHARS` is rejected whole.
    """
    if len(output) > MAX_LLM_OUTPUT_CHARS:
        log.warning("memory extraction: LLM output too long (%d chars); ignored", len(output))
        return []
    start, end = output.find("["), output.rfind("]")
    if start < 0 or end <= start:
        if output.strip():
            log.warning("memory extraction: LLM output is not a JSON array; ignored")
        return []
    try:
        data = json.loads(output[start : end + 1])
    except (ValueError, RecursionError):
        log.warning("memory extraction: LLM output is not valid JSON; ignored")
        return []
    if not isinstance(data, list):
        return []
    found: list[Candidate] = []
    for item in data[:MAX_CANDIDATES]:
        candidate = _candidate_from(item, today)
        if candidate is None:
            log.warning("memory extraction: malformed item from the LLM dropped")
            continue
        found.append(candidate)
    return found


def _candidate_from(item: Any, today: date) -> Candidate | None:
    if not isinstance(item, dict):
        return None
    text, kind = item.get("text"), item.get("kind")
    if not isinstance(text, str) or not text.strip() or len(text) > MAX_MEMORY_CHARS or kind not in KINDS:
        return None
    importance = item.get("importance", _IMPORTANCE[kind])
    if isinstance(importance, bool) or not isinstance(importance, int | float) or importance != importance:
        return None
    subject = item.get("subject")
    if subject is not None and (not isinstance(subject, str) or len(subject) > 40):
        return None
    text = _tidy(text)
    return Candidate(
        text,
        kind,
        round(min(max(float(importance), 0.0), 1.0), 2),
        subject.strip().lower() or None if subject else subject_of(text),
        attribute_of(text),
        date_in(text, today),
    )
