"""Stop phrases: runs of words that end a reply wherever they occur, compared word by word (sans-I/O).

Stop *strings* (`models.llm.IncrementalDecoder`) catch a prompt read out verbatim from a known start. A small model
also reads an instruction out from its middle and with a pronoun swapped: its prompt said "they seemed in good
spirits last time, so match their warmth; you are close, so be warm and familiar" and it replied "biscuit is a
classic biscuit, so match its warmth; you are close, so be warm and familiar" (measured, bench/training.py). A
`PhraseGuard` holds every run of `RUN` words of the given phrases, with case, punctuation and pronouns
normalised (`_PRONOUN`), and finds the first such run in generated text; runs with fewer than two content words
("if you don't know") are left out, because people say them for their own sake.

No library does this incremental word-run matching over a token stream, hence this module.
"""

from __future__ import annotations

import re
from bisect import bisect_left
from collections import defaultdict
from collections.abc import Iterable
from functools import lru_cache

RUN = 4
_WORD = re.compile(r"[^\W_]+(?:['\u2019][^\W_]+)*")
# Pronouns a model swaps when it paraphrases an instruction about "them" (their/its, they/it): one class each.
_PRONOUN = {
    **dict.fromkeys(("my", "your", "his", "her", "its", "our", "their"), "<poss>"),
    **dict.fromkeys(("i", "you", "he", "she", "it", "we", "they"), "<subj>"),
    **dict.fromkeys(("me", "him", "us", "them"), "<obj>"),
}
_FUNCTION = frozenset(
    "a an the and or but so if of in on at to for with as by from into about than then there here this that "
    "these those is are was were be been being am do does did don't doesn't didn't not no nor can could would "
    "should will shall may might must just very too also all any some more most own what how when where who why "
    "which one two up out over have has had having it's i'm you're they're that's yourself themselves".split()
) | frozenset(_PRONOUN.values())


def _normal(word: str) -> str:
    word = word.lower().replace("\u2019", "'")
    return _PRONOUN.get(word, word)


class PhraseGuard:
    """The `RUN`-word runs of some phrases, and where one begins in a text.

    Build it once per prompt (`from_phrases`); `find` and `hold` are pure functions of the text, so one guard
    serves any number of decoders.
    """

    def __init__(self, runs: Iterable[tuple[str, ...]]) -> None:
        self._runs = frozenset(runs)
        # The words that may follow each head of a run (its first 0 to RUN - 1 words), sorted: a word, finished
        # or not, is looked up by bisection (per token, so not a scan of every run).
        following: defaultdict[tuple[str, ...], set[str]] = defaultdict(set)
        for run in self._runs:
            for size in range(RUN):
                following[run[:size]].add(run[size])
        self._following = {head: sorted(words) for head, words in following.items()}

    @classmethod
    def from_phrases(cls, phrases: Iterable[str]) -> PhraseGuard:
        """Every run of `RUN` consecutive words within one phrase that has at least two content words.

        Built once per distinct set of phrases (a persona's lines recur every turn; ~5 ms for a 600-token
        persona, on the first token's path otherwise) and shared: a guard is never changed after it is built.
        """
        return _guard(tuple(phrases))

    @classmethod
    def _build(cls, phrases: tuple[str, ...]) -> PhraseGuard:
        runs = []
        for phrase in phrases:
            words = [_normal(w) for w in _WORD.findall(phrase)]
            for i in range(len(words) - RUN + 1):
                run = tuple(words[i : i + RUN])
                if sum(word not in _FUNCTION for word in run) >= 2:
                    runs.append(run)
        return cls(runs)

    def __bool__(self) -> bool:
        return bool(self._runs)

    def __len__(self) -> int:
        return len(self._runs)

    def find(self, text: str, start: int = 0, *, final: bool = False) -> int | None:
        """Offset of the first word of the earliest guarded run in ``text`` that begins at or after ``start``.

        Unless ``final`` (the text is complete), a last word that reaches the end of ``text`` does not count:
        "warm" may still become "warmth".
        """
        spans = [(m.start(), m.end(), _normal(m.group())) for m in _WORD.finditer(text)]
        if spans and not final and spans[-1][1] == len(text):
            spans.pop()
        words = [word for _, _, word in spans]
        for i in range(len(words) - RUN + 1):
            if spans[i][0] >= start and tuple(words[i : i + RUN]) in self._runs:
                return spans[i][0]
        return None

    def hold(self, text: str) -> int:
        """How many characters at the end of ``text`` could begin a guarded run (0: none): the longest tail of
        words that starts a run (up to `RUN` - 1 words, or `RUN` when the last one may be unfinished)."""
        open_end = bool(text) and _WORD.match(text[-1]) is not None
        spans = [(m.start(), _normal(m.group())) for m in _WORD.finditer(text)][-RUN:]
        for size in range(len(spans), 0, -1):
            tail = spans[-size:]
            if self._starts_run(tuple(word for _, word in tail), unfinished=open_end):
                return len(text) - tail[0][0]
        return 0

    def _starts_run(self, words: tuple[str, ...], *, unfinished: bool) -> bool:
        """Whether ``words`` could be how a run begins (``unfinished``: the last word may still grow)."""
        candidates = self._following.get(words[:-1], ())
        i = bisect_left(candidates, words[-1])
        if i == len(candidates):
            return False
        return candidates[i].startswith(words[-1]) if unfinished else candidates[i] == words[-1]


@lru_cache(maxsize=256)
def _guard(phrases: tuple[str, ...]) -> PhraseGuard:
    return PhraseGuard._build(phrases)
