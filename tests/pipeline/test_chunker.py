"""Clause chunker: where a streamed reply is cut for TTS, and what is removed before speaking."""

from __future__ import annotations

import re

from pipeline.chunker import ClauseChunker, clean_for_speech


def _feed(text: str, chunker: ClauseChunker | None = None) -> list[str]:
    """Push ``text`` in token-sized pieces (as an LLM streams it) and flush."""
    chunker = chunker or ClauseChunker()
    out: list[str] = []
    for piece in re.findall(r"\s*\S+", text):
        out += chunker.push(piece)
    return out + list(chunker.flush())


def test_first_clause_is_cut_after_a_few_words() -> None:
    """Without punctuation the first clause ends after four words, so speech starts early."""
    clauses = _feed("Paris is the capital of France and it is lovely in the spring.")
    assert clauses[0] == "Paris is the capital"
    assert " ".join(clauses) == "Paris is the capital of France and it is lovely in the spring."


def test_first_clause_ends_at_an_early_sentence_end_or_comma() -> None:
    """A short first sentence, or a comma after two words, ends the first clause."""
    assert _feed("Great question! The sky is blue because of scattering.")[0] == "Great question!"
    assert _feed("Sure thing, I can help with that today.")[0] == "Sure thing,"


def test_later_clauses_are_whole_sentences_or_long_phrases() -> None:
    """After the first clause, cuts fall at sentence ends, or at a comma once the phrase has six words."""
    clauses = _feed("Hi there. I went to the market this morning, and I bought apples. Then, I went home.")
    assert clauses == ["Hi there.", "I went to the market this morning,", "and I bought apples.", "Then, I went home."]


def test_markdown_lists_and_emoji_are_not_spoken() -> None:
    """Markdown markers, list numbers, links and emoji are removed; the words stay."""
    assert clean_for_speech("1. **Walk** the [dog](http://x) \U0001f436\n- `rest`").strip() == "Walk the dog rest"
    spoken = " ".join(_feed("Here is a plan:\n1. **Sleep** early.\n2. Drink *water*. \U0001f600"))
    assert not set("*#`\U0001f600") & set(spoken) and "Sleep early." in spoken


def test_no_words_are_lost_when_streamed_character_by_character() -> None:
    """Whatever the delta sizes, the clauses together are the whole reply."""
    text = "Well, that depends on you. If you like quiet evenings, read a book; otherwise call a friend!"
    chunker = ClauseChunker()
    out: list[str] = []
    for ch in text:
        out += chunker.push(ch)
    out += chunker.flush()
    assert " ".join(out).split() == text.split()
