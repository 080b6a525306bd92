"""The CTranslate2 chat LLM (SmolLM2-135M in the ci profile)."""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from pathlib import Path

import pytest
from tokenizers import Tokenizer

from models.llm import GenerationStats, IncrementalDecoder
from models.registry import ModelSet

pytestmark = pytest.mark.models

SYSTEM = {"role": "system", "content": "You are a friendly assistant. Answer in one short sentence."}
QUESTION = [SYSTEM, {"role": "user", "content": "What is the capital of France?"}]


def test_replies_to_a_chat_prompt(ci_models: ModelSet) -> None:
    """A chat prompt gets a non-empty reply without template or special-token residue."""
    assert ci_models.llm is not None
    reply = ci_models.llm.complete(QUESTION, max_tokens=40)
    assert reply.strip()
    assert "<|im_" not in reply


def test_stream_pieces_join_to_complete_reply(ci_models: ModelSet) -> None:
    """Streaming yields several pieces whose concatenation is exactly the non-streaming reply."""
    llm = ci_models.llm
    assert llm is not None
    pieces = list(llm.generate_tokens(QUESTION, max_tokens=40))
    assert len(pieces) > 1
    assert all(pieces)
    assert "".join(pieces) == llm.complete(QUESTION, max_tokens=40)


def test_decoder_never_cuts_multibyte_characters(ci_models: ModelSet) -> None:
    """Fed one token at a time, the decoder releases only whole characters and reproduces the text."""
    llm = ci_models.llm
    assert llm is not None
    tokenizer = Tokenizer.from_file(str(llm.model_dir / "tokenizer.json"))
    text = "Hello こんにちは 👋🏽 café, naïve — 日本語!"
    ids = tokenizer.encode(text, add_special_tokens=False).ids
    assert len(ids) > len(text.split())  # characters really do span several byte-level tokens
    decoder = IncrementalDecoder(tokenizer)
    pieces = [decoder.push(token_id) for token_id in ids] + [decoder.flush()]
    assert not any("\ufffd" in piece for piece in pieces)
    assert "".join(pieces) == text


@pytest.mark.parametrize(
    ("stop", "expected"),
    [(["\n"], "one two"), (["two"], "one "), (["three", "two th"], "one two\n"), (["zzz"], "one two\nthree")],
)
def test_decoder_holds_back_and_cuts_at_stop_strings(ci_models: ModelSet, stop: list[str], expected: str) -> None:
    """Text that may begin a stop string is held back; the reply ends right before the first stop string."""
    llm = ci_models.llm
    assert llm is not None
    tokenizer = Tokenizer.from_file(str(llm.model_dir / "tokenizer.json"))
    decoder = IncrementalDecoder(tokenizer, stop)
    released = ""
    for token_id in tokenizer.encode("one two\nthree", add_special_tokens=False).ids:
        released += decoder.push(token_id)
        if decoder.stopped:
            break
    released += decoder.flush()
    assert released == expected


def test_stop_string_ends_reply_before_it(ci_models: ModelSet) -> None:
    """A stop string truncates the reply right before its first occurrence and is not yielded."""
    llm = ci_models.llm
    assert llm is not None
    full = llm.complete(QUESTION, max_tokens=40)
    marker = next(word for word in full.split() if len(word) > 3)[:3]
    stopped = llm.complete(QUESTION, max_tokens=40, stop=[marker])
    assert stopped == full[: full.index(marker)]


def test_static_prompt_prefix_gives_same_reply(ci_models: ModelSet) -> None:
    """Caching the system prompt with static_prompt_tokens does not change a greedy reply."""
    llm = ci_models.llm
    assert llm is not None
    prefix = llm.prefix_tokens([SYSTEM])
    assert 0 < len(prefix) < llm.count_tokens(QUESTION)
    plain = llm.complete(QUESTION, max_tokens=30)
    for _ in range(2):  # the second call runs from the cached prefix state
        assert llm.complete(QUESTION, max_tokens=30, static_prompt_tokens=prefix) == plain
    with pytest.raises(ValueError, match="prefix"):
        llm.complete(QUESTION, static_prompt_tokens=llm.prefix_tokens([{"role": "system", "content": "Other."}]))


def test_generation_stats_report_counts_and_finish(ci_models: ModelSet) -> None:
    """GenerationStats counts prompt/cached/generated tokens and says why generation ended."""
    llm = ci_models.llm
    assert llm is not None
    capped = GenerationStats()
    assert llm.complete(QUESTION, max_tokens=3, stats=capped)
    assert (capped.generated_tokens, capped.finish) == (3, "length")
    assert capped.prompt_tokens == llm.count_tokens(QUESTION) and capped.cached_tokens == 0
    assert capped.first_token_ms is not None and 0 < capped.first_token_ms <= capped.total_ms
    natural = GenerationStats()
    llm.complete(QUESTION, max_tokens=200, static_prompt_tokens=llm.prefix_tokens([SYSTEM]), stats=natural)
    assert natural.finish == "end" and 0 < natural.generated_tokens < 200
    assert natural.cached_tokens == len(llm.prefix_tokens([SYSTEM]))


def test_template_matches_transformers(ci_models: ModelSet) -> None:
    """The jinja2-rendered prompt is byte-identical to transformers' apply_chat_template."""
    transformers = pytest.importorskip("transformers")
    llm = ci_models.llm
    assert llm is not None
    reference = transformers.AutoTokenizer.from_pretrained(str(llm.model_dir))
    history = [*QUESTION, {"role": "assistant", "content": "Paris."}, {"role": "user", "content": "And Spain?"}]
    assert llm.render(history) == reference.apply_chat_template(history, tokenize=False, add_generation_prompt=True)


async def test_async_stream_matches_sync(ci_models: ModelSet) -> None:
    """astream delivers the same pieces to the event loop as the blocking generator."""
    llm = ci_models.llm
    assert llm is not None
    pieces = [piece async for piece in llm.astream(QUESTION, max_tokens=40)]
    assert pieces == list(llm.generate_tokens(QUESTION, max_tokens=40))
    assert await llm.acomplete(QUESTION, max_tokens=40) == "".join(pieces)


async def test_stream_delivers_held_back_tail_after_the_last_token(ci_models: ModelSet) -> None:
    """A reply cut by max_tokens right after text that could start a stop string (here a '.') ends with that
    held-back tail, and the async stream still finishes (it used to hang: the batch decoder set the stream's
    stop event on a normal end, so the tail and the end marker were never delivered)."""
    llm = ci_models.llm
    assert llm is not None
    story = [{"role": "user", "content": "Tell me about cats in three short sentences."}]
    pieces = list(llm.generate_tokens(story, max_tokens=80))
    cut = next(i + 1 for i, piece in enumerate(pieces) if piece.endswith("."))
    sync = llm.complete(story, max_tokens=cut, stop=[". Never"])
    assert sync.endswith(".")
    async with asyncio.timeout(20):
        streamed = [piece async for piece in llm.astream(story, max_tokens=cut, stop=[". Never"])]
    assert "".join(streamed) == sync


async def test_cancelled_consumer_stops_generation(ci_models: ModelSet) -> None:
    """Cancelling a slow consumer frees the LLM worker within a token or two, not after max_tokens."""
    llm = ci_models.llm
    assert llm is not None
    story = [{"role": "user", "content": "Tell me a very long story about a dragon and a knight."}]

    async def slow_consumer() -> None:
        async with contextlib.aclosing(llm.astream(story, max_tokens=400)) as stream:
            async for _ in stream:
                await asyncio.sleep(0.2)

    task = asyncio.create_task(slow_consumer())
    await asyncio.sleep(0.5)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    started = time.perf_counter()
    await llm.acomplete(QUESTION, max_tokens=1)
    # 400 tokens would take seconds; a stopped generation leaves only the 1-token call.
    assert time.perf_counter() - started < 1.5


async def test_break_out_of_stream_stops_generation(ci_models: ModelSet) -> None:
    """Leaving an aclosing() stream early stops the producer, so the next call is not queued behind it."""
    llm = ci_models.llm
    assert llm is not None
    story = [{"role": "user", "content": "Tell me a very long story about a dragon and a knight."}]
    async with contextlib.aclosing(llm.astream(story, max_tokens=400)) as stream:
        async for _ in stream:
            break
    started = time.perf_counter()
    await llm.acomplete(QUESTION, max_tokens=1)
    assert time.perf_counter() - started < 1.5


def test_waiting_requests_are_decoded_as_one_batch(models_dir: Path) -> None:
    """With one runner busy, requests that arrive meanwhile run together as one batch, each getting its own
    reply. (Batched int8 arithmetic may pick a different greedy token late in a reply, so only the request
    that ran alone must match its solo reply exactly.)"""
    from models.catalog import Role
    from models.llm import CT2Llm
    from models.locate import locate

    _, model_dir = locate(models_dir, Role.LLM, "ci")
    llm = CT2Llm(model_dir, workers=1, max_batch=4)
    try:
        questions = [[{"role": "user", "content": q}] for q in ("Tell me a story.", "Hi!", "Name a fruit.")]
        alone = [llm.complete(q, max_tokens=24) for q in questions]
        assert llm.batcher.largest_batch == 1
        results: dict[int, str] = {}

        def ask(i: int) -> None:
            results[i] = llm.complete(questions[i], max_tokens=24)

        before = llm.batcher.batches
        first = threading.Thread(target=ask, args=(0,))
        first.start()
        deadline = time.monotonic() + 10
        while llm.batcher.batches == before and time.monotonic() < deadline:
            time.sleep(0.002)  # until the first request holds the only runner
        others = [threading.Thread(target=ask, args=(i,)) for i in (1, 2)]
        for t in others:
            t.start()
        for t in [first, *others]:
            t.join()
        assert llm.batcher.largest_batch == 2
        assert results[0] == alone[0]
        assert all(results[i].strip() for i in (1, 2))
    finally:
        llm.close()
