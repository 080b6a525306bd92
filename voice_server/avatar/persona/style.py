"""Communication-style statistics over a stream of the user's own messages (sans-I/O, bounded memory).

`StyleCounter.add` takes one message at a time; only counters are kept, never the messages: length
histograms (exact percentiles from counts), shares of messages with each habit, and `TopCounter`s for
emoji, words, first/last words and phrases, each pruned to its most frequent entries when it grows past its
capacity. `StyleCounter.summary` turns them into the profile's ``style`` object once the user's languages are
known (their stop-words decide which phrases are phrases).

**Formality** is the share of formal signals among all formal and informal signals seen:
``F / (F + I)`` (0.5 when there is none), where each message adds

- formal: it starts with a capital letter; it ends with ``.``, ``!`` or ``?``; it uses a polite or formal
  word (`FORMAL_WORDS`: "regards", "sincerely", "kindly", "please", ...);
- informal: it starts in lower case; it has three or more words and no closing punctuation; it uses chat
  slang (`SLANG`: "lol", "haha", "gonna", "u", "btw", ...); an emoji; doubled ``!!``/``??``; a stretched
  word ("sooo"); a lower-case pronoun "i".

So 0 is texting-style casual and 1 is letter-style formal; the word lists are English (other languages
are judged by the structural signals only). Labels: ``casual`` below 0.4, ``formal`` from 0.6.
"""

from __future__ import annotations

import collections
import math
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import emoji as emoji_lib

WORD = re.compile(r"[^\W\d_]+(?:['’][^\W\d_]+)*")
MAX_WORDS_BUCKET = 200
MAX_CHARS_BUCKET = 2000
FORMAL_WORDS = frozenset({
    "regards", "sincerely", "kindly", "please", "dear", "appreciate", "grateful", "furthermore", "however",
    "therefore", "apologies", "apologise", "apologize", "cordially", "respectfully",
})
SLANG = frozenset({
    "lol", "lmao", "lmfao", "rofl", "haha", "hahaha", "hehe", "omg", "btw", "idk", "imo", "tbh", "u", "ur", "ya",
    "yeah", "yep", "yup", "nope", "gonna", "wanna", "gotta", "k", "kk", "thx", "pls", "plz", "cuz", "coz", "xx",
    "xoxo", "ok", "okay", "dunno", "gimme", "ain't", "y'all", "bro", "dude", "nah", "wtf", "smh", "brb", "ttyl",
})
_STRETCHED = re.compile(r"([^\W\d_])\1\1", re.IGNORECASE)
_LAUGHTER = re.compile(r"^(?:(?:ha)+h?|(?:he)+h?|(?:ja)+|(?:ks)+|k{3,}|(?:rs)+|(?:xa)+)$")
CLOSING = ".!?…"
FIRST_LAST_MIN_WORDS = 3  # greetings and sign-offs are counted in messages at least this long


def words_of(text: str) -> list[str]:
    """The words of ``text`` as written (letters, with inner apostrophes)."""
    return WORD.findall(text)


def is_laughter(word: str) -> bool:
    """ "haha", "hehehe", "kkkk", "rsrs", "jajaja": not words anyone has an interest in."""
    return bool(_LAUGHTER.match(word))


class TopCounter:
    """A counter that keeps at most about ``2 * capacity`` keys: when it grows past that, it keeps only the
    ``capacity`` most frequent (ties by key, so the result does not depend on dict order).

    Anything that occurs more often than once in ``capacity`` additions survives pruning; the rare tail is
    approximate, which is all the profile uses it for (the top few).
    """

    __slots__ = ("capacity", "counts")

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self.counts: collections.Counter[str] = collections.Counter()

    def add(self, key: str, n: int = 1) -> None:
        self.counts[key] += n
        self._bound()

    def update(self, keys: Iterable[str]) -> None:
        self.counts.update(keys)
        self._bound()

    def _bound(self) -> None:
        if len(self.counts) <= 2 * self.capacity:
            return
        # Keys seen once are most of a long tail: dropping them first is linear and usually enough.
        kept = {key: count for key, count in self.counts.items() if count > 1}
        if len(kept) > self.capacity:
            kept = dict(sorted(kept.items(), key=lambda kv: (-kv[1], kv[0]))[: self.capacity])
        self.counts = collections.Counter(kept)

    def most_common(self, n: int | None = None) -> list[tuple[str, int]]:
        """The ``n`` most frequent keys, highest count first, ties by key."""
        ranked = sorted(self.counts.items(), key=lambda kv: (-kv[1], kv[0]))
        return ranked if n is None else ranked[:n]

    def __getitem__(self, key: str) -> int:
        return self.counts.get(key, 0)


def percentile(histogram: Sequence[int], q: float) -> int:
    """The ``q`` quantile (0..1) of values given as a histogram (``histogram[v]`` = how many had value v)."""
    total = sum(histogram)
    if not total:
        return 0
    rank = max(1, math.ceil(q * total))  # nearest rank
    seen = 0
    for value, count in enumerate(histogram):
        seen += count
        if seen >= rank:
            return value
    return len(histogram) - 1


@dataclass(slots=True)
class StyleCounter:
    """Counts a user's writing habits message by message (see the module doc). Not thread-safe: feed it
    from one thread at a time."""

    stop_words: frozenset[str] = frozenset()  # filtered while counting (see `lexicon.COUNTING_LANGUAGES`)
    messages: int = 0
    with_letters: int = 0
    with_first_letter: int = 0
    no_capitals: int = 0
    starts_lower: int = 0
    with_emoji: int = 0
    emoji_total: int = 0
    exclamation: int = 0
    question: int = 0
    ellipsis: int = 0
    full_stop: int = 0
    formal_signals: int = 0
    informal_signals: int = 0
    long_messages: int = 0  # messages with at least FIRST_LAST_MIN_WORDS words
    total_words: int = 0
    word_hist: list[int] = field(default_factory=lambda: [0] * (MAX_WORDS_BUCKET + 1))
    char_hist: list[int] = field(default_factory=lambda: [0] * (MAX_CHARS_BUCKET + 1))
    emoji: TopCounter = field(default_factory=lambda: TopCounter(200))
    words: TopCounter = field(default_factory=lambda: TopCounter(20_000))  # messages containing each word
    phrases: TopCounter = field(default_factory=lambda: TopCounter(20_000))  # 2-3 word n-grams
    first: TopCounter = field(default_factory=lambda: TopCounter(2_000))
    last: TopCounter = field(default_factory=lambda: TopCounter(2_000))

    def add(self, text: str) -> list[str]:
        """Count one message; returns its words as written (for the other extractors)."""
        text = text.strip()
        if not text:
            return []
        self.messages += 1
        written = words_of(text)
        words = [w.casefold().replace("’", "'") for w in written]
        self.total_words += len(words)
        self.word_hist[min(len(words), MAX_WORDS_BUCKET)] += 1
        self.char_hist[min(len(text), MAX_CHARS_BUCKET)] += 1
        self._letters(text)
        self._punctuation(text)
        emoji_count = self._emoji(text)
        self._formality(text, written, words, emoji_count)
        self._words(words)
        return written

    def _letters(self, text: str) -> None:
        first = next((c for c in text if c.isalpha()), None)
        if first is None:
            return
        self.with_letters += 1
        if text.lower() == text:  # no capital letter anywhere
            self.no_capitals += 1
        if text[0].isalpha():  # a message that opens with a word, not with an emoji, digit or quote
            self.with_first_letter += 1
            if text[0].islower():
                self.starts_lower += 1

    def _punctuation(self, text: str) -> None:
        self.exclamation += "!" in text
        self.question += "?" in text
        self.ellipsis += "..." in text or "…" in text
        self.full_stop += text.endswith(".") and not text.endswith("..")

    def _emoji(self, text: str) -> int:
        if text.isascii():
            return 0
        found = [e["emoji"] for e in emoji_lib.emoji_list(text)]
        if found:
            self.with_emoji += 1
            self.emoji_total += len(found)
            self.emoji.update(found)
        return len(found)

    def _formality(self, text: str, written: list[str], words: list[str], emoji_count: int) -> None:
        formal = informal = 0
        if text[0].isupper():
            formal += 1
        elif text[0].islower():
            informal += 1
        if text[-1] in CLOSING:
            formal += 1
        elif len(words) >= FIRST_LAST_MIN_WORDS:
            informal += 1
        unique = set(words)
        formal += bool(unique & FORMAL_WORDS)
        informal += bool(unique & SLANG) or any(is_laughter(w) for w in unique)
        informal += emoji_count > 0
        informal += "!!" in text or "??" in text or "?!" in text
        informal += bool(_STRETCHED.search(text))
        informal += "i" in written  # the pronoun written lower case (English)
        self.formal_signals += formal
        self.informal_signals += informal

    def _words(self, words: list[str]) -> None:
        stop = self.stop_words
        self.words.update(set(words))
        grams = {
            " ".join(words[i : i + n])
            for n in (2, 3)
            for i in range(len(words) - n + 1)
            if not all(w in stop for w in words[i : i + n])
        }
        self.phrases.update(grams)
        if len(words) >= FIRST_LAST_MIN_WORDS:
            self.long_messages += 1
            self.first.update((words[0], " ".join(words[:2])))
            self.last.update((words[-1], " ".join(words[-2:])))

    # ------------------------------------------------------------------------------------------ summary

    def summary(
        self, stop_words: frozenset[str], function_words: frozenset[str], languages: list[dict[str, Any]]
    ) -> dict[str, Any]:
        """The profile's ``style`` object. ``stop_words`` are those of the user's languages, ``function_words``
        their most frequent few ("the", "a", "de"), which do not open a phrase worth quoting."""
        n = max(self.messages, 1)
        signals = self.formal_signals + self.informal_signals
        formality = self.formal_signals / signals if signals else 0.5
        greetings = _positional(self.first, self.words, self.phrases, self.long_messages, stop_words)
        sign_offs = _positional(self.last, self.words, self.phrases, self.long_messages, stop_words)
        return {
            "messages": self.messages,
            "words_per_message": {"median": percentile(self.word_hist, 0.5), "p90": percentile(self.word_hist, 0.9)},
            "chars_per_message": {"median": percentile(self.char_hist, 0.5), "p90": percentile(self.char_hist, 0.9)},
            "capitalisation": {
                "no_capitals": _share(self.no_capitals, self.with_letters),
                "starts_lower_case": _share(self.starts_lower, self.with_first_letter),
            },
            "emoji": {
                "per_message": round(self.emoji_total / n, 3),
                "messages_with_emoji": _share(self.with_emoji, self.messages),
                "top": [e for e, _ in self.emoji.most_common(5)],
            },
            "punctuation": {
                "exclamation": _share(self.exclamation, self.messages),
                "question": _share(self.question, self.messages),
                "ellipsis": _share(self.ellipsis, self.messages),
                "trailing_full_stop": _share(self.full_stop, self.messages),
            },
            "formality": {"score": round(formality, 3), "label": _formality_label(formality)},
            "languages": languages,
            "greetings": greetings,
            "sign_offs": sign_offs,
            "phrases": self.top_phrases(stop_words, function_words, greetings=greetings, sign_offs=sign_offs),
        }

    def top_phrases(
        self,
        stop_words: frozenset[str],
        function_words: frozenset[str],
        *,
        greetings: Sequence[str] = (),
        sign_offs: Sequence[str] = (),
        limit: int = 5,
    ) -> list[str]:
        """The user's most frequent 2-3 word phrases (in at least 2 % of their messages, three at least) that
        are not only stop-words, do not open with a function word, and are not a greeting or sign-off with a
        word attached ("hey what", "game cheers"). A phrase inside a longer chosen one that is nearly as
        frequent is dropped in its favour."""
        floor = max(3, math.ceil(0.02 * self.messages))
        openers = {w for g in greetings for w in g.split()[:1]}
        closers = {w for s in sign_offs for w in s.split()[-1:]}

        def keep(phrase: str) -> bool:
            words = phrase.split()
            return (
                phrase not in greetings
                and phrase not in sign_offs
                and words[0] not in function_words
                and words[0] not in openers
                and words[-1] not in closers
                and not all(w in stop_words for w in words)
                and not any(is_laughter(w) for w in words)
            )

        candidates = [(p, c) for p, c in self.phrases.most_common(500) if c >= floor and keep(p)]
        chosen: list[tuple[str, int]] = []
        for phrase, count in sorted(candidates, key=lambda pc: (-pc[1], -len(pc[0].split()), pc[0])):
            if any(phrase in longer and count <= other * 1.25 for longer, other in chosen):
                continue
            chosen = [(p, c) for p, c in chosen if not (p in phrase and c <= count * 1.25)]
            chosen.append((phrase, count))
            if len(chosen) >= limit:
                break
        return [p for p, _ in chosen]


def _share(part: int, whole: int) -> float:
    return round(part / whole, 3) if whole else 0.0


def _formality_label(score: float) -> str:
    return "casual" if score < 0.4 else "formal" if score >= 0.6 else "neutral"


def _positional(
    at: TopCounter, words: TopCounter, phrases: TopCounter, messages: int, stop_words: frozenset[str]
) -> list[str]:
    """Words or word pairs that open (or close) many messages and mostly stand there: at least 10 % (pairs:
    15 %) of the messages long enough to count, three at least, and over half of their occurrences there.
    A pair replaces a single word it contains when it accounts for most of it ("good morning" over "good");
    otherwise it is a detail of that word and left out ("worries cheers" beside "cheers")."""
    found: list[tuple[str, int]] = []
    for key, count in at.most_common(50):
        parts = key.split()
        floor = max(3, math.ceil((0.1 if len(parts) == 1 else 0.15) * messages))
        if count < floor or all(p in stop_words for p in parts) or any(is_laughter(p) for p in parts):
            continue
        anywhere = words[key] if len(parts) == 1 else phrases[key]
        if anywhere and count / anywhere >= 0.5:
            found.append((key, count))
    chosen: list[str] = []
    for key, count in found:
        parts = key.split()
        if len(parts) == 2:
            if any(k in parts and count < 0.6 * c for k, c in found):
                continue
        elif any(len(p.split()) == 2 and key in p.split() and c >= 0.6 * count for p, c in found):
            continue
        chosen.append(key)
    return chosen[:3]
