"""Batched token streaming on one CTranslate2 generator: many conversations, one decoding step for all.

On a 2-core CPU one decoding step at batch size 1 leaves most of the arithmetic units idle; a step for eight
sequences costs little more than for one (measured with Qwen2.5-0.5B int8: eight 40-token replies took 3.2 s
as one batch and 12.9 s one after another — 100 against 24.5 tokens/s). CTranslate2 has no continuous
batching (a running batch cannot take new sequences), so `BatchDecoder` combines two things:

* ``runners`` batches may run at once (the generator's ``inter_threads``): a request that finds a runner idle
  starts at once, as fast as it would alone — the common case with one or two callers;
* requests that arrive while every runner is busy wait, and the next runner to finish takes *all* waiting
  requests with the same decoding options (up to ``max_batch``) as one batch — so under load the queue drains
  several times faster instead of growing.

Each request gets its tokens through its own queue as they are decoded (the step callback), so streaming is
unchanged; a request whose consumer stops is dropped from its batch at the next step.
"""

from __future__ import annotations

import collections
import queue
import threading
import time
from collections.abc import Generator, Sequence
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True, slots=True)
class DecodeOptions:
    """Options shared by every sequence of a batch (requests batch together only when these are equal)."""

    max_tokens: int
    temperature: float
    top_k: int
    top_p: float
    repetition_penalty: float
    static_prompt: tuple[str, ...] | None


class _End:
    """Marks the end of a request's tokens."""


_END = _End()


@dataclass(slots=True)
class _Request:
    tokens: list[str]
    options: DecodeOptions
    stop: threading.Event
    # Unbounded by type, bounded in practice: one item per generated token, at most max_tokens + 1.
    out: queue.SimpleQueue[int | _End | BaseException] = field(default_factory=queue.SimpleQueue)


class BatchDecoder:
    """Runs token generation requests on ``generator`` in batches (see the module docstring).

    Args:
        generator: A ``ctranslate2.Generator`` created with ``inter_threads >= runners``.
        runners: Batches that may run at once.
        max_batch: Most sequences in one batch.
        end_tokens: Tokens that end a sequence.

    Thread-safe. `close` stops the runners after their current batch; requests still waiting then fail.
    """

    def __init__(self, generator: Any, *, runners: int, max_batch: int, end_tokens: Sequence[str]) -> None:
        self._generator = generator
        self._runners = runners
        self._max_batch = max_batch
        self._end_tokens = list(end_tokens)
        self._waiting: collections.deque[_Request] = collections.deque()
        self._cond = threading.Condition()
        self._threads: list[threading.Thread] = []
        self._closed = False
        self.batches = 0  # batches run, for tests and reports
        self.largest_batch = 0
        # Read by /metrics: shows that a generation whose client left really stops (and when).
        self._stats = threading.Lock()
        self._tokens_decoded = 0
        self._decoding: set[int] = set()  # id() of the requests a runner is decoding right now

    @property
    def tokens_decoded(self) -> int:
        """Tokens decoded since start, over all requests (a counter)."""
        return self._tokens_decoded

    @property
    def decoding(self) -> int:
        """Sequences being decoded right now; a sequence leaves at its last token or at the first step after
        its ``stop`` was set (a prompt still being encoded cannot be stopped and counts until then)."""
        return len(self._decoding)

    def token_ids(self, tokens: list[str], options: DecodeOptions, stop: threading.Event) -> Generator[int, None, None]:
        """Queue a request and yield its generated token ids as they are decoded. Blocking.

        Setting ``stop`` (or closing the iterator) drops the sequence from its batch at the next step.

        Raises:
            RuntimeError: The decoder was closed before the request ran.
        """
        request = _Request(tokens, options, stop)
        with self._cond:
            if self._closed:
                raise RuntimeError("the LLM is closed")
            self._start_runners()
            self._waiting.append(request)
            self._cond.notify()
        finished = False
        try:
            while True:
                item = request.out.get()
                if isinstance(item, _End):
                    finished = True
                    return
                if isinstance(item, BaseException):
                    raise item
                yield item
        finally:
            # Only a consumer that leaves early needs its sequence dropped from the batch. ``stop`` belongs to
            # the caller (e.g. its stream's stop event): setting it after a normal end would tell the caller
            # to stop too, while it may still have held-back text to deliver.
            if not finished:
                request.stop.set()

    def close(self, timeout: float | None = None) -> bool:
        """Stop taking requests, fail the waiting ones, and wait for the running batches. Idempotent.

        Running sequences stop at their next step only if their ``stop`` is set (`models.executors.ComputeLane.close`
        sets it for streams); a prompt being encoded finishes first, which no one can interrupt.

        Args:
            timeout: The longest wait for the runners, in seconds (``None``: as long as it takes).

        Returns:
            True when every runner has stopped; False when one is still inside the generator (so the model must
            not be unloaded). Runner threads are daemons: one still running does not hold up the process exit.
        """
        with self._cond:
            self._closed = True
            waiting = list(self._waiting)
            self._waiting.clear()
            self._cond.notify_all()
        for request in waiting:
            request.out.put(RuntimeError("the LLM was closed"))
        deadline = None if timeout is None else time.monotonic() + timeout
        for thread in self._threads:
            thread.join(None if deadline is None else max(0.0, deadline - time.monotonic()))
        return not any(thread.is_alive() for thread in self._threads)

    def _start_runners(self) -> None:
        # Started on first use, not in __init__, so a model that is loaded and never used starts no threads.
        while len(self._threads) < self._runners:
            thread = threading.Thread(target=self._run, name=f"soma-llm-batch-{len(self._threads)}", daemon=True)
            self._threads.append(thread)
            thread.start()

    def _next_batch(self) -> list[_Request] | None:
        with self._cond:
            while not self._waiting and not self._closed:
                self._cond.wait()
            if self._closed:
                return None
            first = self._waiting.popleft()
            batch = [first]
            for request in list(self._waiting):
                if len(batch) >= self._max_batch:
                    break
                if request.options == first.options:
                    batch.append(request)
                    self._waiting.remove(request)
            return batch

    def _run(self) -> None:
        while (batch := self._next_batch()) is not None:
            live = [request for request in batch if not request.stop.is_set()]
            for request in batch:
                if request.stop.is_set():
                    request.out.put(_END)
            if not live:
                continue
            self.batches += 1
            self.largest_batch = max(self.largest_batch, len(live))
            with self._stats:
                self._decoding.update(id(request) for request in live)
            try:
                self._decode(live)
            except BaseException as exc:  # handed to every consumer of the batch, which re-raises it
                for request in live:
                    request.out.put(exc)
            else:
                for request in live:
                    request.out.put(_END)
            finally:
                with self._stats:
                    self._decoding.difference_update(id(request) for request in live)

    def _decode(self, batch: list[_Request]) -> None:
        options = batch[0].options

        def step(result: Any) -> bool:
            request = batch[result.batch_id]
            if request.stop.is_set():
                with self._stats:
                    self._decoding.discard(id(request))
                return True  # ends this sequence only; the others go on
            with self._stats:
                self._tokens_decoded += 1
                if result.is_last:
                    self._decoding.discard(id(request))
            request.out.put(result.token_id)
            return False

        self._generator.generate_batch(
            [request.tokens for request in batch],
            max_length=options.max_tokens,
            sampling_temperature=options.temperature,
            sampling_topk=options.top_k,
            sampling_topp=options.top_p,
            repetition_penalty=options.repetition_penalty,
            end_token=self._end_tokens,
            static_prompt=list(options.static_prompt) if options.static_prompt else None,
            cache_static_prompt=True,
            include_prompt_in_result=False,
            callback=step,
        )
