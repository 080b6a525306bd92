"""Chat LLM on CTranslate2 (int8, CPU) with the model's own chat template and tokenizer.

Runtime needs neither torch nor transformers: ``tokenizers`` encodes and decodes, jinja2 renders the chat
template (:mod:`models.chat_prompt`), and ``ctranslate2.Generator`` decodes token by token.

Prefix caching: a long, fixed system prompt (the persona) dominates time to first token. Pass its tokens
as ``static_prompt_tokens`` (from :meth:`CT2Llm.prefix_tokens`) and CTranslate2 keeps the model state
after it, so later calls only process the conversation that follows::

    persona = llm.prefix_tokens([{"role": "system", "content": PERSONA}])
    for piece in llm.generate_tokens([system, *history, user], static_prompt_tokens=persona):
        ...
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import AsyncIterator, Generator, Iterator, Sequence
from pathlib import Path
from typing import TypedDict, Unpack

import ctranslate2
from tokenizers import Tokenizer

from models.catalog import Role
from models.chat_prompt import ChatPrompt, Message
from models.executors import ComputeLane
from models.llm_batch import BatchDecoder, DecodeOptions
from models.locate import locate
from models.prompt_fit import PromptLimits, fit_messages
from models.stop_phrases import PhraseGuard
from pipeline.frames import TokenUsage

log = logging.getLogger(__name__)
_INCOMPLETE = "\ufffd"  # what the byte-level decoder shows for a cut multi-byte character


# One generation's token counts, filled in as it runs (pass an instance as ``stats=``; read it after the stream
# ends). The type is the pipeline's (`pipeline.frames.TokenUsage`): a reply reports it to its session as is.
GenerationStats = TokenUsage


class GenerateOptions(TypedDict, total=False):
    """Keyword options shared by :meth:`CT2Llm.generate_tokens`, ``complete`` and ``astream``."""

    max_tokens: int
    temperature: float
    top_k: int
    top_p: float
    repetition_penalty: float
    static_prompt_tokens: Sequence[str] | None
    stop: Sequence[str]
    stop_phrases: Sequence[str]
    stats: GenerationStats | None
    max_prompt_tokens: int | None


class CT2Llm:
    """A loaded CTranslate2 chat model (any CT2 decoder directory with tokenizer files and a template).

    Args:
        model_dir: CT2 model directory as written by ``models.convert``.
        intra_threads: OpenMP threads per generation; 2 fits the 2-core target.
        compute_type: CTranslate2 compute type.
        workers: Batches that may decode at once (CT2 ``inter_threads``); see `models.registry.ThreadConfig`
            for why more than one pays off even on 2 cores.
        max_batch: Most generations decoded together in one batch when requests queue (`models.llm_batch`).

    Thread safety: the sync methods may be called from any thread; the async methods run them on the
    handle's lane, at most ``workers`` at a time.

    Attributes:
        limits: Prompt limits (`PromptLimits`); set once at start-up, before the model serves (the app does it
            from its settings), and read by every channel.
    """

    def __init__(
        self,
        model_dir: Path,
        *,
        intra_threads: int = 2,
        compute_type: str = "int8",
        workers: int = 1,
        max_batch: int = 4,
    ) -> None:
        self.model_dir = model_dir
        self._generator = ctranslate2.Generator(
            str(model_dir),
            device="cpu",
            compute_type=compute_type,
            intra_threads=intra_threads,
            inter_threads=workers,
        )
        self._tokenizer = Tokenizer.from_file(str(model_dir / "tokenizer.json"))
        self._prompt = ChatPrompt(model_dir)
        self._end_ids = self._find_end_ids(model_dir)
        self._end_tokens = [t for i in sorted(self._end_ids) if (t := self._tokenizer.id_to_token(i)) is not None]
        # Lane threads only wait for their request's tokens; the batch runners do the compute.
        self.lane = ComputeLane("llm", workers=workers * max_batch)
        # Counting for the channels' limits gets its own thread: behind the generations it would wait seconds.
        self.tokens_lane = ComputeLane("llm-tokens")
        self.limits = PromptLimits()
        self._batcher = BatchDecoder(self._generator, runners=workers, max_batch=max_batch, end_tokens=self._end_tokens)

    def _find_end_ids(self, model_dir: Path) -> set[int]:
        """End-of-turn ids: the tokenizer's eos plus the generation config's ``eos_token_id`` (int or list)."""
        ids: set[int] = set()
        eos = self._prompt.tokens.get("eos_token")
        if eos is not None and (eos_id := self._tokenizer.token_to_id(eos)) is not None:
            ids.add(eos_id)
        generation = model_dir / "generation_config.json"
        if generation.is_file():
            value = json.loads(generation.read_text(encoding="utf-8")).get("eos_token_id")
            ids.update(v for v in (value if isinstance(value, list) else [value]) if isinstance(v, int))
        if not ids:
            raise ValueError(f"{model_dir}: no end-of-sequence token in tokenizer_config/generation_config")
        return ids

    @property
    def batcher(self) -> BatchDecoder:
        """The batch scheduler (its ``batches`` and ``largest_batch`` counters show how requests were run)."""
        return self._batcher

    def render(self, messages: Sequence[Message]) -> str:
        """The prompt text for ``messages`` with the assistant header appended."""
        return self._prompt.render(messages, add_generation_prompt=True)

    def encode(self, text: str) -> list[str]:
        """Token strings of ``text`` (special tokens in the text are recognised, none are added)."""
        return list(self._tokenizer.encode(text, add_special_tokens=False).tokens)

    def count_tokens(self, messages: Sequence[Message]) -> int:
        """Prompt length in tokens for ``messages``."""
        return len(self.encode(self.render(messages)))

    def count_text_tokens(self, text: str) -> int:
        """Tokens of ``text`` alone (one message's content, no chat template)."""
        return len(self._tokenizer.encode(text, add_special_tokens=False).ids)

    async def acount_tokens(self, messages: Sequence[Message]) -> int:
        """:meth:`count_tokens` off the event loop (milliseconds for a long prompt)."""
        return await self.tokens_lane.run(self.count_tokens, messages)

    async def acount_text_tokens(self, text: str) -> int:
        """:meth:`count_text_tokens` off the event loop."""
        return await self.tokens_lane.run(self.count_text_tokens, text)

    def fit_prompt(self, messages: Sequence[Message], max_prompt_tokens: int | None = None) -> list[Message]:
        """``messages`` with the oldest history dropped until the prompt fits (see `models.prompt_fit`).

        Raises:
            models.prompt_fit.PromptTooLongError: The system messages and the newest turn alone exceed the budget.
        """
        budget = self.limits.max_prompt_tokens if max_prompt_tokens is None else max_prompt_tokens
        kept, _ = fit_messages(messages, budget, self.count_tokens, self.count_text_tokens)
        return kept

    def prefix_tokens(self, prefix_messages: Sequence[Message]) -> list[str]:
        """Tokens of the leading ``prefix_messages`` (usually the system prompt) for ``static_prompt_tokens``.

        The prefix must be rendered exactly as it starts every later prompt, which holds for system
        messages of ChatML-style templates (Qwen, SmolLM): each message ends with its own end marker.
        """
        return self.encode(self._prompt.render(prefix_messages, add_generation_prompt=False))

    def generate_tokens(
        self,
        messages: Sequence[Message],
        *,
        max_tokens: int = 80,
        temperature: float = 1.0,
        top_k: int = 1,
        top_p: float = 1.0,
        repetition_penalty: float = 1.1,
        static_prompt_tokens: Sequence[str] | None = None,
        stop: Sequence[str] = (),
        stop_phrases: Sequence[str] = (),
        stop_event: threading.Event | None = None,
        stats: GenerationStats | None = None,
        max_prompt_tokens: int | None = None,
    ) -> Generator[str, None, None]:
        """Generate a reply, yielding text pieces as soon as they decode to whole characters.

        Blocking: iterate it on a worker thread (or use :meth:`astream`). Closing the iterator early
        stops the decoding after at most one more token.

        Args:
            messages: The conversation, in the model's chat roles.
            max_tokens: Cap on generated tokens (a spoken reply needs ~60-80).
            temperature: Sampling temperature; irrelevant when ``top_k == 1``.
            top_k: 1 is greedy (deterministic); e.g. 20-40 with temperature 0.7 gives variety.
            top_p: Nucleus sampling threshold.
            repetition_penalty: >1 discourages repeats; ~1.1 measured best for the 0.5B model.
            static_prompt_tokens: Tokens of a prefix of the rendered prompt (:meth:`prefix_tokens`) whose
                model state CTranslate2 caches between calls.
            stop: Strings that end the reply; the text before the first one is yielded, it is not.
            stop_phrases: Text whose runs of words end the reply wherever they occur
                (`models.stop_phrases.PhraseGuard`); the text before the run is yielded.
            stop_event: Checked between tokens; when set, generation stops.
            stats: Receives token counts, timings and the finish reason of this call.
            max_prompt_tokens: Prompt budget (default `limits`); the oldest history is dropped to fit it.

        Yields:
            Non-empty text pieces whose concatenation is the reply (special tokens removed).

        Raises:
            ValueError: ``static_prompt_tokens`` is not a prefix of the prompt.
            models.prompt_fit.PromptTooLongError: Even without history the prompt exceeds its budget.
        """
        self.lane.check_open()
        started = time.perf_counter()
        stats = stats if stats is not None else GenerationStats()
        budget = self.limits.max_prompt_tokens if max_prompt_tokens is None else max_prompt_tokens
        tokens = self.encode(self.render(messages))
        if len(tokens) > budget:
            kept = self.fit_prompt(messages, budget)
            log.info("prompt over budget: %d of %d messages kept", len(kept), len(messages),
                     extra={"prompt_tokens": len(tokens), "budget": budget})
            tokens = self.encode(self.render(kept))
        stats.prompt_tokens = len(tokens)
        static: list[str] | None = None
        if static_prompt_tokens:
            static = list(static_prompt_tokens)
            if tokens[: len(static)] != static:
                raise ValueError("static_prompt_tokens is not a prefix of the rendered prompt")
            tokens = tokens[len(static) :]
            stats.cached_tokens = len(static)

        options = DecodeOptions(
            max_tokens, temperature, top_k, top_p, repetition_penalty, tuple(static) if static else None
        )
        ids = self._batcher.token_ids(tokens, options, stop_event or threading.Event())
        try:
            decoder = IncrementalDecoder(self._tokenizer, stop, PhraseGuard.from_phrases(stop_phrases))
            yield from self._pieces(ids, decoder, stop_event, stats, started, max_tokens)
        finally:
            ids.close()  # drops the sequence from its batch
            stats.total_ms = (time.perf_counter() - started) * 1000

    def _pieces(
        self,
        ids: Generator[int, None, None],
        decoder: IncrementalDecoder,
        stop_event: threading.Event | None,
        stats: GenerationStats,
        started: float,
        max_tokens: int,
    ) -> Iterator[str]:
        for token_id in ids:
            if stats.first_token_ms is None:
                stats.first_token_ms = (time.perf_counter() - started) * 1000
            if stop_event is not None and stop_event.is_set():
                return
            if token_id in self._end_ids:
                stats.finish = "end"
                break
            stats.generated_tokens += 1
            piece = decoder.push(token_id)
            if piece:
                yield piece
            if decoder.stopped:
                stats.finish = "stop"
                return
        else:
            stats.finish = "length" if stats.generated_tokens >= max_tokens else "end"
        tail = decoder.flush()
        if tail:
            yield tail
        if decoder.stopped:
            stats.finish = "stop"

    def complete(self, messages: Sequence[Message], **options: Unpack[GenerateOptions]) -> str:
        """The whole reply as one string, exactly the join of :meth:`generate_tokens`'s pieces (blocking)."""
        return "".join(self.generate_tokens(messages, **options))

    def astream(
        self, messages: Sequence[Message], *, buffer: int = 8, **options: Unpack[GenerateOptions]
    ) -> AsyncIterator[str]:
        """:meth:`generate_tokens` on the LLM worker, yielding pieces to the event loop.

        At most ``buffer`` pieces wait for the consumer. Cancelling or closing the consumer (use
        ``contextlib.aclosing`` when breaking out) stops the generation thread within one token.
        """

        def produce(stop_event: threading.Event) -> Iterator[str]:
            return self.generate_tokens(messages, stop_event=stop_event, **options)

        return self.lane.stream(produce, maxsize=buffer)

    async def acomplete(self, messages: Sequence[Message], **options: Unpack[GenerateOptions]) -> str:
        """:meth:`complete` on the LLM worker thread."""
        return await self.lane.run(self.complete, messages, **options)

    def close(self, timeout: float | None = None) -> bool:
        """Stop open generations, wait for them (at most ``timeout`` s) and free the model. Idempotent.

        Streams stop at their next token; a prompt still being encoded cannot be interrupted. When one is
        still running after ``timeout``, the model is left loaded (unloading it under a running generation
        would crash the process) and False is returned: the process exit reclaims it.
        """
        if self.lane.closed:
            return True
        started = time.monotonic()

        def left() -> float | None:
            return None if timeout is None else max(0.0, timeout - (time.monotonic() - started))

        self.tokens_lane.close(left())
        # Closing the lane stops open streams: their sequences leave their batches at the next step.
        stopped = self.lane.close(left())
        stopped = self._batcher.close(left()) and stopped
        if not stopped:
            log.warning("LLM still generating after %.1f s: left loaded for the process exit", timeout or 0.0)
            return False
        self._generator.unload_model()
        del self._generator
        return True


class IncrementalDecoder:
    """Turns a stream of token ids into text pieces that are safe to show or speak.

    Decodes the whole id list each time (not token by token), which is what makes byte-level BPE merges
    and multi-byte characters come out right; a piece is released only when it ends on a complete
    character and cannot be the start of a stop string. Replies are short, so the quadratic re-decoding
    costs microseconds.

    Call :meth:`push` per token; once :attr:`stopped` is true, stop feeding it. At a natural end call
    :meth:`flush` for the held-back tail. ``phrases``: runs of words that end the text like a stop string
    wherever they occur (`models.stop_phrases.PhraseGuard`).
    """

    def __init__(self, tokenizer: Tokenizer, stop: Sequence[str] = (), phrases: PhraseGuard | None = None) -> None:
        self._tokenizer = tokenizer
        self._stop = tuple(marker for marker in stop if marker)
        self._phrases = phrases if phrases else None
        self._ids: list[int] = []
        self._text = ""
        self._emitted = 0  # characters of the decoded text already released
        self.stopped = False

    def push(self, token_id: int) -> str:
        """Add one token; returns the newly releasable text (may be empty)."""
        if self.stopped:
            return ""
        self._ids.append(token_id)
        self._text = self._tokenizer.decode(self._ids, skip_special_tokens=True)
        if self._text.endswith(_INCOMPLETE):
            return ""
        cut = _find_stop(self._text, self._stop, self._emitted)
        if self._phrases is not None and (at := self._phrases.find(self._text, self._emitted)) is not None:
            cut = at if cut is None else min(cut, at)
        if cut is not None:
            self.stopped = True
            return self._release(cut)
        held = _stop_prefix_len(self._text, self._stop)
        if self._phrases is not None:
            held = max(held, self._phrases.hold(self._text))
        return self._release(len(self._text) - held)

    def flush(self) -> str:
        """The text still held back, at the end of generation (a cut character at the very end is dropped); a
        guarded phrase completed by the last word still ends it (then :attr:`stopped` turns true)."""
        if self.stopped:
            return ""
        text = self._text.rstrip(_INCOMPLETE)
        if self._phrases is not None and (at := self._phrases.find(text, self._emitted, final=True)) is not None:
            self.stopped = True
            return self._release(at)
        return self._release(len(text))

    def _release(self, end: int) -> str:
        if end <= self._emitted:
            return ""
        piece = self._text[self._emitted : end]
        self._emitted = end
        return piece


def _find_stop(text: str, stop: Sequence[str], emitted: int) -> int | None:
    """Index of the earliest stop string in ``text`` starting at or after ``emitted``, if any."""
    hits = []
    for marker in stop:
        # Held-back text guarantees no stop string starts inside what was already yielded.
        found = text.find(marker, emitted)
        if found >= 0:
            hits.append(found)
    return min(hits) if hits else None


def _stop_prefix_len(text: str, stop: Sequence[str]) -> int:
    """Length of the longest suffix of ``text`` that could be the start of a stop string."""
    longest = 0
    for marker in stop:
        for size in range(min(len(marker) - 1, len(text)), longest, -1):
            if marker.startswith(text[-size:]):
                longest = size
                break
    return longest


def load_llm(
    models_dir: Path | None, which: str | Path, *, intra_threads: int = 2, compute_type: str = "int8"
) -> CT2Llm:
    """Load the LLM of profile/model/directory ``which`` (see :func:`models.locate.locate`).

    Raises:
        ModelMissingError: Not provisioned.
    """
    _, model_dir = locate(models_dir, Role.LLM, which)
    return CT2Llm(model_dir, intra_threads=intra_threads, compute_type=compute_type)
