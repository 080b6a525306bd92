"""Places a user mentions, found with the GeoNames gazetteer (`lexicon.Gazetteer`) and capitalisation rules.

A gazetteer alone finds "Nice", "Reading", "Bath" and "Split" in every other message, so a run of 1-3 words
that spells a place counts as a mention only when

- it is written capitalised (first and last word) and is not the message's first word — or it is, but its
  name is not also a common word (English Zipf frequency below `COMMON_ZIPF`); or
- it follows a locative preposition (`LOCATIVE`: "in", "to", "from", "em", "para", "nach", ...) and is either
  not a common word or a large place (at least `LARGE_POPULATION` people): "in london" from a user who never
  writes capitals counts, "in nice weather" does not.

Sans-I/O; the gazetteer and the frequency lookup are handed in.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

from voice_server.avatar.persona.lexicon import MONTHS, WEEKDAYS, Gazetteer, Place

LOCATIVE = frozenset({
    "in", "to", "from", "at", "near", "around", "visiting", "via", "em", "no", "na", "para", "pra", "de", "do",
    "da", "en", "a", "desde", "à", "au", "aux", "nach", "aus", "bei", "nel", "nella", "naar", "uit",
})
# Capitalised for another reason than being a place ("in March", "on Sunday"), though a town somewhere is
# called that.
NOT_PLACES = frozenset({
    *MONTHS, *WEEKDAYS, "christmas", "easter", "university", "police", "union", "independence",
})
COMMON_ZIPF = 4.0  # Zipf frequency (log10 per billion words) from which a name is also an everyday word
LARGE_POPULATION = 1_000_000


class PlaceFinder:
    """Finds place mentions in one message at a time.

    Args:
        gazetteer: The place names.
        frequency: A word's general frequency (a proportion, as `Lexicon.frequency` gives it).
    """

    def __init__(self, gazetteer: Gazetteer, frequency: Callable[[str], float]) -> None:
        self._gazetteer = gazetteer
        self._frequency = frequency
        self._common: dict[str, bool] = {}

    def _is_common(self, word: str) -> bool:
        known = self._common.get(word)
        if known is None:
            known = math.log10(max(self._frequency(word), 1e-12)) + 9 >= COMMON_ZIPF
            if len(self._common) < 100_000:
                self._common[word] = known
        return known

    def find(self, written: Sequence[str]) -> list[str]:
        """The places mentioned in a message given as its words as written; each as the gazetteer writes it."""
        found: list[str] = []
        folded = [w.casefold() for w in written]
        first_words = self._gazetteer.first_words
        i = 0
        while i < len(written):
            longest = min(Gazetteer.MAX_WORDS, len(written) - i) if folded[i] in first_words else 1
            for n in range(longest, 0, -1):
                run = written[i : i + n]
                key = folded[i] if n == 1 else " ".join(folded[i : i + n])
                place = self._gazetteer.get(key)
                if place is not None and key not in NOT_PLACES and self._accept(written, i, run, place):
                    found.append(place.name)
                    i += n
                    break
            else:
                i += 1
        return found

    def _accept(self, written: Sequence[str], i: int, run: Sequence[str], place: Place) -> bool:
        common = len(run) == 1 and not place.country and self._is_common(run[0].casefold())
        capitalised = run[0][0].isupper() and run[-1][0].isupper()
        if capitalised and (i > 0 or not common):
            return True
        after_preposition = i > 0 and written[i - 1].casefold() in LOCATIVE
        return after_preposition and (not common or place.population >= LARGE_POPULATION)
