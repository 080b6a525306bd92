"""The persona profile: what one pass over a user's messages and memories says about them (sans-I/O).

`ProfileExtractor` is fed the user's own messages (`add_own`) and the senders of everyone else's
(`add_other`), one at a time, keeping only bounded counters and the example sample; `finish` combines them
with the user's memories into a `PersonaDoc`: the ``profile`` object of ``GET /v1/persona`` (``style``,
``interests``, ``people``, ``places``, ``self_description``), the name the avatar goes by, and the example
texts to embed. Same input, same output: every ranking breaks ties by text.

- **Interests**: words that appear in at least `INTEREST_MIN_SHARE` of the messages (three at least), are
  not stop-words, slang, laughter, names, contractions with or without their apostrophe ("im", "ill", "hes"),
  chat words ("laters", "cya"), calendar words or everyday chat words (`lexicon.NOT_TOPICS`,
  `NOT_INTERESTS`), and are used at least `INTEREST_MIN_RATIO` times more often than in general text of the
  user's languages (wordfreq baseline); ranked by ``messages containing it × ln(ratio)``.
- **People**: the senders the user exchanged messages with, by number of messages; then names the user
  mentions (`NameCounter`) and the subjects of ``person`` memories, by how many messages mention them. A
  word is a name only with evidence, never for being capitalised at a sentence start (a phone does that to
  "Meeting", "Ive" and "Friday"): see `NameCounter` and `ProfileExtractor._memory_name`. Words that can
  never be names (`_not_a_name`): stop-words, contractions, chat and calendar words, greetings and sign-offs,
  relations ("mum", "sister"), titles.
- **Places**: `places.PlaceFinder` mentions in the user's own messages (two at least), minus names that are
  also people in their life.
- **Self-description**: first person, assembled only from the above and up to two of the user's most
  important memories, quoted as they are — nothing is invented (no LLM rewrites it).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from voice_server.avatar.memory.extraction import RELATIONS
from voice_server.avatar.persona.lexicon import COUNTING_LANGUAGES, NOT_TOPICS, Lexicon, identify_languages
from voice_server.avatar.persona.places import COMMON_ZIPF, PlaceFinder
from voice_server.avatar.persona.sample import ExampleSample
from voice_server.avatar.persona.style import SLANG, WORD, StyleCounter, TopCounter, is_laughter, words_of

DOC_VERSION = 1
INTEREST_MIN_SHARE = 0.002
INTEREST_MIN_RATIO = 3.0
LANGUAGE_MIN_SHARE = 0.1
FUNCTION_WORDS = 30  # the most frequent words of a language, which never open a quoted phrase
LANGUAGE_SAMPLE = 1000  # messages classified (from the example sample: deterministic, bounded)
MAX_INTERESTS, MAX_PEOPLE, MAX_PLACES = 8, 8, 6
SELF_MEMORIES = 2
SELF_MEMORY_MAX_CHARS = 120
GENERIC_SENDERS = frozenset({"me", "you", "eu", "yo", "moi", "ich", "io", "ik", "\u2026others"})
NOT_INTERESTS = frozenset({
    "today", "tomorrow", "tonight", "yesterday", "morning", "evening", "night", "week", "weekend", "later",
    "soon", "thanks", "thank", "please", "sorry", "yes", "yeah", "okay", "sure", "cool", "great", "nice",
    "awesome", "lovely", "guys", "hey", "hello", "bye", "cheers", "message", "messages", "omitted", "media",
    "deleted", "photo", "image", "video", "sticker", "audio", "https", "http", "www", "com",
})
# People: evidence needed in at least NAME_MIN_SHARE of the messages (two at least); capitals count when
# the word is written capitalised mid-sentence in at least NAME_CAPS_SHARE of the messages that hold it (a
# lower-case "meeting" elsewhere says it is a word), cues when at least NAME_CUE_SHARE of them put it next to
# a person cue ("with jess", "jess said": a name sits there far more often than "work" does). A writer who
# capitalises more than TITLE_CASE_SHARE of their mid-sentence words Writes Like This: capitals say nothing.
NAME_MIN_SHARE = 0.001
NAME_CAPS_SHARE = 0.5
NAME_CUE_SHARE = 0.3
TITLE_CASE_SHARE = 0.25
# A person cue: the word before a name ("with jess", "told jess", "my sister jess") or after it ("jess said").
PERSON_BEFORE = frozenset({
    "with", "told", "tell", "tells", "telling", "ask", "asked", "asking", "texted", "texting", "messaged", "rang",
    "phoned", "met", "saw",
})
PERSON_AFTER = frozenset({
    "said", "says", "told", "tells", "asked", "asks", "texted", "messaged", "rang", "phoned", "reckons",
    "thinks", "wants",
})
RELATION_WORDS = frozenset(
    {r for r in RELATIONS.split("|") if " " not in r}
    | {"mates", "friends", "sis", "bro", "bf", "gf", "hubby", "wifey", "bestie", "nan", "nana", "gran", "granny",
       "grandad", "grandpa", "baby", "kid", "kids", "everyone", "everybody", "someone", "somebody", "people"}
)
TITLES = frozenset({"mr", "mrs", "ms", "miss", "dr", "sir", "madam", "mister", "prof"})
_INLINE = " \t,-\u2013\u2014&/+"  # between two words of one sentence (anything else ends a sentence)
LANGUAGE_NAMES = {
    "en": "English", "pt": "Portuguese", "es": "Spanish", "fr": "French", "de": "German", "it": "Italian",
    "nl": "Dutch", "pl": "Polish", "sv": "Swedish", "da": "Danish", "no": "Norwegian", "fi": "Finnish",
    "ru": "Russian", "uk": "Ukrainian", "tr": "Turkish", "el": "Greek", "cs": "Czech", "ro": "Romanian",
    "hu": "Hungarian", "ca": "Catalan", "gl": "Galician", "ar": "Arabic", "he": "Hebrew", "hi": "Hindi",
    "ja": "Japanese", "zh": "Chinese", "ko": "Korean", "id": "Indonesian", "vi": "Vietnamese", "th": "Thai",
}


@dataclass(frozen=True, slots=True)
class PersonaDoc:
    """A built persona: the API's ``profile`` object and the name the avatar goes by (sealed together)."""

    name: str
    profile: dict[str, Any]

    def to_json(self) -> dict[str, Any]:
        return {"version": DOC_VERSION, "name": self.name, "profile": self.profile}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> PersonaDoc:
        return cls(str(data.get("name", "")), dict(data.get("profile", {})))


@dataclass(frozen=True, slots=True)
class MemoryFact:
    """What the profile uses of one live memory."""

    text: str
    kind: str
    importance: float
    subject: str | None


@dataclass(frozen=True, slots=True)
class Extracted:
    """`ProfileExtractor.finish`'s result: the document, the example texts to embed, how many messages."""

    doc: PersonaDoc
    examples: list[str]
    messages: int


class NameCounter:
    """Evidence that a word is someone's name, counted one of the user's messages at a time (bounded).

    Two kinds, each counted once per message: the word written capitalised *not* at a sentence start ("went
    with Biscuit", "lol Jess is here"), and the word next to a person cue (`PERSON_BEFORE`, `PERSON_AFTER`,
    a relation: "my sister jess", "me and jess", "jess and i"), which is how names are found in chats written
    in lower case. A sentence starts a message and follows anything but spaces, commas and dashes.
    """

    def __init__(self) -> None:
        self.caps = TopCounter(2_000)  # by spelling as written ("Biscuit"): messages with it capitalised mid-sentence
        self.cued = TopCounter(2_000)  # by case-folded word: messages with it next to a person cue
        self.mid_words = 0  # words not at a sentence start (ordinary words only, see `add`)
        self.mid_caps = 0  # ... of which written capitalised

    def add(self, text: str) -> None:
        """Count one of the user's messages (as they wrote it)."""
        matches = list(WORD.finditer(text))
        folded = [_possessor(m.group().casefold().replace("\u2019", "'")) for m in matches]
        caps: set[str] = set()
        cued: set[str] = set()
        for i, match in enumerate(matches):
            key = folded[i]
            if key in NOT_TOPICS or key == "i":
                continue  # capitalised for being "I" ("Ive", "Im") or a weekday: says nothing of the writer
            word = _possessor(match.group().replace("\u2019", "'"))
            if i and not text[matches[i - 1].end() : match.start()].strip(_INLINE):
                self.mid_words += 1
                if word[0].isupper() and (len(word) == 1 or not word.isupper()):
                    self.mid_caps += 1
                    caps.add(word)
            before = folded[i - 1] if i else ""
            after = folded[i + 1] if i + 1 < len(folded) else ""
            if (
                before in PERSON_BEFORE
                or before in RELATION_WORDS
                or (before == "and" and i >= 2 and folded[i - 2] == "me")
                or after in PERSON_AFTER
                or (after == "and" and i + 2 < len(folded) and folded[i + 2] in ("i", "me"))
            ):
                cued.add(key)
        self.caps.update(caps)
        self.cued.update(cued)

    def names(self, mentions: TopCounter, floor: int) -> dict[str, tuple[str, int]]:
        """The words with enough evidence: case-folded word → (how to write it, messages mentioning it).

        Args:
            mentions: Messages containing each case-folded word (`StyleCounter.words`).
            floor: The least number of messages with evidence.
        """
        spellings: dict[str, str] = {}
        caps: dict[str, int] = {}
        if self.mid_caps <= TITLE_CASE_SHARE * self.mid_words:
            for spelling, count in self.caps.most_common():
                key = spelling.casefold()
                caps[key] = caps.get(key, 0) + count
                spellings.setdefault(key, spelling)  # the most frequent (ties by spelling)
        found: dict[str, tuple[str, int]] = {}
        for key in {*caps, *(k for k, _ in self.cued.most_common())}:
            seen = max(mentions[key], 1)
            by_caps = caps.get(key, 0) >= max(floor, NAME_CAPS_SHARE * seen)
            by_cue = self.cued[key] >= max(floor, NAME_CUE_SHARE * seen)
            if by_caps or by_cue:
                found[key] = (spellings.get(key, key.title()), seen)
        return found


def _possessor(word: str) -> str:
    """ "Jess's" → "Jess" (whose something it is)."""
    return word[:-2] if word.endswith(("'s", "'S")) and len(word) > 2 else word


class ProfileExtractor:
    """Streams one user's messages into counters (see the module doc). Feed it from one thread at a time.

    Args:
        lexicon: Stop-words, baseline frequencies and the gazetteer (loaded on first use: call from a thread).
    """

    def __init__(self, lexicon: Lexicon) -> None:
        self.lexicon = lexicon
        self.style = StyleCounter(stop_words=lexicon.stop_words(COUNTING_LANGUAGES))
        self.places = TopCounter(2_000)
        self.others = TopCounter(2_000)
        self.own_names = TopCounter(100)
        self.names = NameCounter()
        self.sample = ExampleSample()
        self._finder = PlaceFinder(lexicon.gazetteer(), lambda w: lexicon.frequency(w, ("en",)))

    def add_own(self, text: str, sender: str = "") -> None:
        """One message the user wrote (``sender``: their name in the export, if it has one)."""
        written = self.style.add(text)
        if not written:
            return
        if sender:
            self.own_names.add(sender)
        self.places.update(self._finder.find(written))
        self.names.add(text)
        self.sample.offer(text, len(written))

    def add_other(self, sender: str) -> None:
        """A message someone else sent the user (only who sent it counts)."""
        if sender:
            self.others.add(sender)

    def finish(self, memories: Sequence[MemoryFact], *, display_name: str, username: str) -> Extracted:
        """Combine the counters with the user's live memories into the persona (blocking: loads the language
        identifier and the user's languages' word lists)."""
        examples = self.sample.texts()
        languages = [
            {"code": code, "share": round(share, 3)}
            for code, share in identify_languages(examples[:LANGUAGE_SAMPLE])
            if share >= LANGUAGE_MIN_SHARE
        ][:3]
        codes = [str(lang["code"]) for lang in languages] or ["en"]
        stop = self.lexicon.stop_words([*codes, "en"])
        name = self._name(display_name, username)
        # Function words of the main language only: "no" opens "no worries" in English, but is "in the" in
        # Portuguese.
        style = self.style.summary(stop, self.lexicon.stop_words(codes[:1], top=FUNCTION_WORDS), languages)
        habits = {w for phrase in (*style["greetings"], *style["sign_offs"]) for w in phrase.split()}
        people = self._people(memories, name, stop | habits, codes)
        places = self._places(people)
        named = {w.casefold() for text in (*people, *places, name) for w in words_of(text)}
        # A word that mostly occurs inside one of the user's phrases is part of a saying ("no worries"), not a
        # topic; one that a phrase only sometimes holds ("all that hiking") still is.
        habits |= {
            w for phrase in style["phrases"] for w in phrase.split()
            if self.style.phrases[phrase] >= 0.6 * self.style.words[w]
        }
        interests = self._interests(codes, stop, named | habits)
        profile: dict[str, Any] = {
            "style": style,
            "interests": interests,
            "people": people,
            "places": places,
            "self_description": "",
        }
        profile["self_description"] = self_description(name, profile, memories)
        return Extracted(PersonaDoc(name, profile), examples, self.style.messages)

    def _name(self, display_name: str, username: str) -> str:
        if display_name.strip():
            return display_name.strip()
        for sender, _ in self.own_names.most_common(10):
            if sender.casefold() not in GENERIC_SENDERS:
                return sender
        return username

    def _people(
        self, memories: Sequence[MemoryFact], name: str, not_names: frozenset[str] | set[str], langs: list[str]
    ) -> list[str]:
        """Chat partners, then mentioned names and person-memory subjects (see the module doc).

        ``not_names``: the user's stop-words and the words of their greetings and sign-offs."""
        own = {n.casefold() for n, _ in self.own_names.most_common()} | {name.casefold()}
        own |= {w.casefold() for n in own for w in n.split()}
        people: list[str] = []
        for sender, _ in self.others.most_common(MAX_PEOPLE * 3):
            if sender.casefold() not in own and sender.casefold() not in GENERIC_SENDERS:
                people.append(sender)
        taken = {p.split()[0].casefold() for p in people if p.split()} | own
        floor = max(2, math.ceil(NAME_MIN_SHARE * self.style.messages))
        found = self.names.names(self.style.words, floor)
        places = {p.casefold() for p, _ in self.places.most_common()}
        cued = {key for key in found if self.names.cued[key] >= floor}
        ranked: dict[str, tuple[int, str]] = {
            key: (seen, written)
            for key, (written, seen) in found.items()
            if key not in taken and not _not_a_name(key, not_names) and (key not in places or key in cued)
        }
        for memory in memories:
            subject = (memory.subject or "").casefold().strip()
            if memory.kind != "person" or not subject or subject in taken or subject in ranked:
                continue
            if self._memory_name(subject, memory.text, not_names, langs, floor):
                ranked[subject] = (self.style.words[subject.split()[0]], subject.title())
        for _, written in sorted(ranked.values(), key=lambda sw: (-sw[0], sw[1])):
            people.append(written)
        return people[:MAX_PEOPLE]

    def _memory_name(
        self, subject: str, text: str, not_names: frozenset[str] | set[str], langs: list[str], floor: int
    ) -> bool:
        """Whether a person memory's subject is a name. The memory rules take a capitalised first word before
        "is/was/got/…" for a name ("Meeting got moved", "Friday was mad"), so that alone is no evidence: the
        subject also needs to be written capitalised inside the memory ("My friend Carla is a doctor"), or
        be an uncommon word (Zipf below `places.COMMON_ZIPF` in the user's languages) that the user's
        messages, mentioning it at least ``floor`` times without evidence, do not contradict. (Evidence in the
        messages has already made it a mentioned name.)"""
        words = subject.split()
        if not words or any(_not_a_name(w, not_names) for w in words):
            return False
        matches = list(WORD.finditer(text))
        for i, match in enumerate(matches):
            if (
                i
                and match.group().casefold() == words[0]
                and match.group()[0].isupper()
                and not text[matches[i - 1].end() : match.start()].strip(_INLINE)
            ):
                return True
        zipf = math.log10(max(self.lexicon.frequency(words[0], langs), 1e-12)) + 9
        return zipf < COMMON_ZIPF and self.style.words[words[0]] < floor

    def _places(self, people: list[str]) -> list[str]:
        people_words = {w.casefold() for p in people for w in p.split()}
        return [
            place for place, count in self.places.most_common(50) if count >= 2 and place.casefold() not in people_words
        ][:MAX_PLACES]

    def _interests(self, langs: list[str], stop: frozenset[str], named: set[str]) -> list[str]:
        floor = max(3, math.ceil(INTEREST_MIN_SHARE * self.style.messages))
        total = max(self.style.total_words, 1)
        scored: list[tuple[float, str]] = []
        for word, messages in self.style.words.most_common(5000):
            if messages < floor:
                break
            if len(word) < 3 or "'" in word or word in stop or word in SLANG or word in NOT_INTERESTS:
                continue
            if word in NOT_TOPICS:
                continue
            if word in named or is_laughter(word):
                continue
            ratio = (messages / total) / self.lexicon.frequency(word, langs)
            if ratio >= INTEREST_MIN_RATIO:
                scored.append((messages * math.log(ratio), word))
        scored.sort(key=lambda sw: (-sw[0], sw[1]))
        return [word for _, word in scored[:MAX_INTERESTS]]


def _not_a_name(word: str, not_names: frozenset[str] | set[str]) -> bool:
    """Words that are never a name, however they are written (see the module doc)."""
    return (
        len(word) < 2
        or not word.replace("-", "").replace("'", "").isalpha()
        or word in not_names
        or word in NOT_TOPICS
        or word in NOT_INTERESTS
        or word in SLANG
        or word in RELATION_WORDS
        or word in TITLES
        or word in GENERIC_SENDERS
        or is_laughter(word)
    )


def _listing(items: Sequence[str]) -> str:
    """ "a", "a and b", "a, b and c"."""
    if len(items) <= 1:
        return "".join(items)
    return ", ".join(items[:-1]) + " and " + items[-1]


def language_names(languages: Sequence[dict[str, Any]]) -> list[str]:
    """The profile's languages as English names (codes without a name stay codes)."""
    return [LANGUAGE_NAMES.get(str(lang["code"]), str(lang["code"])) for lang in languages]


def self_description(name: str, profile: dict[str, Any], memories: Sequence[MemoryFact]) -> str:
    """A short first-person description made only of the profile and the user's own memory statements."""
    sentences = [f"I'm {name}."]
    languages = language_names(profile["style"].get("languages", []))
    if len(languages) == 1:
        sentences.append(f"I write in {languages[0]}.")
    elif languages:
        sentences.append(f"I write in {_listing(languages)}.")
    if profile["interests"]:
        sentences.append(f"I often talk about {_listing(profile['interests'][:4])}.")
    if profile["people"]:
        sentences.append(f"People in my life: {_listing(profile['people'][:3])}.")
    if profile["places"]:
        sentences.append(f"Places in my life: {_listing(profile['places'][:3])}.")
    chosen = sorted(
        (m for m in memories if m.kind != "feeling" and 0 < len(m.text) <= SELF_MEMORY_MAX_CHARS),
        key=lambda m: (-m.importance, m.text),
    )[:SELF_MEMORIES]
    for memory in chosen:
        text = memory.text.strip()
        sentences.append(text if text[-1] in ".!?" else text + ".")
    return " ".join(sentences)
