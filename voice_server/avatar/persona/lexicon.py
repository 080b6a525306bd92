"""Offline language resources for persona extraction: stop-words, a general word-frequency baseline, a
language identifier and a gazetteer of places. All ship inside PyPI packages; nothing is fetched.

- **Word frequencies** (`wordfreq` 3.1.1, Apache-2.0; data CC-BY-SA): the "small" list of a language (~30 k
  words for English). Its most frequent `STOP_WORDS` words are that language's stop-words; the frequencies are
  the baseline that tells a user's *interests* (words they use far more often than people in general) from
  words everybody uses.
- **Language identification** (`py3langid` 0.4.0, BSD-3: langid.py's naive Bayes over byte n-grams, 97
  languages, numpy only). ~13 µs a message, but its model costs ~70 MB of RAM, so it is loaded for one build
  and dropped afterwards (`identify_languages`), never kept by the server.
- **Places** (`geotext` 0.4.0, MIT; GeoNames data, CC-BY 3.0): the 23 k cities of more than 15,000 people
  and the world's countries. Only the data files are used (`Gazetteer`); the matching rules are ours
  (`voice_server.avatar.persona.places`).

- **Chat words** (`NOT_TOPICS`): English contractions with and without their apostrophe (the bare forms
  generated from the contractions), chat fillers and sign-offs, and calendar words: never an interest or a
  name, whatever the frequency baseline says.

Everything here is blocking (file reads, decompression): call it from a worker thread. A `Lexicon` is
thread-safe; it keeps what it loaded for its own lifetime, bounded by `MAX_LANGUAGES` frequency lists.
"""

from __future__ import annotations

import collections
import threading
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from importlib import resources
from typing import Any

STOP_WORDS = 100  # the most frequent words of a language that count as its stop-words
# Languages whose stop-words are filtered while counting, before the user's languages are known: the n-gram
# counters would otherwise fill up with "i am", "de la", "is het" and prune real phrases.
COUNTING_LANGUAGES = ("en", "pt", "es", "fr", "de", "it", "nl")
MAX_LANGUAGES = 8  # frequency lists kept in memory (~3-4 MB each)
FREQUENCY_FLOOR = 5e-7  # the baseline for a word absent from the "small" lists (they stop at 1e-6)
MIN_CONFIDENCE = 0.6  # py3langid's normalised probability below which a message's language is not counted
GAZETTEER_ALTERNATES_MIN_POPULATION = 100_000  # other-language names ("Lisboa") only for larger cities
COUNTRY_POPULATION = 10_000_000  # countries rank like the largest cities

# ---------------------------------------------------------------------------------------- English chat words
# Words that are never a topic or a name, whatever a frequency test says about them. Chat writers drop
# apostrophes ("im", "dont", "ill", "hes"), and the bare forms are rare in wordfreq's general text, so a user
# who types them a lot looks "interested" in them; capitalised by a phone at a sentence start ("Ive", "Im")
# they look like names. Every contraction is therefore listed once, with its apostrophe, and its bare form is
# derived (`APOSTROPHE_FREE`). Some bare forms are also real words ("were", "well", "ill", "its", "lets",
# "shell", "shed", "wed", "hell", "cant", "wont"): they are lost as interests and names, which costs little
# (they are everyday words or rare topics) against listing "ill" or "were" as what someone cares about.
_CONTRACTED_BY_SUBJECT = {
    "i": ("m", "ve", "ll", "d"),
    "you": ("re", "ve", "ll", "d"),
    "we": ("re", "ve", "ll", "d"),
    "they": ("re", "ve", "ll", "d"),
    "he": ("s", "ll", "d"),
    "she": ("s", "ll", "d"),
    "it": ("s", "ll", "d"),
    "that": ("s", "ll", "d"),
    "there": ("s", "re", "ll", "d", "ve"),
    "here": ("s",),
    "what": ("s", "re", "ll", "d", "ve"),
    "who": ("s", "re", "ll", "d", "ve"),
    "where": ("s", "d", "ve"),
    "when": ("s", "d"),
    "why": ("s", "d"),
    "how": ("s", "d", "re"),
    "let": ("s",),
    "everyone": ("s",),
    "nobody": ("s",),
    "somebody": ("s",),
    "someone": ("s",),
}
_NEGATABLE = tuple("do does did is are was were have has had could should would must might need dare ought".split())
_HAVE_CONTRACTIBLE = ("could", "should", "would", "must", "might", "may")  # could've
_IRREGULAR_CONTRACTIONS = tuple(
    "can't won't shan't ain't y'all ma'am o'clock 'cause 'em 'til y'know c'mon g'day gov't couldn't've "
    "shouldn't've wouldn't've i'd've".split()
)


def _contractions() -> frozenset[str]:
    forms = {f"{subject}'{ending}" for subject, endings in _CONTRACTED_BY_SUBJECT.items() for ending in endings}
    forms.update(f"{verb}n't" for verb in _NEGATABLE)
    forms.update(f"{verb}'ve" for verb in _HAVE_CONTRACTIBLE)
    forms.update(_IRREGULAR_CONTRACTIONS)
    return frozenset(form.strip("'") for form in forms)


CONTRACTIONS = _contractions()  # with their apostrophe ("i'm", "don't", "cause")
APOSTROPHE_FREE = frozenset(form.replace("'", "") for form in CONTRACTIONS)  # "im", "dont", "ill", "were"
# Fillers, sign-offs, abbreviations and spellings of chat (laughter is matched by pattern: `style.is_laughter`).
CHAT_WORDS = frozenset(
    (
        "laters later latr l8r cya seeya ttyl ttfn bye byee night nite nighty gn gm mornin morning "
        "evening hiya heya hey hi hello yo sup wassup lol lmao lmfao rofl omg omfg wtf smh btw brb "
        "idk imo imho tbh fyi lmk ikr ngl fr rn asap nvm np ty thx tx ta pls plz soz gonna wanna "
        "gotta lemme gimme kinda sorta dunno innit tho thru cos coz cuz bc ya yah yeh yea yeah ye yep "
        "yup aye nah naw nope ok okay okey okie kk k hmm hm mm mmm ugh urgh argh ah ahh oh ooh aw aww "
        "awww wow yay woo woohoo oops whoops meh eh huh erm um umm uh xx xxx xo xoxo probs prob def "
        "defo obvs obv tmrw tmr tomoz tonite mate babe hun hon bud buddy dude bro fam guys cheers "
        "thanks thank sorry please yes no sure cool nice great lovely u ur r y n b c"
    ).split()
)
WEEKDAYS = ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday")
MONTHS = tuple("january february march april may june july august september october november december".split())
CALENDAR_WORDS = frozenset(
    {
        *WEEKDAYS,
        *(f"{day}s" for day in WEEKDAYS),
        *MONTHS,
        *(
            "mon tue tues wed thu thur thurs fri sat sun jan feb mar apr jun jul aug sep sept oct nov dec "
            "today tomorrow tonight yesterday weekend weekday week month year christmas xmas easter "
            "halloween birthday bday anniversary holiday holidays"
        ).split(),
    }
)
# Not a topic of anyone's: the union above (callers add their languages' stop-words).
NOT_TOPICS = CONTRACTIONS | APOSTROPHE_FREE | CHAT_WORDS | CALENDAR_WORDS


@dataclass(frozen=True, slots=True)
class Place:
    """A gazetteer entry: how to write it and how many people live there (ranks ambiguous names)."""

    name: str
    population: int
    country: bool = False


class Gazetteer:
    """Place names by their case-folded spelling (names of up to `MAX_WORDS` words).

    Args:
        places: ``(spelling, Place)`` pairs; when two places share a spelling the more populous one wins.
    """

    MAX_WORDS = 3

    def __init__(self, places: Iterable[tuple[str, Place]]) -> None:
        self._by_name: dict[str, Place] = {}
        self.first_words: set[str] = set()  # first words of the names of more than one word
        for spelling, place in places:
            key = " ".join(spelling.casefold().split())
            if len(key) < 3 or len(key.split()) > self.MAX_WORDS:
                continue
            if " " in key:
                self.first_words.add(key.split(" ", 1)[0])
            known = self._by_name.get(key)
            if known is None or place.population > known.population:
                self._by_name[key] = place

    def get(self, key: str) -> Place | None:
        """The place spelled ``key`` (case-folded, single spaces), if any."""
        return self._by_name.get(key)

    def __len__(self) -> int:
        return len(self._by_name)


def _latin_name(name: str) -> bool:
    """Whether ``name`` looks like a proper name in Latin script (alternate names also hold codes and scripts
    the matcher does not need)."""
    return (
        len(name) >= 4
        and name[0].isupper()
        and all(c.isalpha() or c in " -'" for c in name)
        and all(ord(c) < 0x250 for c in name)
    )


def load_gazetteer() -> Gazetteer:
    """Read geotext's GeoNames files (~0.5 s, ~15 MB): cities with their name, ASCII name and, for cities
    over `GAZETTEER_ALTERNATES_MIN_POPULATION`, their Latin-script alternate names; and country names."""
    data = resources.files("geotext") / "data"

    def entries() -> Iterable[tuple[str, Place]]:
        with (data / "cities15000.txt").open(encoding="utf-8") as f:
            for line in f:
                cols = line.rstrip("\n").split("\t")
                if len(cols) < 15:
                    continue
                population = int(cols[14] or 0)
                place = Place(cols[1], population)
                yield cols[1], place
                if cols[2] != cols[1]:
                    yield cols[2], place
                if population >= GAZETTEER_ALTERNATES_MIN_POPULATION:
                    for alternate in cols[3].split(","):
                        if _latin_name(alternate):
                            yield alternate, Place(alternate, population)
        with (data / "countryInfo.txt").open(encoding="utf-8-sig") as f:
            for line in f:
                if line.startswith("#"):
                    continue
                cols = line.rstrip("\n").split("\t")
                if len(cols) > 4 and cols[4]:
                    yield cols[4], Place(cols[4], COUNTRY_POPULATION, country=True)

    return Gazetteer(entries())


def _frequency_list(lang: str) -> list[list[str]] | None:
    """wordfreq's "small" list for ``lang`` as buckets of words, most frequent first (None: no list)."""
    import wordfreq

    path = wordfreq.available_languages("small").get(lang)
    if path is None:
        return None
    buckets: list[list[str]] = wordfreq.read_cBpack(path)
    return buckets


class Lexicon:
    """Loads and keeps the resources above on first use (thread-safe, blocking)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._frequencies: collections.OrderedDict[str, dict[str, float]] = collections.OrderedDict()
        self._ranked: dict[str, tuple[str, ...]] = {}  # each language's `STOP_WORDS` most frequent words
        self._gazetteer: Gazetteer | None = None

    def _load(self, lang: str) -> dict[str, float]:
        """The frequency dict of ``lang`` (empty when wordfreq has no list for it); caller holds the lock."""
        cached = self._frequencies.get(lang)
        if cached is not None:
            self._frequencies.move_to_end(lang)
            return cached
        import wordfreq

        buckets = _frequency_list(lang) or []
        freqs: dict[str, float] = {}
        stop: list[str] = []
        for centibels, words in enumerate(buckets):
            freq = wordfreq.cB_to_freq(-centibels)
            for word in words:
                freqs.setdefault(word, freq)
                if len(stop) < STOP_WORDS:
                    stop.append(word)
        self._ranked[lang] = tuple(stop)
        self._frequencies[lang] = freqs
        while len(self._frequencies) > MAX_LANGUAGES:
            self._frequencies.popitem(last=False)
        return freqs

    def stop_words(self, langs: Iterable[str], top: int = STOP_WORDS) -> frozenset[str]:
        """The union of the ``top`` most frequent words (at most `STOP_WORDS`) of each of ``langs``."""
        out: set[str] = set()
        with self._lock:
            for lang in langs:
                if lang not in self._ranked:
                    self._load(lang)
                out.update(self._ranked.get(lang, ())[:top])
        return frozenset(out)

    def frequency(self, word: str, langs: Sequence[str]) -> float:
        """How often ``word`` occurs in general text of ``langs`` (the highest of them; `FREQUENCY_FLOOR` when
        none of their lists has it)."""
        best = FREQUENCY_FLOOR
        with self._lock:
            for lang in langs:
                best = max(best, self._load(lang).get(word, 0.0))
        return best

    def gazetteer(self) -> Gazetteer:
        """The place names (loaded once)."""
        with self._lock:
            if self._gazetteer is None:
                self._gazetteer = load_gazetteer()
            return self._gazetteer


def classify_each(texts: Iterable[str]) -> list[str | None]:
    """Each text's language (ISO 639-1), or ``None`` where py3langid's normalised probability for its best
    guess is under `MIN_CONFIDENCE` (one-word "ok"/"lol" messages say nothing about a language). The model
    is loaded for this call only (~0.5 s, ~70 MB) and released when it returns."""
    from py3langid.langid import MODEL_FILE, LanguageIdentifier

    identifier: Any = LanguageIdentifier.from_model_file(MODEL_FILE, norm_probs=True)
    found: list[str | None] = []
    for text in texts:
        lang, confidence = identifier.classify(text)
        found.append(str(lang) if confidence >= MIN_CONFIDENCE else None)
    return found


def identify_languages(texts: Iterable[str]) -> list[tuple[str, float]]:
    """The languages of ``texts`` with the share of confidently identified texts in each, largest first
    (each text is classified on its own, see `classify_each`)."""
    counts = collections.Counter(lang for lang in classify_each(texts) if lang is not None)
    total = sum(counts.values())
    if not total:
        return []
    return sorted(((lang, n / total) for lang, n in counts.items()), key=lambda item: (-item[1], item[0]))
