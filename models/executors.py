"""Worker threads that model compute runs on, so it never blocks the event loop.

Each loaded model owns one :class:`ComputeLane`: a named, single-purpose thread pool. Async callers
``await lane.run(fn, ...)`` or iterate ``lane.stream(produce)``; sync callers (benchmarks, other worker
threads) call the model's sync methods directly.
"""

from __future__ import annotations

import asyncio
import functools
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Generic, ParamSpec, TypeVar

P = ParamSpec("P")
T = TypeVar("T")


class ModelClosedError(RuntimeError):
    """A model handle was used after ``close()``."""


class StreamStalledError(RuntimeError):
    """A lane stream's consumer took nothing for longer than the stall timeout, so the producer quit."""


class ComputeLane:
    """A thread pool owned by one model handle.

    One worker by default: on a 2-core machine a model's own intra-op threads already use the cores, and
    a single worker keeps calls to one model in submission order.

    Args:
        name: Used as the thread-name prefix (``soma-<name>``), visible in py-spy and thread dumps.
        workers: Number of worker threads.
    """

    def __init__(self, name: str, workers: int = 1) -> None:
        self.name = name
        self._executor = ThreadPoolExecutor(max_workers=workers, thread_name_prefix=f"soma-{name}")
        self._closed = False
        # Streams running on this lane, so close() can stop a producer waiting on a consumer that left.
        self._streams: set[_Slots[Any]] = set()
        self._streams_lock = threading.Lock()
        self._pending = 0  # calls and streams submitted and not finished (updated on the worker side)
        self._busy_s = 0.0  # worker seconds spent in submitted work, for utilisation reports
        self._stats_lock = threading.Lock()
        self._running = 0  # of those, started on a worker (a call cancelled by `close` never starts)
        self._idle = threading.Condition(self._stats_lock)  # notified when `_running` drops to 0

    @property
    def closed(self) -> bool:
        return self._closed

    @property
    def executor(self) -> ThreadPoolExecutor:
        """The underlying executor, for ``loop.run_in_executor`` by callers that need it."""
        self.check_open()
        return self._executor

    @property
    def pending(self) -> int:
        """Calls and streams submitted to this lane and not finished yet (queued or running)."""
        return self._pending

    @property
    def busy_s(self) -> float:
        """Worker seconds spent in submitted work since the lane was created, summed over its workers (for a
        stream, including time it waited for its consumer)."""
        return self._busy_s

    def _submit(self, work: Callable[[], T]) -> asyncio.Future[T]:
        """Submit ``work`` to the worker, keeping the pending count and busy time."""
        with self._stats_lock:
            self._pending += 1

        def timed() -> T:
            started = time.perf_counter()
            with self._stats_lock:
                self._running += 1
            try:
                return work()
            finally:
                with self._stats_lock:
                    self._busy_s += time.perf_counter() - started
                    self._pending -= 1
                    self._running -= 1
                    if self._running == 0:
                        self._idle.notify_all()

        return asyncio.get_running_loop().run_in_executor(self.executor, timed)

    def check_open(self) -> None:
        """Raise :class:`ModelClosedError` if the lane was closed."""
        if self._closed:
            raise ModelClosedError(f"{self.name} is closed")

    async def run(self, fn: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
        """Run ``fn(*args, **kwargs)`` on this lane's worker and await its result.

        Cancelling the await does not interrupt ``fn`` (threads cannot be interrupted); the result is
        discarded when it arrives.
        """
        return await self._submit(functools.partial(fn, *args, **kwargs))

    async def stream(
        self,
        produce: Callable[[threading.Event], Iterator[T]],
        *,
        maxsize: int = 4,
        stall_timeout: float = 30.0,
    ) -> AsyncIterator[T]:
        """Iterate a blocking iterator on this lane's worker and yield its items on the event loop.

        Args:
            produce: Called on the worker with a stop event; returns the blocking iterator. The event is
                set when the consumer goes away, so a producer that checks it between items (e.g. between
                LLM tokens) stops within one item; the worker also stops pulling items and closes the
                iterator.
            maxsize: Items buffered ahead of the consumer.
            stall_timeout: Seconds the producer waits for buffer room before deciding the consumer is gone.
                This is the backstop for a stream that is abandoned but never closed (a reference kept
                somewhere): without it the producer would block the lane's only worker forever.

        Yields:
            The producer's items, in order. A producer exception is re-raised here, and
            :class:`StreamStalledError` if the producer gave up waiting for this consumer.

        Use ``contextlib.aclosing`` (or ``async with``-style cleanup) when breaking out early, so the
        producer is stopped right away rather than when the generator is garbage-collected.
        """
        loop = asyncio.get_running_loop()
        slots: _Slots[T] = _Slots(loop, maxsize)

        def work() -> None:
            iterator: Iterator[T] | None = None
            try:
                iterator = produce(slots.stop)
                for item in iterator:
                    if not slots.free.acquire(timeout=stall_timeout):
                        slots.stop.set()
                        slots.deliver(
                            _Failed(StreamStalledError(f"{self.name}: consumer took nothing for {stall_timeout}s"))
                        )
                        return
                    if slots.stop.is_set():
                        # Normally the consumer left and nobody reads this; should the producer have set the
                        # event itself, the end marker still reaches the consumer instead of a silent hang.
                        slots.deliver(_End())
                        return
                    slots.deliver(item)
            except BaseException as exc:  # handed to the consumer, which re-raises it
                slots.deliver(_Failed(exc))
            else:
                slots.deliver(_End())
            finally:
                close = getattr(iterator, "close", None)
                if close is not None:
                    close()

        # The future is deliberately not awaited: the worker ends by itself once stop is set, and a call
        # submitted after it queues on the lane's workers as usual.
        self._submit(work)
        with self._streams_lock:
            self._streams.add(slots)
        try:
            while True:
                item = await slots.queue.get()
                if isinstance(item, _End):
                    return
                if isinstance(item, _Failed):
                    raise item.error
                slots.free.release()
                yield item
        finally:
            with self._streams_lock:
                self._streams.discard(slots)
            slots.halt()

    def close(self, timeout: float | None = None) -> bool:
        """Stop accepting work, stop open streams, drop queued calls and wait for the running ones.

        Args:
            timeout: The longest wait for running work, in seconds; ``None`` waits as long as it takes. Native
                compute (a CTranslate2 prompt being encoded, an ONNX run) cannot be interrupted, so a shutdown
                with a deadline passes one and leaves a call still running to the process exit.

        Returns:
            True when no work is running any more. After False the worker threads are still busy: the model
            they use must not be freed. Calling again waits again (idempotent otherwise).
        """
        if not self._closed:
            self._closed = True
            with self._streams_lock:
                streams = list(self._streams)
            for slots in streams:
                slots.halt()
            self._executor.shutdown(wait=False, cancel_futures=True)
        if timeout is None:
            self._executor.shutdown(wait=True)  # also joins the worker threads
            return True
        with self._idle:
            return self._idle.wait_for(lambda: self._running == 0, timeout)


@dataclass(frozen=True, slots=True)
class _End:
    """Marks the end of a lane stream."""


@dataclass(frozen=True, slots=True)
class _Failed:
    """Carries the producer's exception to the consumer."""

    error: BaseException


class _Slots(Generic[T]):
    """Hand-over between the producer thread and the consumer coroutine, bounded by a semaphore.

    The producer takes a slot before delivering an item and the consumer gives it back after taking
    the item, so at most ``maxsize`` items are ever buffered. A full buffer blocks the producer thread,
    which is what paces generation to the consumer; stopping releases a slot so it can notice and exit.
    """

    def __init__(self, loop: asyncio.AbstractEventLoop, maxsize: int) -> None:
        self.loop = loop
        self.free = threading.Semaphore(maxsize)
        self.stop = threading.Event()
        # Bounded one above the semaphore so the end marker always fits.
        self.queue: asyncio.Queue[T | _End | _Failed] = asyncio.Queue(maxsize + 1)

    def halt(self) -> None:
        """Tell the producer to stop, waking it if it is blocked on a full buffer. Safe from any thread."""
        self.stop.set()
        self.free.release()

    def deliver(self, item: T | _End | _Failed) -> None:
        """Hand ``item`` to the consumer's loop. Called from the producer thread."""
        try:
            self.loop.call_soon_threadsafe(self._put, item)
        except RuntimeError:
            self.stop.set()  # the loop is gone; nobody will consume

    def _put(self, item: T | _End | _Failed) -> None:
        try:
            self.queue.put_nowait(item)
        except asyncio.QueueFull:
            # Only possible once the consumer has left (the semaphore bounds items while it is there),
            # so a late end or error marker has nobody to reach.
            pass
