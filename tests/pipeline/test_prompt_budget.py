"""Prompt size limits and bounded stops: history trimmed oldest-first to a token budget (persona and the new
turn kept), long monologue transcripts bounded, and model closes that give up at a deadline instead of
waiting for compute that cannot be interrupted."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Sequence

import numpy as np
import pytest

from models.executors import ComputeLane
from models.prompt_fit import Message, PromptLimits, PromptTooLongError, fit_messages
from models.registry import ModelSet
from pipeline.asr import MAX_TRANSCRIPT_CHARS, UtteranceAsr
from tests.pipeline.fakes import FakeAsr


def _words(text: str) -> int:
    return len(text.split())


def _count(messages: Sequence[Message]) -> int:
    """A stand-in tokenizer: one token a word, plus 5 per message for the template."""
    return sum(_words(m["content"]) + 5 for m in messages)


def _chat(history_exchanges: int, words_each: int = 100) -> list[Message]:
    text = " ".join(["word"] * words_each)
    history: list[Message] = []
    for n in range(history_exchanges):
        history += [{"role": "user", "content": f"q{n} {text}"}, {"role": "assistant", "content": f"a{n} {text}"}]
    return [
        {"role": "system", "content": "persona " * 50},
        *history,
        {"role": "system", "content": "memories " * 20},
        {"role": "user", "content": "now what"},
    ]


def test_prompt_within_budget_is_unchanged() -> None:
    """A prompt that fits is passed through as is, with its count."""
    messages = _chat(2)
    kept, tokens = fit_messages(messages, 10_000, _count, _words)
    assert kept == messages and tokens == _count(messages)


def test_history_is_dropped_oldest_first_keeping_persona_memories_and_turn() -> None:
    """Over budget: whole exchanges go from the oldest; the persona, the memories and the new turn stay."""
    messages = _chat(6)
    kept, tokens = fit_messages(messages, 700, _count, _words)
    assert tokens <= 700 and tokens == _count(kept)
    assert kept[0] == messages[0] and kept[-2:] == messages[-2:]
    history = kept[1:-2]
    assert history and history[0]["role"] == "user"  # never an answer without its question
    assert history == messages[-2 - len(history) : -2]  # the newest exchanges, in order
    assert len(history) % 2 == 0


def test_budget_that_only_fits_the_fixed_part_drops_all_history() -> None:
    """With room only for persona + memories + turn, the whole history goes."""
    messages = _chat(3)
    fixed = [messages[0], *messages[-2:]]
    kept, _ = fit_messages(messages, _count(fixed), _count, _words)
    assert kept == fixed


def test_fixed_part_over_budget_is_an_error() -> None:
    """When even the persona and the new turn do not fit, the caller is told rather than given a cut prompt."""
    with pytest.raises(PromptTooLongError) as caught:
        fit_messages(_chat(2), 50, _count, _words)
    assert caught.value.budget == 50 and caught.value.tokens > 50


def test_limits_leave_room_for_instructions() -> None:
    """Client instructions may take half the prompt budget."""
    assert PromptLimits(3000, 1000).max_instructions_tokens == 1500


async def test_monologue_transcript_is_bounded_to_the_newest_words() -> None:
    """An utterance far longer than the ASR window commits its text as a prefix, which stays bounded (newest
    words kept), so a long monologue cannot grow the prompt without limit."""
    asr = FakeAsr(["blah " * 400], delay=0.0)  # every decode of this tone returns ~2,000 characters
    utt = UtteranceAsr(asr, max_window_s=1.0)
    utt.begin()
    for _ in range(10):
        utt.push(np.full(16_000 * 6, 2000, np.int16))  # 6 s at a time: each decode commits the overflow
        text = await utt.decode()
        assert len(text) <= MAX_TRANSCRIPT_CHARS
    assert len(text) > MAX_TRANSCRIPT_CHARS - 100


async def test_lane_close_with_timeout_gives_up_on_running_work() -> None:
    """`ComputeLane.close(timeout)` returns False in time while a call that cannot be interrupted runs, and True
    once it finished; queued calls are dropped."""
    lane = ComputeLane("test-close")
    release = threading.Event()
    running = asyncio.ensure_future(lane.run(release.wait, 10.0))
    queued = asyncio.ensure_future(lane.run(time.sleep, 0))
    await asyncio.sleep(0.05)
    started = time.monotonic()
    assert lane.close(timeout=0.2) is False
    assert time.monotonic() - started < 1.0
    release.set()
    assert await running is True
    assert lane.close(timeout=2.0) is True
    with pytest.raises(asyncio.CancelledError):
        await queued


@pytest.mark.models
def test_llm_trims_a_long_history_to_its_prompt_budget(ci_models: ModelSet) -> None:
    """The real LLM counts with its tokenizer and drops the oldest history to fit `limits.max_prompt_tokens`
    (every channel goes through it); the generation still answers."""
    from models.llm import GenerationStats

    llm = ci_models.llm
    assert llm is not None
    emoji = "🙂" * 300  # emoji are several tokens each: characters say nothing about cost
    history: list[Message] = []
    for n in range(8):
        history += [{"role": "user", "content": f"{n} {emoji}"}, {"role": "assistant", "content": "ok"}]
    messages = [{"role": "system", "content": "Be brief."}, *history, {"role": "user", "content": "Say hi."}]
    assert llm.count_tokens(messages) > 3000
    stats = GenerationStats()
    text = llm.complete(messages, max_tokens=8, max_prompt_tokens=1500, stats=stats)
    assert 0 < stats.prompt_tokens <= 1500 and text
    kept = llm.fit_prompt(messages, 1500)
    assert kept[0] == messages[0] and kept[-1] == messages[-1] and len(kept) < len(messages)
