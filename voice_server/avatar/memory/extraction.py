"""Finding memory candidates in what the user said: deterministic rules, and a strict parser for LLM output.

Sans-I/O and pure: text in, `Candidate`/`Forget` values out. The rules catch the statements people make
about their own lives in conversation ("my sister Ana lives in Porto", "I love hiking", "I'm moving to Berlin
next month", "Ana moved to Lisbon", "we adopted a puppy called Pixie", "I'm learning the violin", "forget
that"). A memory keeps the user's own words (first person), which is what the user reads back in the memories
screen and what the prompt quotes. `extract_theirs` runs the same rules on what another person in a chat said
about their own life, recording who said it. Dates are resolved by `timecues.resolve_event_date`.
"""

from __future__ import annotations

import json
import logging
import re
from dataclasses import dataclass, replace
from datetime import date, timedelta
from typing import Any

from voice_server.avatar.memory.store import KINDS, Kind
from voice_server.avatar.memory.timecues import resolve_event_date

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
# Things the user did or is doing ("we adopted a puppy", "I'm learning the violin"): a first-person subject,
# at most two adverbs, then a verb of doing. Simple past and a completed perfect are events; a progressive or a
# perfect of starting ("I've started/joined …") is an ongoing activity, a fact. The verbs are those of things
# worth remembering, not every verb: "had", "made", "said" are mostly chat ("I had lunch", "I made it").
_DOER = r"\b(?:i|we)"
_ADVERBS = (
    r"(?:\s+(?:just|finally|actually|recently|also|both|all|even|already|then|first|once|officially|eventually)){0,2}"
)
_PAST_VERBS = (
    r"went|visited|adopted|got|bought|started|began|finished|completed|joined|ran|moved|met|saw|passed|lost|won|"
    r"booked|signed\s+up|enrolled|graduated|travell?ed|flew|drove|hiked|climbed|took|quit|left|sold|found|built|"
    r"wrote|learn(?:ed|t)|tried|celebrated|hosted|attended|organi[sz]ed|launched|opened|retired|survived|"
    r"volunteered|performed|published|received|renovated|rescued|qualified"
)
_DONE_PARTICIPLES = (
    r"been\s+to|visited|adopted|gotten|bought|finished|completed|run|moved|met|seen|passed|lost|won|booked|"
    r"enrolled|graduated|travell?ed|flown|hiked|climbed|quit|left|sold|found|built|written|learn(?:ed|t)|tried|"
    r"retired|survived|published|received|renovated|rescued|qualified"
)
_STARTED_PARTICIPLES = r"started|begun|joined|taken\s+up|signed\s+up"
_ONGOING_VERBS = (
    r"learning|doing|taking|training|studying|practi[sc]ing|building|writing|volunteering|renovating|coaching|"
    r"teaching|attending|working\s+on|recovering|saving\s+up"
)
_DID = re.compile(rf"{_DOER}{_ADVERBS}\s+(?P<verb>{_PAST_VERBS})\b", re.I)
_HAVE_DONE = re.compile(rf"{_DOER}(?:'ve|\s+have){_ADVERBS}\s+(?P<verb>{_DONE_PARTICIPLES})\b", re.I)
# "I've got a dog" is having, not getting: a fact (it was a person memory about "I've" before that was fixed).
_HAVE_GOT = re.compile(rf"{_DOER}(?:'ve|\s+have){_ADVERBS}\s+(?P<verb>got)\b", re.I)
_HAVE_STARTED = re.compile(rf"{_DOER}(?:'ve|\s+have){_ADVERBS}\s+(?P<verb>{_STARTED_PARTICIPLES})\b", re.I)
_DOING = re.compile(
    rf"{_DOER}(?:'m|'re|\s+am|\s+are|(?:'ve|\s+have)\s+been){_ADVERBS}\s+(?P<verb>{_ONGOING_VERBS})\b", re.I
)
# In order: a sentence with both an activity and a deed ("I've started running and ran 5k") is the activity.
_ACTIVITY_RULES: tuple[tuple[re.Pattern[str], Kind], ...] = (
    (_DOING, "fact"), (_HAVE_STARTED, "fact"), (_HAVE_GOT, "fact"), (_HAVE_DONE, "event"), (_DID, "event"),
)
# Before the verb, these make it something that did not happen ("I didn't go", "if we moved", "I'd visit").
_NOT_DONE = re.compile(
    r"n't\b|\b(?:not|never|no longer|if|unless|would|could|might|should|must|wish|hope|maybe|perhaps|suppose|"
    r"imagine|whether|pretend)\b|'d\b",
    re.I,
)
# A clause ends here: "I got up and had breakfast" is about getting up, not breakfast.
_CLAUSE_END = re.compile(r"[,;:]|\s(?:and|but|because|cos|so|then|while|when|after|before|until|though|although)\b",
                         re.I)
_WORD = re.compile(r"[a-z0-9][a-z0-9'-]*", re.I)  # "10k" counts as content, "10" does not (no letter)
# Words that say nothing about what was done: pronouns, determiners, prepositions and particles ("I got up"),
# auxiliaries and light verbs, times and fillers.
_FILLER = frozenset(
    "i me my mine myself we us our ours you your yours it its this that these those he him his she her hers they "
    "them their theirs there here what which who something anything nothing everything someone anyone everyone "
    "one a an the some any another other every each all both few lot lots bit couple such "
    "to in on at for of with from by about into onto out up down off over back away around through along "
    "together as than like "
    "be been being is am are was were do did does done doing have has had get got go went gone going see saw make "
    "made let come came "
    "just so very really too also now then again today tonight yesterday tomorrow morning afternoon evening "
    "night week weekend month year years ago last next earlier later recently finally already still even once "
    "twice first new old own much many more most little long soon ahead eventually anyway instead alone "
    "somewhere anywhere everywhere "
    "lol haha um uh well ok okay yeah yes no oh".split()
)
# Objects and complements of everyday chat ("I went to bed", "I went quiet", "I saw your message"): alone after
# the verb they make no memory; with another content word they do ("I went to bed early after the wedding").
_TRIVIAL = frozenset(
    "bed sleep home house work school toilet bathroom loo shower bath nap break rest lunch dinner breakfast food "
    "snack message messages text texts email emails call calls reply voicemail point idea joke video videos post "
    "quiet silent mad crazy lost bored tired ready dressed changed stuck distracted confused busy late early "
    "wrong right lucky mistake chance look glance minute minutes second seconds moment while time way thing "
    "things stuff sense track touch best fine good great alright dishes laundry chores shopping groceries walk "
    "hang gist day phone keys shop shops store gym".split()
)
_NOT_NAMES = frozenset(
    "i the a an this that these those it he she they we you my our your his her their there here what who "
    "today tomorrow yesterday yes no ok okay well so and but or also then now "
    "i've i'm i'll i'd we've we're we'll we'd you've you're".split()  # "I've started…" is no person called I've
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


def _relation(sentence: str) -> tuple[str, bool] | None:
    """The speaker's relation a sentence is about: (its name, True) for "my sister Ana" → ``ana``, (the
    relation, False) for "my sister" → ``sister``; ``None`` when it names none."""
    if m := _MY_RELATION.search(sentence):
        name = m.group("name")
        if name and name[0].isupper() and name.lower() not in _NOT_NAMES:
            return name.lower(), True
        return m.group("rel").lower(), False
    return None


def subject_of(sentence: str) -> str | None:
    """Who a statement is about: a named relation ("my sister Ana" → ``ana``), a relation (``sister``), a
    leading name ("Ana moved…" → ``ana``), the user (``me``), or ``None``."""
    if relation := _relation(sentence):
        return relation[0]
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
    """The day the sentence names, said on ``today``, or ``None``: `timecues.resolve_event_date` (yesterday,
    tomorrow, "last year", "next Tuesday", "two weeks ago", "12 March", "March 12th", …; a month alone, "in
    June", names no day), except that a yearless calendar date follows the sentence's tense where the nearest
    such day would contradict it: in a plan ("I'm visiting my aunt on January 5th") it is the next one, in a
    statement of something done ("we ran the Lisbon half on 12 March") the last one."""
    # One date parser for memories and episodes alike, so a memory and the message it came from agree.
    found = resolve_event_date(sentence, today)
    if found is None:
        return None
    plan = _PLAN.search(sentence) is not None
    if found < today and plan:
        step = 1
    elif found > today and not plan and activity_of(sentence) == "event":
        step = -1
    else:
        return found
    # Only a yearless calendar date may move: resolved from half a year away it is the same day a year over,
    # while a relative expression ("yesterday", "last month") moves with its anchor and a dated one not at all.
    other = resolve_event_date(sentence, today + timedelta(days=183 * step))
    if other is not None and (other.month, other.day, other.year) == (found.month, found.day, found.year + step):
        return other
    return found


def _is_content(word: str) -> bool:
    return len(word) > 1 and any(c.isalpha() for c in word) and word not in _FILLER and word not in _TRIVIAL


def activity_of(sentence: str) -> Kind | None:
    """What the speaker did or is doing, as a kind: ``"event"`` for something done ("we adopted another puppy",
    "I went to a support group yesterday", "I've finished the book"), ``"fact"`` for an ongoing activity ("I'm
    learning the violin", "I've started a pottery class") or something had ("I've got a dog"), else ``None``.

    The subject is I/we and the verb one of doing (went, visited, adopted, got, bought, started, finished, joined,
    ran, moved, met, saw, passed, lost, won, booked, signed up, …; am learning/doing/taking/training/…). Not a
    match: a negation or hypothetical before the verb ("I didn't go", "if we moved", "I might have visited"), and
    a clause with no content word after the verb (only pronouns, particles, times or everyday chat objects: "I got
    up", "I got it", "I saw that", "I went to bed", "I went quiet").
    """
    sentence = sentence.replace("\u2019", "'")  # phones type curly apostrophes
    for pattern, kind in _ACTIVITY_RULES:
        for m in pattern.finditer(sentence):
            if _NOT_DONE.search(sentence, 0, m.start("verb")):
                continue
            rest = sentence[m.end():]
            if end := _CLAUSE_END.search(rest):
                rest = rest[: end.start()]
            if any(_is_content(w.lower().strip("'-")) for w in _WORD.findall(rest)):
                return kind
    return None


def _kind(sentence: str) -> Kind | None:
    if _EVENT.search(sentence):
        return "event"
    if _FEELING.search(sentence):
        return "feeling"
    if _PLAN.search(sentence):
        return "plan"
    if _MY_RELATION.search(sentence) or (
        (m := _LEADING_NAME.match(sentence)) and m.group("name").lower() not in _NOT_NAMES
    ):  # "We moved…", "You went…" are no person's name
        return "person"
    if _PREFERENCE.search(sentence):
        return "preference"
    # After people and preferences, whose subject and kind are the more useful ("I visited my grandma" is about
    # her), and before the catch-all facts, whose "my <anything>" took "I ran my first marathon".
    if kind := activity_of(sentence):
        return kind
    if _FACT.search(sentence):
        return "fact"
    return None


def _tidy(sentence: str, limit: int = MAX_MEMORY_CHARS) -> str:
    text = re.sub(r"\s+", " ", sentence).strip()
    text = re.sub(r"^(?:well|so|oh|hey|hi|and|but|also|actually|by the way|btw),?\s+", "", text, flags=re.I)
    text = text[:limit].rstrip()
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
        if _is_question(sentence):
            continue
        if m := _FORGET.match(sentence):
            about = m.group("rest").strip(" .!")
            found.append(Forget(about, subject_of(about) if about else None, attribute_of(about) if about else None))
            continue
        subject = subject_of(sentence)
        if _is_retraction(sentence):
            # "that's not true anymore" / "Ana doesn't live in Lisbon anymore": the old fact goes.
            specific = subject not in (None, "me") or len(sentence.split()) > 5
            found.append(Forget(sentence if specific else "", subject, attribute_of(sentence)))
            continue
        if candidate := _candidate(sentence, today, subject, known_subjects):
            found.append(candidate)
    return found


def _is_question(sentence: str) -> bool:
    return sentence.endswith("?") or _QUESTION_START.match(sentence) is not None


def _is_retraction(sentence: str) -> bool:
    """ "That's not true anymore", "Ana doesn't live in Lisbon any more": an old fact stops being true."""
    return _NO_LONGER.search(sentence) is not None and (
        len(sentence.split()) <= 5 or _NEGATED.search(sentence) is not None
    )


def _candidate(
    sentence: str, today: date, subject: str | None, known_subjects: frozenset[str] = frozenset()
) -> Candidate | None:
    """The rules' candidate for one sentence that is neither a question nor a forget request, or ``None``."""
    if len(sentence.split()) < 3:
        return None
    kind = _kind(sentence)
    if kind is None:
        named = [w.lower() for w in _CAPITALISED.findall(sentence) if w.lower() in known_subjects]
        if named:
            kind, subject = "person", named[0]
    if kind is None:
        return None
    importance = _IMPORTANCE[kind] + (0.2 if _REMEMBER.search(sentence) else 0.0)
    when = date_in(sentence, today)
    if when is not None:
        importance += 0.1
    return Candidate(_tidy(sentence), kind, round(min(importance, 1.0), 2), subject, attribute_of(sentence), when)


MAX_SPEAKER_CHARS = 60
_FIRST_NAME = re.compile(r"[^\W\d_][\w'-]*")


def extract_theirs(text: str, speaker: str, today: date) -> list[Candidate]:
    """Memory candidates in what another person (``speaker``, their display name) said about their own life
    in a chat with the user, in order (at most `MAX_CANDIDATES`).

    The rules of `extract` run on each of their first-person statements ("I got the job in Berlin!", "My brother
    Tomas is a nurse"); sentences without I/my/we…, questions, and forget or "no longer" statements are skipped
    (another person cannot make the user's avatar forget). Each candidate's kind, importance, attribute and
    event_date are the rules'; its ``text`` records who said it, ``"{speaker} said: {their words}"``
    ("Ana Souza said: I got the job in Berlin!"), so it is never read back as the user's own words.

    Subjects: the speaker's first name lower-cased (``ana``) for a statement about themselves; a named relation
    is that name ("my brother Tomas" → ``tomas``); an unnamed relation is theirs, ``"{first name}'s {relation}"``
    ("My sister lives in Porto" → ``ana's sister``), never the user's ``sister``. A speaker name with no letters
    (a phone number) is used whole; a blank one reads "Someone said:" with the subject ``None``.
    """
    name = re.sub(r"\s+", " ", speaker).strip()[:MAX_SPEAKER_CHARS].rstrip()
    first = m[0].lower() if (m := _FIRST_NAME.search(name)) else name.lower() or None
    prefix = f"{name or 'Someone'} said: "
    found: list[Candidate] = []
    for sentence in split_sentences(text):
        if len(found) >= MAX_CANDIDATES:
            break
        if (
            _is_question(sentence)
            or _FORGET.match(sentence)
            or _is_retraction(sentence)
            or not _FIRST_PERSON.search(sentence)
        ):
            continue
        relation = _relation(sentence)
        if relation is None:
            subject = first
        elif relation[1]:  # a name is the same person whoever says it
            subject = relation[0]
        else:
            subject = f"{first}'s {relation[0]}" if first else None
        if candidate := _candidate(sentence, today, subject):
            words = _tidy(sentence, MAX_MEMORY_CHARS - len(prefix))
            found.append(replace(candidate, text=prefix + words))
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
