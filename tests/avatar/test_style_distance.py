"""Style distance: style, not content, decides how far two sets of messages are apart."""

from __future__ import annotations

import io
from collections.abc import Sequence
from pathlib import Path

import pytest

from voice_server.avatar.importers import ImportedMessage, Me, whatsapp
from voice_server.avatar.training.style_distance import (
    PARTS,
    WEIGHTS,
    StyleDistance,
    style_distance,
    style_profile,
)

HISTORY = Path(__file__).resolve().parents[2] / "bench" / "data" / "training_history"

# The same facts in two topics, written plainly; the writers below put their habits on top.
WORK = [
    "I fixed a buckled wheel for a courier this morning",
    "The new cargo bikes arrived and they're huge",
    "I don't think that chain can be saved",
    "We sold three road bikes before lunch",
    "My boss wants me on the late shift on Thursday",
    "A kid came in with a bike that had no brakes",
    "I've ordered the part but it won't come till Monday",
    "The workshop is full of mud again",
    "She wanted a full service for her old Raleigh",
    "I'm training the new lad on the till tomorrow",
    "It took me an hour to get the seatpost out",
    "We're closed on Sunday for the stocktake",
    "That customer came back and said thanks",
    "I can't believe how busy it was today",
    "The e-bike battery wouldn't charge at all",
    "I'll have a look at your gears on Friday",
    "Someone left a tandem outside the shop",
    "The delivery was late so we had nothing to build",
    "I got a tip from the guy with the fixie",
    "It's been the longest week at work",
]
FOOD = [
    "I made a curry last night and it was great",
    "The market had cheap tomatoes so I bought loads",
    "I don't think the oven works properly",
    "We ate pasta three times this week",
    "My sister sent me a recipe from Berlin",
    "I burnt the garlic bread again",
    "I've found a new bakery near the canal",
    "The soup is on the hob if you want some",
    "She wants to try the tapas place on Friday",
    "I'm cooking a roast for everyone on Sunday",
    "It took me an hour to chop all the onions",
    "We're out of rice and eggs",
    "That pie from the pub was amazing",
    "I can't believe how good the dahl turned out",
    "The blender wouldn't turn on this morning",
    "I'll bring dessert on Saturday",
    "Someone left a cake in the kitchen",
    "The takeaway was late so we made toast",
    "I got the spices from the shop on King Street",
    "It's been ages since I made fajitas",
]


def formal(texts: Sequence[str]) -> list[str]:
    """A careful writer: capitals and apostrophes as written, a comma now and then, closing punctuation."""
    out = []
    for i, text in enumerate(texts):
        if i % 3 == 0:
            text = "Well, " + (text if text.startswith("I ") else text[0].lower() + text[1:])
        out.append(text + ("!" if i % 5 == 4 else "."))
    return out


def casual(texts: Sequence[str]) -> list[str]:
    """A texter: all lower case, no apostrophes, no closing punctuation, "haha" and the odd emoji."""
    out = []
    for i, text in enumerate(texts):
        text = text.lower().replace("'", "")
        if i % 4 == 1:
            text += " haha"
        if i % 7 == 3:
            text += " 😂"
        out.append(text)
    return out


def total(a: Sequence[str], b: Sequence[str]) -> float:
    return style_distance(style_profile(a), style_profile(b)).total


def test_empty_input_raises() -> None:
    """No messages (or only blank ones) is an error, not a profile of nothing."""
    with pytest.raises(ValueError):
        style_profile([])
    with pytest.raises(ValueError):
        style_profile(["", "  \n"])


def test_identical_texts_are_zero_symmetric_bounded_and_deterministic() -> None:
    """The same texts score 0 in every part; the distance is symmetric, in [0, 1], and repeatable."""
    a, b = style_profile(casual(WORK)), style_profile(formal(FOOD))
    same = style_distance(a, style_profile(casual(WORK)))
    assert same.total == 0.0 and set(same.parts) == set(PARTS) and all(v == 0.0 for v in same.parts.values())
    ab, ba = style_distance(a, b), style_distance(b, a)
    assert ab == ba == style_distance(style_profile(casual(WORK)), style_profile(formal(FOOD)))
    assert 0.0 < ab.total <= 1.0 and all(0.0 <= v <= 1.0 for v in ab.parts.values())
    assert ab.total == pytest.approx(sum(WEIGHTS[k] * v for k, v in ab.parts.items()))


def test_same_writer_halves_are_closer_than_a_differently_styled_writer() -> None:
    """Two disjoint halves of one writer are much closer than that writer and another style of the same facts."""
    texts = casual(WORK + FOOD)
    halves = total(texts[0::2], texts[1::2])
    other = total(texts[0::2], formal((WORK + FOOD)[1::2]))
    assert halves < 0.2 and other > 0.35 and other > 3 * halves


def test_lowercasing_a_formal_writer_moves_them_toward_a_lowercase_writer() -> None:
    """Taking away capitals (one habit) shrinks the distance to a lower-case texter, mostly in capitalisation."""
    texter = style_profile(casual(WORK))
    before = style_distance(style_profile(formal(FOOD)), texter)
    after = style_distance(style_profile([t.lower() for t in formal(FOOD)]), texter)
    assert after.total < before.total - 0.05
    assert after.parts["capitalisation"] < before.parts["capitalisation"] / 2


def test_same_style_other_topic_is_closer_than_same_topic_other_style() -> None:
    """Content is not style: a texter on food is closer to the texter on work than a careful writer on work."""
    texter_work = casual(WORK)
    assert total(casual(FOOD), texter_work) < total(formal(WORK), texter_work) / 2


def test_char_ngrams_see_shape_and_small_words_not_topic() -> None:
    """Same shape and function words with other content words: 0; other casing and punctuation: clearly more."""
    careful = ["Bikes are great.", "I fixed it, then left."]
    assert _part(careful, ["Dogs are lovely.", "I walked it, then ate."], "char_ngrams") == 0.0
    assert _part(careful, ["bikes are great", "i fixed it then left"], "char_ngrams") > 0.3


def test_function_words_count_spelling_of_contractions() -> None:
    """The small words and how they are spelt ("dont" vs "don't") matter; the content words do not."""
    assert _part(["the bike is in the shop"], ["the dog is in the park"], "function_words") == 0.0
    assert _part(["i don't know", "it's fine"], ["i dont know", "its fine"], "function_words") > 0.3


def test_length_compares_words_per_message() -> None:
    """Messages of the same lengths score 0 whatever the words; three words against sixteen score high."""
    short, long_ = ["a b c"] * 10, [" ".join("abcdefghijklmnop")] * 10
    assert _part(short, ["x y z"] * 10, "length") == 0.0
    assert _part(short, long_, "length") > 0.6
    profile = style_profile(["one two", "one two three four", "one 2 three four five six"])
    assert (profile.words_mean, profile.words_median) == (4.0, 4.0)  # "2" counts as a word


def test_capitalisation_shares() -> None:
    """Shares of messages starting upper-case, without capitals, and of the pronoun "I" capitalised."""
    profile = style_profile(["I am here", "i am here", "ok im fine 👍"])
    assert profile.starts_upper == pytest.approx(1 / 3)
    assert profile.no_capitals == pytest.approx(2 / 3)
    assert profile.capital_i == pytest.approx(1 / 3)  # "I", "i", "im"
    assert style_profile(["no pronoun here"]).capital_i is None
    assert _part(["Hello there", "Yes I can"], ["hello there", "yes i can"], "capitalisation") == 1.0


def test_punctuation_rates() -> None:
    """Closing full stops (an ellipsis is not one), ? ! ... per message, commas and apostrophes per word."""
    profile = style_profile(["It’s done.", "well... ok", "Really?!", "yes, no, maybe"])
    assert profile.ends_full_stop == pytest.approx(1 / 4)
    assert (profile.has_question, profile.has_exclamation, profile.has_ellipsis) == (0.25, 0.25, 0.25)
    assert profile.commas_per_word == pytest.approx(2 / 8)  # It's done well ok Really yes no maybe
    assert profile.apostrophes_per_word == pytest.approx(1 / 8)  # the curly one counts
    # Only the closing full stop differs, fully: one of the part's six measures.
    assert _part(["Done.", "Fine."], ["done", "fine"], "punctuation") == pytest.approx(1 / 6)


def test_emoji_rate_and_choice() -> None:
    """Share of messages with emoji, emoji per message, and which emoji are favourites."""
    profile = style_profile(["ok 👍", "haha 😂😂", "fine"])
    assert profile.with_emoji == pytest.approx(2 / 3)
    assert profile.emoji_per_message == pytest.approx(1.0)
    assert profile.emoji_choice == {"👍": pytest.approx(1 / 3), "😂": pytest.approx(2 / 3)}
    assert _part(["ok 👍", "fine"], ["ok 🐶", "fine"], "emoji") > 0.3  # same rates, other favourite
    assert _part(["ok", "fine"], ["ok", "fine"], "emoji") == 0.0


def test_synthetic_history_person_halves_vs_friends() -> None:
    """On the committed synthetic history (real importer): Sam's two halves are far closer than Sam vs friends."""
    sam: list[str] = []
    others: list[str] = []
    for path in sorted(HISTORY.glob("WhatsApp Chat with *.txt")):
        for record in whatsapp.parse(io.BytesIO(path.read_bytes()), me=Me.of("Sam Rivers")):
            if isinstance(record, ImportedMessage) and record.text:
                (sam if record.is_user else others).append(record.text)
    assert len(sam) >= 3000 and len(others) >= 2500
    half = len(sam) // 2
    halves = _distance(sam[:half], sam[half:])  # earlier months vs later months
    versus = _distance(sam, others)
    assert halves.total < 0.08 and versus.total > 0.3
    assert all(halves.parts[k] < versus.parts[k] for k in PARTS)


def _distance(a: Sequence[str], b: Sequence[str]) -> StyleDistance:
    return style_distance(style_profile(a), style_profile(b))


def _part(a: Sequence[str], b: Sequence[str], name: str) -> float:
    return _distance(a, b).parts[name]
