"""How far a set of replies is from a person's real replies in *style*, not content (pure, deterministic).

Used to decide whether a tuned model writes more like the person than the prompt-only avatar: profile the
person's held-out real replies once (`style_profile`), profile each candidate's generated replies, and compare
with `style_distance`; the smaller ``total`` wins. Both sides should be a few hundred messages: every part is a
frequency or a share, so two samples of the same writer differ by sampling noise (measured on the synthetic
history in ``bench/data/training_history``: 0.07 in ``total`` for 200 vs 200 messages, 0.03 for 1,500 vs 1,500,
against 0.43 for that person vs other writers), and a sample of a dozen messages is mostly noise.

A profile holds six kinds of habit, each measured so that topic words do not count:

- ``char_ngrams``: character 1-3-grams of the messages' *shape* (upper-case letters ``A``, lower-case ``a``,
  digits ``0``, emoji ``E``, whitespace a space, punctuation as written; letter runs collapsed; ``^``/``$`` at
  the message's ends), so "Hey, I'm in." (``^Aa, A'a a.$``) and "hey im in" (``^a a a$``) differ and
  "bikes" vs "dogs" do not; plus character 3-grams of the *masked* text, where every word that is not a
  `FUNCTION_WORDS` entry becomes ``*`` and function words stay as written ("^dont * *, haha$"): which small
  words a person uses, how they spell and case them, and the punctuation around them (text distortion for
  topic-independent authorship, after Stamatatos 2013).
- ``function_words``: the share of each `FUNCTION_WORDS` entry among all words (lower-cased; "don't" and
  "dont" are separate entries, so the apostrophe habit shows here too).
- ``length``: words per message: mean, median and a log2-bucket histogram.
- ``capitalisation``: shares of messages that start upper-case and that have no capital at all, and the share
  of the pronoun "I" (also "I'm", "Im", "I've", ...) written with a capital.
- ``punctuation``: shares of messages ending in ``.`` (not an ellipsis), containing ``?``, ``!`` and an
  ellipsis (``...`` or ``…``); commas and apostrophes per word.
- ``emoji``: share of messages with an emoji, emoji per message, and which emoji (a frequency profile).

`style_distance` compares two profiles part by part, each part in [0, 1] (0 = the same habits):

- frequency profiles (n-grams, function words, emoji choice): ``1 - cosine`` of the square roots of the
  relative frequencies, i.e. one minus the Bhattacharyya coefficient; the square root keeps the few most
  frequent entries ("a", " ") from deciding alone;
- the length histogram: Jensen-Shannon divergence (base 2, so in [0, 1]);
- a share or rate ``a`` vs ``b``: ``|a - b| / max(a, b, floor)`` (`_gap`): a relative difference for
  habits common in either sample, an absolute one scaled by ``floor`` for habits rare in both, so "never" vs
  "1 % of the time" is not as far apart as "never" vs "always"; mean and median length by the same rule;
- a part with several measures is their plain mean; a measure that is undefined in either profile (no pronoun
  "I" at all; no emoji to compare choice) is left out of its part's mean.

``total`` is the `WEIGHTS`-weighted mean of the six parts, so it is in [0, 1] too. Everything is computed from
sorted keys and fixed lists: the same inputs give the same floats on every run.
"""

from __future__ import annotations

import collections
import math
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

import emoji as emoji_lib
import numpy as np
import numpy.typing as npt

# ~150 English function words and the chat words that mark a texting style. Contractions appear with and
# without the apostrophe: which form a person writes is one of their habits.
FUNCTION_WORDS: tuple[str, ...] = tuple(
    dict.fromkeys(
        """
        a about above after again against all also am an and any are as at be because been before being
        below between both but by can could did do does doing down during each either else even ever every
        few for from further had has have having he her here hers herself him himself his how i if in into
        is it its itself just least less like many may me might mine more most much must my myself neither
        never no nor not now of off often on once only or other our ours out over own quite rather really
        same shall she should since so some still such than that the their them then there these they this
        those though through to too under until up upon us very was we well were what when where whether
        which while who whom whose why will with within without would yet you your yours yourself
        don't dont can't cant won't wont didn't didnt doesn't doesnt isn't isnt wasn't wasnt haven't havent
        couldn't couldnt wouldn't wouldnt shouldn't shouldnt i'm im i'll i've ive i'd you're youre you'll
        you've it's he's hes she's shes that's thats there's theres what's whats let's lets we're we'll
        they're theyre
        lol haha lmao omg u ur ya yeah yep yes nah nope ok okay k gonna wanna gotta btw tbh idk pls plz thx
        thanks cheers mate x xx oh ah hey hi hello sure cool nice bit got get
        """.split()
    )
)
_FUNCTION_INDEX = {word: i for i, word in enumerate(FUNCTION_WORDS)}
_PRONOUN_I = frozenset({"i", "i'm", "im", "i'll", "i've", "ive", "i'd"})

PARTS: tuple[str, ...] = ("char_ngrams", "function_words", "length", "capitalisation", "punctuation", "emoji")
# Weights of `StyleDistance.total`: the profiles carry the most evidence (hundreds of features each), the
# scalar habits less; emoji least, because many people rarely use any and then the part is mostly noise.
WEIGHTS: Mapping[str, float] = {
    "char_ngrams": 0.25,
    "function_words": 0.20,
    "length": 0.15,
    "capitalisation": 0.15,
    "punctuation": 0.15,
    "emoji": 0.10,
}
LENGTH_BUCKETS = 9  # words per message in log2 buckets: 0, 1, 2-3, 4-7, ..., 64-127, 128+
SHARE_FLOOR = 0.25  # see `_gap`: shares of messages under this are compared on a scale of a quarter
PER_WORD_FLOOR = 0.05  # commas/apostrophes per word: compared on a scale of one per 20 words at least
LENGTH_FLOOR = 3.0  # words: mean/median lengths under 3 words are compared on a 3-word scale

_WORD = re.compile(r"[^\W\d_]+(?:'[^\W\d_]+)*")
_TOKEN = re.compile(r"[^\W_]+(?:'[^\W_]+)*")  # words and numbers: the length in words counts "7" as one
_LAUGHTER = re.compile(r"^(?:ha){2,}h?$|^(?:he){2,}h?$")
_ELLIPSIS = re.compile(r"\.\.\.|…")
_APOSTROPHES = str.maketrans({"’": "'", "‘": "'", "ʼ": "'"})
FloatArray = npt.NDArray[np.float64]


@dataclass(frozen=True, slots=True)
class StyleProfile:
    """The style habits of a set of messages (see the module docstring). Build with `style_profile`.

    Frequency profiles are relative frequencies (each sums to 1, or is empty when nothing was counted);
    shares are of messages; ``capital_i`` is None when no pronoun "I" occurs.
    """

    messages: int
    shape_ngrams: Mapping[str, float]
    masked_ngrams: Mapping[str, float]
    function_words: tuple[float, ...]  # share of all words, aligned with `FUNCTION_WORDS`
    words_mean: float
    words_median: float
    length_histogram: tuple[float, ...]  # `LENGTH_BUCKETS` shares of messages
    starts_upper: float
    no_capitals: float
    capital_i: float | None
    ends_full_stop: float
    has_question: float
    has_exclamation: float
    has_ellipsis: float
    commas_per_word: float
    apostrophes_per_word: float
    with_emoji: float
    emoji_per_message: float
    emoji_choice: Mapping[str, float]


@dataclass(frozen=True, slots=True)
class StyleDistance:
    """How far two profiles are apart: ``parts`` per `PARTS` entry and their `WEIGHTS`-weighted mean
    ``total``, all in [0, 1], 0 = the same habits."""

    total: float
    parts: dict[str, float]


def style_profile(texts: Sequence[str]) -> StyleProfile:
    """The style profile of ``texts`` (one message each; blank ones are ignored).

    Raises:
        ValueError: no non-blank message.
    """
    messages = [t.translate(_APOSTROPHES).strip() for t in texts]
    messages = [m for m in messages if m]
    if not messages:
        raise ValueError("style_profile needs at least one non-blank message")
    n = len(messages)
    shape: collections.Counter[str] = collections.Counter()
    masked: collections.Counter[str] = collections.Counter()
    function_counts = np.zeros(len(FUNCTION_WORDS), dtype=np.float64)
    emoji_counts: collections.Counter[str] = collections.Counter()
    lengths: list[int] = []
    words_total = starts_upper = no_capitals = i_upper = i_total = 0
    ends_full_stop = has_question = has_exclamation = has_ellipsis = commas = apostrophes = with_emoji = 0
    for text in messages:
        found = [(e["match_start"], e["match_end"], e["emoji"]) for e in emoji_lib.emoji_list(text)]
        emoji_counts.update(e for _, _, e in found)
        with_emoji += bool(found)
        plain = _without_emoji(text, found)
        words = _WORD.findall(plain)
        lengths.append(len(_TOKEN.findall(plain)))
        words_total += len(words)
        for word in words:
            key = _function_key(word)
            if key is not None:
                function_counts[_FUNCTION_INDEX[key]] += 1
            if word.lower() in _PRONOUN_I:
                i_total += 1
                i_upper += word[0] == "I"
        shape.update(_ngrams(_shape(text, found), (1, 2, 3)))
        masked.update(_ngrams(_masked(plain), (3,)))
        letters = [c for c in plain if c.isalpha()]
        starts_upper += bool(letters) and letters[0].isupper()
        no_capitals += not any(c.isupper() for c in letters)
        tail = plain.rstrip()
        ends_full_stop += tail.endswith(".") and not tail.endswith("..")
        has_question += "?" in plain
        has_exclamation += "!" in plain
        has_ellipsis += bool(_ELLIPSIS.search(plain))
        commas += plain.count(",")
        apostrophes += plain.count("'")
    per_word = max(words_total, 1)
    histogram = np.zeros(LENGTH_BUCKETS, dtype=np.float64)
    for length in lengths:
        histogram[min(length.bit_length(), LENGTH_BUCKETS - 1)] += 1
    return StyleProfile(
        messages=n,
        shape_ngrams=_relative(shape),
        masked_ngrams=_relative(masked),
        function_words=tuple(float(x) for x in function_counts / per_word),
        words_mean=float(np.mean(lengths)),
        words_median=float(np.median(lengths)),
        length_histogram=tuple(float(x) for x in histogram / n),
        starts_upper=starts_upper / n,
        no_capitals=no_capitals / n,
        capital_i=i_upper / i_total if i_total else None,
        ends_full_stop=ends_full_stop / n,
        has_question=has_question / n,
        has_exclamation=has_exclamation / n,
        has_ellipsis=has_ellipsis / n,
        commas_per_word=commas / per_word,
        apostrophes_per_word=apostrophes / per_word,
        with_emoji=with_emoji / n,
        emoji_per_message=emoji_counts.total() / n,
        emoji_choice=_relative(emoji_counts),
    )


def style_distance(generated: StyleProfile, real: StyleProfile) -> StyleDistance:
    """How far ``generated`` is from ``real`` in style (see the module docstring for each part).

    Symmetric in its arguments; the names say how it is meant to be called.
    """
    g, r = generated, real
    parts = {
        "char_ngrams": _mean(
            [_profile_distance(g.shape_ngrams, r.shape_ngrams), _profile_distance(g.masked_ngrams, r.masked_ngrams)]
        ),
        "function_words": _vector_distance(np.array(g.function_words), np.array(r.function_words)),
        "length": _mean(
            [
                _jensen_shannon(np.array(g.length_histogram), np.array(r.length_histogram)),
                _gap(g.words_mean, r.words_mean, LENGTH_FLOOR),
                _gap(g.words_median, r.words_median, LENGTH_FLOOR),
            ]
        ),
        "capitalisation": _mean(
            [
                _gap(g.starts_upper, r.starts_upper, SHARE_FLOOR),
                _gap(g.no_capitals, r.no_capitals, SHARE_FLOOR),
                *(
                    [_gap(g.capital_i, r.capital_i, SHARE_FLOOR)]
                    if g.capital_i is not None and r.capital_i is not None
                    else []
                ),
            ]
        ),
        "punctuation": _mean(
            [
                _gap(g.ends_full_stop, r.ends_full_stop, SHARE_FLOOR),
                _gap(g.has_question, r.has_question, SHARE_FLOOR),
                _gap(g.has_exclamation, r.has_exclamation, SHARE_FLOOR),
                _gap(g.has_ellipsis, r.has_ellipsis, SHARE_FLOOR),
                _gap(g.commas_per_word, r.commas_per_word, PER_WORD_FLOOR),
                _gap(g.apostrophes_per_word, r.apostrophes_per_word, PER_WORD_FLOOR),
            ]
        ),
        "emoji": _mean(
            [
                _gap(g.with_emoji, r.with_emoji, SHARE_FLOOR),
                _gap(g.emoji_per_message, r.emoji_per_message, SHARE_FLOOR),
                *([_profile_distance(g.emoji_choice, r.emoji_choice)] if g.emoji_choice and r.emoji_choice else []),
            ]
        ),
    }
    total = sum(WEIGHTS[name] * value for name, value in parts.items()) / sum(WEIGHTS.values())
    return StyleDistance(total=total, parts=parts)


def _function_key(word: str) -> str | None:
    lower = word.lower()
    if _LAUGHTER.match(lower):
        return "haha"  # "hahaha" and "haha" are one habit
    return lower if lower in _FUNCTION_INDEX else None


def _without_emoji(text: str, found: Sequence[tuple[int, int, str]]) -> str:
    # A space, not nothing: "ok👍then" is still two words.
    out, at = [], 0
    for start, end, _ in found:
        out += [text[at:start], " "]
        at = end
    out.append(text[at:])
    return "".join(out)


def _shape(text: str, found: Sequence[tuple[int, int, str]]) -> str:
    """``^`` + the text with characters replaced by their class + ``$`` (see the module docstring).

    Runs are collapsed so that word lengths (which follow topic) do not count: lower-case letters to one
    ``a``, upper-case to at most ``AA`` (so "Hi" ≠ "I" ≠ "OK"), digits to one ``0``, whitespace to one space,
    a repeated punctuation mark to at most three.
    """
    starts = {start: end for start, end, _ in found}
    out = ["^"]
    i = 0
    while i < len(text):
        if i in starts:
            out.append("E")
            i = starts[i]
            continue
        c = text[i]
        i += 1
        if c.isalpha():
            cls = "A" if c.isupper() else "a"
        elif c.isdigit():
            cls = "0"
        elif c.isspace():
            cls = " "
        else:
            cls = c
        limit = 2 if cls == "A" else 1 if cls in "a0 " else 3
        if len(out) >= limit and all(x == cls for x in out[-limit:]):
            continue
        out.append(cls)
    out.append("$")
    return "".join(out)


def _masked(plain: str) -> str:
    """``^`` + the text with every non-function word replaced by ``*`` + ``$``; whitespace runs → one space."""
    masked = _WORD.sub(lambda m: m[0] if _function_key(m[0]) is not None else "*", plain)
    return "^" + re.sub(r"\s+", " ", masked) + "$"


def _ngrams(text: str, sizes: Iterable[int]) -> Iterable[str]:
    for size in sizes:
        for i in range(len(text) - size + 1):
            yield text[i : i + size]


def _relative(counts: collections.Counter[str]) -> dict[str, float]:
    total = counts.total()
    return {key: counts[key] / total for key in sorted(counts)} if total else {}


def _profile_distance(a: Mapping[str, float], b: Mapping[str, float]) -> float:
    keys = sorted(a.keys() | b.keys())
    return _vector_distance(np.array([a.get(k, 0.0) for k in keys]), np.array([b.get(k, 0.0) for k in keys]))


def _vector_distance(a: FloatArray, b: FloatArray) -> float:
    """1 - cosine of the square roots (nonnegative inputs): 0 = same proportions; one empty side → 1."""
    ra, rb = np.sqrt(a), np.sqrt(b)
    na, nb = float(np.linalg.norm(ra)), float(np.linalg.norm(rb))
    if na == 0.0 or nb == 0.0:
        return 0.0 if na == nb else 1.0
    return float(min(1.0, max(0.0, 1.0 - float(ra @ rb) / (na * nb))))


def _jensen_shannon(p: FloatArray, q: FloatArray) -> float:
    """Jensen-Shannon divergence of two distributions in bits: 0 = the same, 1 = disjoint supports."""
    m = (p + q) / 2

    def kl(x: FloatArray) -> float:
        nz = x > 0
        return float(np.sum(x[nz] * np.log2(x[nz] / m[nz])))

    return min(1.0, max(0.0, (kl(p) + kl(q)) / 2))


def _gap(a: float, b: float, floor: float) -> float:
    """``|a - b| / max(a, b, floor)``, in [0, 1] for nonnegative inputs."""
    return abs(a - b) / max(a, b, floor)


def _mean(values: Sequence[float]) -> float:
    return math.fsum(values) / len(values)
