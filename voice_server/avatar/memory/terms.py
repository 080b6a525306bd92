"""Words of a remembered message as keyed hashes, for lexical search over sealed text (episodic memory).

A message's text is sealed, so a full-text index over it is impossible. Instead each message stores the set of
its content words' *keyed hashes*: lower-cased, stop-words dropped, Snowball-stemmed ("neighbours" and
"neighbour" meet), then 64 bits of HMAC-SHA256 under the user's tag key (`UserKey.tag`). A question's words
hashed the same way find the messages that share them through a GIN index, and rare words (names, numbers,
places) weigh most (`episode_terms` counts each term's messages).

Who said a message and which chat it belongs to are terms too, in their own namespaces (``by:``, ``with:``),
so "How's Noor's shoulder?" can prefer the messages of the chat with Noor without storing "Noor" in clear.

What the hashes reveal without the user's key: which of that user's messages share a word, and how often each
hashed word recurs; not the words, and nothing across users (every user's key is their own).
"""

from __future__ import annotations

import functools
import re
import threading

import snowballstemmer

from voice_server.security.keys import UserKey

MAX_TERMS = 64  # per message: a pasted essay indexes its first 64 distinct words
_WORD = re.compile(r"[^\W_]+(?:['’][^\W_]+)*")

# English function words and chat fillers: they match everything, so they would only cost index entries.
STOP_WORDS = frozenset(
    """a about above after again against all am an and any are aren't as at be because been before being below
    between both but by can can't could did didn't do does doesn't doing don't down during each few for from
    further had hadn't has hasn't have haven't having he he'd he'll he's her here here's hers herself him himself
    his how how's i i'd i'll i'm i've if in into is isn't it it's its itself just let's me more most mustn't my
    myself no nor not now of off on once only or other ought our ours ourselves out over own same shan't she
    she'd she'll she's should shouldn't so some such than that that's the their theirs them themselves then there
    there's these they they'd they'll they're they've this those through to too under until up very was wasn't we
    we'd we'll we're we've were weren't what what's when when's where where's which while who who's whom why
    why's will with won't would wouldn't you you'd you'll you're you've your yours yourself yourselves
    im ive ill id dont doesnt didnt cant wont isnt wasnt arent youre thats whats theres lets
    ok okay oh yeah yes yep nope haha hahaha lol x xx xxx hi hey hello bye thanks thank also really got get
    tell told did ask know like well just still much many one""".split()
)

_stemmer = snowballstemmer.stemmer("english")
_stem_lock = threading.Lock()  # a Snowball stemmer keeps its working state on the object


@functools.lru_cache(maxsize=65_536)
def stem(word: str) -> str:
    """The Snowball (Porter 2) English stem of a lower-case word."""
    with _stem_lock:
        result: str = _stemmer.stemWord(word)
    return result


def words(text: str) -> list[str]:
    """The content words of ``text``, stemmed, in order, without repeats (at most `MAX_TERMS`): lower case,
    a trailing possessive dropped ("ayesha's" → "ayesha"), stop-words and one-letter words skipped."""
    seen: dict[str, None] = {}
    for raw in _WORD.findall(text.lower().replace("’", "'")):
        word = raw[:-2] if raw.endswith("'s") else raw
        if len(word) < 2 or word in STOP_WORDS:
            continue
        seen.setdefault(stem(word), None)
        if len(seen) >= MAX_TERMS:
            break
    return list(seen)


def name_words(name: str) -> list[str]:
    """The words of a person's or chat's name, lower case ("Maya Ortiz" → maya, ortiz)."""
    found = (w.replace("’", "'") for w in _WORD.findall(name.lower()))
    return [w.removesuffix("'s") for w in found if len(w.removesuffix("'s")) > 1]


_NAME = re.compile(r"(?<![\w'’])([A-Z][a-z]+(?:['’][a-z]+)?)")


def proper_names(text: str) -> list[tuple[str, str]]:
    """Capitalised words that are not stop-words and do not start a sentence ("When did Jonas go to Havana?"
    → Jonas, Havana), each with its term (`words`' stem)."""
    found: dict[str, str] = {}
    for match in _NAME.finditer(text):
        before = text[: match.start()].rstrip()
        if not before or before[-1] in ".!?:;\"(":
            continue  # a sentence's first word is capitalised whatever it is
        raw = match.group(1)
        word = raw.lower().replace("’", "'")
        word = word[:-2] if word.endswith("'s") else word
        if len(word) > 1 and word not in STOP_WORDS:
            found.setdefault(raw.removesuffix("'s").removesuffix("’s"), stem(word))
    return list(found.items())


def said_term(text: str, said: list[str] | None = None) -> str:
    """The term of a message's whole wording (its `words` — ``said`` when already known —, or its lower-cased
    text when it has none): counted per user, it tells a message said again and again (small talk) from one
    said once."""
    return "said|" + (" ".join(words(text) if said is None else said) or text.strip().lower())


def term_hash(key: UserKey, term: str) -> int:
    """A term's keyed hash: a signed 64-bit integer (Postgres ``bigint``)."""
    return int.from_bytes(key.tag("term|" + term)[:8], "big", signed=True)


def speaker_term(word: str) -> str:
    """The term a message carries for each word of its speaker's name."""
    return "by:" + word


def thread_term(word: str) -> str:
    """The term a message carries for each word of its chat's name (the other person, in a two-person chat)."""
    return "with:" + word
