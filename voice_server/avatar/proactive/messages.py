"""The words of a proactive message: deterministic templates, the local LLM's wording, and the guard between.

Dates, years and counts are never the LLM's: code writes them from the data (a memory's event date, an
imported message's time, a milestone's year) into a fixed header or the template. The LLM only words the
warm part, and `invents_facts` rejects its output when it mentions any number, number word, month or
weekday that is not in the grounding it was given — then the template is used. Without an LLM the template
is used too, so a message always exists and never states a date that is not in the user's data.
"""

from __future__ import annotations

import asyncio
import logging
import re
import uuid
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import date
from typing import TYPE_CHECKING, Any, Final, Literal, Protocol, Unpack

from voice_server.avatar.proactive.rules import Kind

if TYPE_CHECKING:  # types only: the LLM runtime is imported when the models load
    from models.chat_prompt import Message
    from models.llm import GenerateOptions

log = logging.getLogger(__name__)

LLM_TIMEOUT_S: Final = 30.0
MAX_QUOTE_CHARS: Final = 240
MAX_LLM_CHARS: Final = 300
Source = Literal["llm", "template"]

_NUMBER = re.compile(r"\d+(?:[.,]\d+)?")
_MONTHS = ("january", "february", "march", "april", "may", "june", "july", "august", "september", "october",
           "november", "december")
_MONTH_WORDS = re.compile(
    r"(?i:\b(?:january|february|march|april|june|july|august|september|october|november|december|jan|feb|mar|"
    r"apr|jun|jul|aug|sept?|oct|nov|dec)\b)|\bMay\b"  # "may" the verb is common; capitalised "May" is a month
)
_WEEKDAYS = re.compile(r"\b(?:monday|tuesday|wednesday|thursday|friday|saturday|sunday)s?\b", re.IGNORECASE)
_NUMBER_WORDS: Final = {
    w: i for i, w in enumerate(
        "zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen sixteen "
        "seventeen eighteen nineteen twenty".split()
    )
} | {"thirty": 30, "forty": 40, "fifty": 50, "sixty": 60, "seventy": 70, "eighty": 80, "ninety": 90,
     "hundred": 100, "thousand": 1000, "dozen": 12, "once": 1, "twice": 2, "decade": 10, "decades": 10}
_WORD = re.compile(r"[a-z]+", re.IGNORECASE)
_ROLE_PLAY = re.compile(r"^\s*(?:user|assistant|system|soma)\s*:", re.IGNORECASE | re.MULTILINE)


class Completer(Protocol):
    """`models.llm.CT2Llm`'s one-shot completion."""

    async def acomplete(self, messages: Sequence[Message], **options: Unpack[GenerateOptions]) -> str: ...


# The person's own model for a user's messages: (user id) -> (its completer, release it) or ``None``.
PersonalLlm = Callable[[uuid.UUID], Awaitable[tuple[Completer, Callable[[], None]] | None]]


@dataclass(frozen=True, slots=True)
class Draft:
    """What a message is about, with the private texts opened (held in memory only while it is written).

    Attributes:
        kind: The occurrence's kind.
        name: How to address the user.
        today: The user's local date.
        grounding: The occurrence's grounding (ids, dates, counts).
        quotes: Texts of the memories or messages it is grounded in.
        title: A user-set milestone's title.
        mood: The bond's mood label, for a check-in.
    """

    kind: Kind
    name: str
    today: date
    grounding: dict[str, Any] = field(default_factory=dict)
    quotes: tuple[str, ...] = ()
    title: str | None = None
    mood: str | None = None


def long_date(d: date) -> str:
    """``3 March 2021``."""
    return f"{d.day} {_MONTHS[d.month - 1].capitalize()} {d.year}"


def _years(n: int) -> str:
    return "one year" if n == 1 else f"{n} years"


def _quote(text: str) -> str:
    text = " ".join(text.split())
    if len(text) > MAX_QUOTE_CHARS:
        text = text[: MAX_QUOTE_CHARS - 1].rstrip() + "…"
    return f"“{text}”"


def header(draft: Draft) -> str:
    """The factual opening code writes (dates and counts from the data); may be empty."""
    g = draft.grounding
    match draft.kind:
        case "on_this_day" if g.get("date"):
            when = date.fromisoformat(g["date"])
            said = "you wrote" if g.get("message_ids") else "you told me"
            return f"On this day {_years(int(g['years']))} ago ({long_date(when)}), {said}: {_quote(draft.quotes[0])}"
        case "checkin":
            return f"It's been {int(g.get('days', 1))} days since we last talked."
        case "milestone" if g.get("birthday"):
            return f"Happy birthday, {draft.name}!"
        case "milestone" if g.get("milestone_id"):
            title = draft.title or "your special day"
            if g.get("milestone_kind") == "anniversary":
                since = long_date(date.fromisoformat(g["date"]))
                return f"Today is {title}: {_years(int(g['years']))} since {since}."
            return f"Today is {title}."
        case "milestone" if g.get("memory_ids"):
            return f"You told me: {_quote(draft.quotes[0])} That's today!" if draft.quotes else "It's a special day!"
        case "milestone" if g.get("streak_days"):
            return f"That's {int(g['streak_days'])} days in a row that we've talked."
        case "milestone" if g.get("conversations"):
            return f"We've now had {int(g['conversations'])} conversations together."
        case _:
            return ""


def template(draft: Draft) -> str:
    """The deterministic message: the header plus a fixed warm line."""
    opening = header(draft)
    match draft.kind:
        case "greeting":
            plan = f" Good luck with today: {_quote(draft.quotes[0])}" if draft.quotes else ""
            return f"Good morning, {draft.name}! I hope you have a lovely day.{plan}"
        case "checkin":
            extra = " Last time you seemed a bit down; I hope things are better." if draft.mood == "negative" else ""
            return f"Hi {draft.name}! {opening} How have you been?{extra}"
        case "on_this_day":
            return f"{opening} Do you remember that day?"
        case "milestone" if draft.grounding.get("streak_days") or draft.grounding.get("conversations"):
            return f"{opening} Thank you for spending this time with me, {draft.name}!"
        case _:
            return f"{opening} Thinking of you today, {draft.name}!"


_OCCASIONS: Final[dict[str, str]] = {
    "greeting": "a good-morning message to start their day",
    "checkin": "a check-in: you have not talked for a while and you wonder how they are",
    "on_this_day": "sharing a memory from this same day in an earlier year",
    "milestone": "celebrating a special occasion with them",
}

INSTRUCTIONS = (
    "You are a warm personal companion writing a short message to {name} on your own initiative. Write one or"
    " two friendly sentences, in the second person, and nothing else. Never mention any date, year, age,"
    " number, month or day of the week: those are added separately."
)


def llm_messages(draft: Draft) -> list[dict[str, str]]:
    """The prompt asking the LLM for the warm part of ``draft``."""
    lines = [f"Occasion: {_OCCASIONS[draft.kind]}."]
    opening = header(draft)
    if opening:
        lines.append(f"It starts with: {opening}")
    elif draft.quotes:
        lines.append(f"Something they told you: {_quote(draft.quotes[0])}")
    if draft.mood == "negative":
        lines.append("Last time they seemed a bit down: be gentle.")
    lines.append("Write what comes next.")
    return [{"role": "system", "content": INSTRUCTIONS.format(name=draft.name)},
            {"role": "user", "content": "\n".join(lines)}]


def _numbers(text: str) -> set[float]:
    found = {float(n.replace(",", ".")) for n in _NUMBER.findall(text)}
    found |= {float(_NUMBER_WORDS[w.lower()]) for w in _WORD.findall(text) if w.lower() in _NUMBER_WORDS}
    return found


def _names(pattern: re.Pattern[str], text: str) -> set[str]:
    return {m.group(0).lower()[:3] for m in pattern.finditer(text)}


def invents_facts(output: str, grounding_text: str) -> bool:
    """True when ``output`` mentions a number (digits or words), month or weekday absent from
    ``grounding_text`` — the texts and code-written facts the message is grounded in."""
    if not _numbers(output) <= _numbers(grounding_text):
        return True
    if not _names(_MONTH_WORDS, output) <= _names(_MONTH_WORDS, grounding_text):
        return True
    return not _names(_WEEKDAYS, output) <= _names(_WEEKDAYS, grounding_text)


def clean_llm_output(output: str) -> str | None:
    """The LLM's message tidied, or ``None`` when it is unusable (empty, too long, role-play, markup)."""
    text = " ".join(output.strip().strip('"“”').split())
    if not text or len(text) > MAX_LLM_CHARS or _ROLE_PLAY.search(output) or any(c in text for c in "<>{}[]`#"):
        return None
    if "http" in text.lower() or "@" in text:
        return None
    return text


async def compose(draft: Draft, llm: Completer | None) -> tuple[str, Source]:
    """The message for ``draft`` and where its wording came from.

    With an LLM: code's header + the LLM's words, if they pass `clean_llm_output` and `invents_facts`;
    otherwise (or without an LLM, or when it fails or takes over `LLM_TIMEOUT_S`) the template.
    """
    fallback = template(draft)
    if llm is None:
        return fallback, "template"
    try:
        async with asyncio.timeout(LLM_TIMEOUT_S):
            output = await llm.acomplete(llm_messages(draft), max_tokens=60, temperature=0.8, top_k=40)
    except TimeoutError:
        log.warning("proactive: the LLM took too long; template used")
        return fallback, "template"
    except Exception:
        log.warning("proactive: the LLM failed; template used", exc_info=True)
        return fallback, "template"
    text = clean_llm_output(output)
    opening = header(draft)
    grounding = " ".join([opening, *draft.quotes, draft.title or ""])
    if text is None or invents_facts(text, grounding):
        log.info("proactive: LLM wording rejected (unusable or not grounded); template used")
        return fallback, "template"
    return (f"{opening} {text}" if opening else text), "llm"
