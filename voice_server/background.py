"""Background work a service owns: bounded queues, one worker task, an explicit policy for a full queue.

Every background service (memory, bond, persona) has the same shape: callers on the request or turn path
queue an item and never wait; one named worker task, started and stopped with the service, handles the items
one at a time. `Worker` is that task; `Worker.queue` gives it a `BackgroundQueue` (a *lane*) with a bound and
a `WhenFull` policy, each service keeping the one that fits what its items are worth. Lanes are served in the
order they were created, so a service can let cheap bookkeeping go first (memory's recall stamps).

`OwnedTask` is the bare half, one named task with a `close` that cancels through
`pipeline.tasks.cancel_and_wait`, for services whose loop is their own (the import worker's fair queue, the
proactive scheduler's timed passes).

Not thread-safe: event loop only.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import enum
import logging
from collections.abc import Awaitable, Callable, Coroutine, Iterator
from typing import Any, Generic, TypeVar

from pipeline.tasks import cancel_and_wait

log = logging.getLogger(__name__)

T = TypeVar("T")


class WhenFull(enum.Enum):
    """What `BackgroundQueue.put` does with an item that finds the queue full."""

    DROP_OLDEST = "drop_oldest"  # the newest work matters most; the oldest is dropped (and counted)
    DROP_NEWEST = "drop_newest"  # the work already waiting matters most; the new item is dropped (and counted)
    REFUSE = "refuse"  # the caller must know: `QueueFullError`, nothing changes


class QueueFullError(RuntimeError):
    """A `WhenFull.REFUSE` queue is full; nothing was queued."""


class OwnedTask:
    """One named task a service owns: `start` it once, `close` it at shutdown.

    Args:
        name: The task's name (logs, ``asyncio.all_tasks()`` dumps).
    """

    def __init__(self, name: str) -> None:
        self.name = name
        self._task: asyncio.Task[None] | None = None

    @property
    def running(self) -> bool:
        """Started and not yet ended."""
        return self._task is not None and not self._task.done()

    def start(self, work: Coroutine[Any, Any, None]) -> None:
        """Run ``work`` as the owned task (call on the event loop, once per `close`).

        Raises:
            RuntimeError: It is already started (``work`` is closed unrun).
        """
        if self._task is not None:
            work.close()
            raise RuntimeError(f"{self.name} is already started")
        self._task = asyncio.create_task(work, name=self.name)

    # ASYNC109: the bound is `cancel_and_wait`'s (how long a task may ignore its cancellation), not the caller's.
    async def close(self, timeout: float = 5.0) -> None:  # noqa: ASYNC109
        """Cancel the task and wait for it to end, at most ``timeout`` seconds (see `cancel_and_wait`); a no-op
        when it never started. If the caller is cancelled meanwhile, that cancellation propagates (the task
        has been cancelled already and ends on its own)."""
        task, self._task = self._task, None
        if task is not None:
            await cancel_and_wait(task, timeout=timeout)


class BackgroundQueue(Generic[T]):
    """One lane of a `Worker`: a FIFO of at most ``maxsize`` items, each handed to ``handle`` in turn.

    Created by `Worker.queue` (never directly). `put` never blocks; a full queue follows ``when_full``.
    """

    def __init__(
        self,
        handle: Callable[[T], Awaitable[object]],
        *,
        maxsize: int,
        when_full: WhenFull,
        on_drop: Callable[[T], None] | None,
        on_put: Callable[[], None],
    ) -> None:
        if maxsize < 1:
            raise ValueError("maxsize must be at least 1")
        self.maxsize = maxsize
        self.when_full = when_full
        self.dropped = 0  # items dropped by `WhenFull.DROP_OLDEST` / `DROP_NEWEST` since creation
        self._handle = handle
        self._on_drop = on_drop
        self._on_put = on_put
        self._items: collections.deque[T] = collections.deque()

    def __len__(self) -> int:
        return len(self._items)

    def __iter__(self) -> Iterator[T]:
        """The waiting items, next first (do not `put` or `remove` while iterating)."""
        return iter(self._items)

    @property
    def full(self) -> bool:
        """``maxsize`` items are waiting: the next `put` follows ``when_full``."""
        return len(self._items) >= self.maxsize

    def put(self, item: T) -> bool:
        """Queue ``item`` for the worker; never blocks. True when it was queued, false when `WhenFull.DROP_NEWEST`
        dropped it. A dropped item (either one) is counted in `dropped` and given to ``on_drop``.

        Raises:
            QueueFullError: The queue is full and its policy is `WhenFull.REFUSE` (nothing changes).
        """
        if not self.full:
            self._append(item)
            return True
        if self.when_full is WhenFull.REFUSE:
            raise QueueFullError(f"{self.maxsize} items are already waiting")
        if self.when_full is WhenFull.DROP_NEWEST:
            self._count_drop(item)
            return False
        oldest = self._items.popleft()
        self._count_drop(oldest)
        self._append(item)
        return True

    def remove(self, match: Callable[[T], bool]) -> list[T]:
        """Take every waiting item ``match`` accepts out of the queue (not counted as dropped); return them."""
        taken = [item for item in self._items if match(item)]
        if taken:
            self._items = collections.deque(item for item in self._items if not match(item))
        return taken

    def _append(self, item: T) -> None:
        self._items.append(item)
        self._on_put()

    def _count_drop(self, item: T) -> None:
        self.dropped += 1
        if self._on_drop is not None:
            self._on_drop(item)

    async def handle_next(self) -> None:
        """Take the next item and await its handler (the `Worker` calls this; the item leaves the queue before
        the handler starts, so `remove` never sees the running one)."""
        await self._handle(self._items.popleft())


class Worker:
    """One owned task that handles the items of its queues one at a time.

    Call order: `queue` (once per lane, before or after `start`), `start` once, then `put` on the lanes from
    anywhere on the loop; `close` at shutdown. An item whose handler raises is logged and skipped: one bad
    item never stops the worker. Cancellation is never caught.

    Args:
        name: The worker task's name.
    """

    def __init__(self, name: str) -> None:
        self.name = name
        self._task = OwnedTask(name)
        self._lanes: list[BackgroundQueue[Any]] = []
        self._wake = asyncio.Event()
        self._idle = asyncio.Event()
        self._idle.set()

    def queue(
        self,
        handle: Callable[[T], Awaitable[object]],
        *,
        maxsize: int,
        when_full: WhenFull,
        on_drop: Callable[[T], None] | None = None,
    ) -> BackgroundQueue[T]:
        """A new lane whose items go to ``handle``. Lanes are served in creation order: an item of an earlier
        lane always goes before one of a later lane.

        Args:
            handle: Awaited with each item, on the worker task.
            maxsize: The most items waiting (the running one does not count).
            when_full: What `BackgroundQueue.put` does when ``maxsize`` wait.
            on_drop: Called with each item the policy drops (a warning, a counter).
        """
        lane = BackgroundQueue(handle, maxsize=maxsize, when_full=when_full, on_drop=on_drop, on_put=self._wake_up)
        self._lanes.append(lane)
        return lane

    @property
    def running(self) -> bool:
        """Started and not yet closed."""
        return self._task.running

    @property
    def idle(self) -> bool:
        """No item is waiting or being handled."""
        return self._idle.is_set()

    def start(self) -> None:
        """Start the worker task (on the event loop; once per `close`)."""
        self._task.start(self._run())

    async def drain(self) -> None:
        """Wait until no item is waiting or being handled (tests, shutdown). Waits for ever if items wait and the
        worker is not running."""
        while not self._idle.is_set():
            await self._idle.wait()

    # ASYNC109: ``timeout`` bounds how long the cancelled handler may take to stop, after ``drain_s``.
    async def close(self, *, drain_s: float = 0.0, timeout: float = 5.0) -> None:  # noqa: ASYNC109
        """Handle what is queued for up to ``drain_s`` seconds, then cancel the worker (the running item's handler
        sees `asyncio.CancelledError`) and wait for it, at most ``timeout`` seconds. Items still waiting stay in
        their queues. The caller's own cancellation is never swallowed."""
        if drain_s > 0 and self._task.running:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(drain_s):
                    await self.drain()
        await self._task.close(timeout)

    def _wake_up(self) -> None:
        self._idle.clear()
        self._wake.set()

    async def _run(self) -> None:
        while True:
            lane = next((lane for lane in self._lanes if lane), None)
            if lane is None:
                self._idle.set()
                self._wake.clear()
                await self._wake.wait()
                continue
            try:
                await lane.handle_next()
            except Exception:
                log.exception("%s: an item failed; skipped", self.name)
