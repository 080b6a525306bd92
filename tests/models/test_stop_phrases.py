"""Stop phrases (`models.stop_phrases`): runs of an instruction's words found in generated text, pronouns
normalised, held back while they may still be beginning; and the real tokenizer's decoder cutting at one."""

from __future__ import annotations

import pytest
from tokenizers import Tokenizer

from models.llm import IncrementalDecoder
from models.registry import ModelSet
from models.stop_phrases import RUN, PhraseGuard

TONE = "Tone: They seemed in good spirits last time, so match their warmth; you are close, so be warm and familiar."
LEAK = "biscuit is a classic biscuit, so match its warmth; you are close, so be warm and familiar."


def test_a_run_is_found_with_case_punctuation_and_pronouns_normalised() -> None:
    guard = PhraseGuard.from_phrases([TONE])
    assert guard.find(LEAK) == LEAK.index("so match")
    assert guard.find("So, match THEIR warmth!") == 0
    assert guard.find("be warm and familiar", final=True) == 0
    assert guard.find("we had a classic biscuit and tea") is None
    # Only runs that begin at or after start: the next one is "match its warmth; you" (runs cross clauses).
    assert guard.find(LEAK, start=LEAK.index("so match") + 1) == LEAK.index("match its")


def test_runs_of_function_words_are_not_guarded() -> None:
    """"if you don't know" is said for its own sake; a run needs two content words."""
    guard = PhraseGuard.from_phrases(["If you don't know something about your life, say so briefly."])
    assert guard.find("well if you don't know it's fine ok", final=True) is None
    assert guard.find("something about my life, say so", final=True) == 0
    assert len(PhraseGuard.from_phrases(["one two three"])) == 0  # shorter than a run
    assert not PhraseGuard.from_phrases([])


def test_an_unfinished_last_word_counts_only_at_the_end() -> None:
    guard = PhraseGuard.from_phrases(["be warm and familiarity"])
    assert guard.find("be warm and familiar") is None  # may still become "familiarity"
    assert guard.find("be warm and familiar", final=True) is None  # it did not
    assert guard.find("be warm and familiarity ") == 0


@pytest.mark.parametrize(("text", "held"), [
    ("great, so", "so"), ("great, so match", "so match"), ("great, so match its warm", "so match its warm"),
    ("great, so m", "so m"), ("great, s", "s"), ("great, thanks ", ""), ("", ""),
])  # fmt: skip
def test_the_tail_that_may_begin_a_run_is_held(text: str, held: str) -> None:
    guard = PhraseGuard.from_phrases([TONE])
    assert guard.hold(text) == len(held)
    assert RUN == 4


def test_the_decoder_stops_before_a_guarded_run(ci_models: ModelSet) -> None:
    """Token by token through the real tokenizer: nothing of the run is released, and the text before it is."""
    llm = ci_models.llm
    assert llm is not None
    tokenizer = Tokenizer.from_file(str(llm.model_dir / "tokenizer.json"))
    decoder = IncrementalDecoder(tokenizer, (), PhraseGuard.from_phrases([TONE]))
    released = []
    for token_id in tokenizer.encode(LEAK, add_special_tokens=False).ids:
        released.append(decoder.push(token_id))
        assert "match" not in "".join(released)
        if decoder.stopped:
            break
    assert decoder.stopped and decoder.flush() == ""
    assert "".join(released) == "biscuit is a classic biscuit, "
    plain = IncrementalDecoder(tokenizer, (), PhraseGuard.from_phrases([TONE]))
    text = "we had a classic biscuit and tea"
    out = "".join(plain.push(t) for t in tokenizer.encode(text, add_special_tokens=False).ids) + plain.flush()
    assert out == text and not plain.stopped


def test_generation_reports_a_phrase_stop(ci_models: ModelSet) -> None:
    """`CT2Llm.generate_tokens` with ``stop_phrases``: a reply that would contain a run of them ends before it."""
    llm = ci_models.llm
    assert llm is not None
    question = [{"role": "user", "content": "Say exactly: the quick brown fox jumps over the lazy dog."}]
    full = llm.complete(question, max_tokens=30)
    words = full.split()
    assert len(words) >= RUN + 2, full  # greedy: the same reply every run
    phrase = " ".join(words[2 : 2 + RUN])
    guard = PhraseGuard.from_phrases([phrase])
    assert guard, f"{phrase!r} has fewer than two content words"
    cut = llm.complete(question, max_tokens=30, stop_phrases=[phrase])
    assert full.startswith(cut) and len(cut) < len(full)
    assert guard.find(cut, final=True) is None
