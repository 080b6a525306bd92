"""The persona profile: what one pass over a user's messages and memories says about them (sans-I/O).

`ProfileExtractor` is fed the user's own messages (`add_own`) and the senders of everyone else's
(`add_other`), one at a time, keeping only bounded counters and the example sample; `finish` combines them
with the user's memories into a `PersonaDoc`: the ``profile`` object of ``GET /v1/persona`` (``style``,
``interests``, ``people``, ``places``, ``self_description``), the name the avatar goes by, and the example
texts to embed. Same input, same output: every ranking breaks ties by text.

- **Interests**: words that appear in at least `INTEREST_MIN_SHARE` of the messages (three at least), are
  not stop-words, slang, laughter, names, or everyday chat words (`NOT_INTERESTS`), and are used at least
  `INTEREST_MIN_RATIO` times more often than in general text of the user's languages (wordfreq baseline);
  ranked by ``messages containing it × ln(ratio)``.
- **People**: the senders the user exchanged messages with, by number of messages, then the subjects of
  ``person`` memories not already named.
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

from voice_server.avatar.persona.lexicon import COUNTING_LANGUAGES, Lexicon, identify_languages
from voice_server.avatar.persona.places import PlaceFinder
from voice_server.avatar.persona.sample import ExampleSample
from voice_server.avatar.persona.style import SLANG, StyleCounter, TopCounter, is_laughter, words_of

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
        people = self._people(memories, name)
        places = self._places(people)
        # Function words of the main language only: "no" opens "no worries" in English, but is "in the" in
        # Portuguese.
        style = self.style.summary(stop, self.lexicon.stop_words(codes[:1], top=FUNCTION_WORDS), languages)
        named = {w.casefold() for text in (*people, *places, name) for w in words_of(text)}
        habits = {w for phrase in (*style["greetings"], *style["sign_offs"]) for w in phrase.split()}
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

    def _people(self, memories: Sequence[MemoryFact], name: str) -> list[str]:
        own = {n.casefold() for n, _ in self.own_names.most_common()} | {name.casefold()}
        people: list[str] = []
        for sender, _ in self.others.most_common(MAX_PEOPLE * 3):
            if sender.casefold() not in own and sender.casefold() not in GENERIC_SENDERS:
                people.append(sender)
        first_names = {p.split()[0].casefold() for p in people if p.split()}
        subjects = sorted({m.subject for m in memories if m.kind == "person" and m.subject})
        for subject in subjects:
            if subject.casefold() not in first_names and subject.casefold() not in own:
                people.append(subject.title())
                first_names.add(subject.casefold())
        return people[:MAX_PEOPLE]

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
            if word in named or is_laughter(word):
                continue
            ratio = (messages / total) / self.lexicon.frequency(word, langs)
            if ratio >= INTEREST_MIN_RATIO:
                scored.append((messages * math.log(ratio), word))
        scored.sort(key=lambda sw: (-sw[0], sw[1]))
        return [word for _, word in scored[:MAX_INTERESTS]]


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
