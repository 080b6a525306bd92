"""The background-work primitive every service uses: a bounded queue with an explicit full policy, one owned
worker that handles items one at a time, `drain`, and a `close` that cancels the running item without ever
swallowing the caller's own cancellation. No clock: tasks are stepped with events and loop yields."""

from __future__ import annotations

import asyncio

import pytest

from voice_server.background import OwnedTask, QueueFullError, WhenFull, Worker


async def settle() -> None:
    """Let every ready task run until it waits again."""
    for _ in range(5):
        await asyncio.sleep(0)


class Gate:
    """A handler that records each item and holds it until released."""

    def __init__(self) -> None:
        self.started: list[int] = []
        self.finished: list[int] = []
        self.cancelled: list[int] = []
        self.release = asyncio.Event()

    async def __call__(self, item: int) -> None:
        self.started.append(item)
        try:
            await self.release.wait()
        except asyncio.CancelledError:
            self.cancelled.append(item)
            raise
        self.finished.append(item)


@pytest.mark.parametrize(
    ("when_full", "kept", "dropped"),
    [(WhenFull.DROP_OLDEST, [2, 3, 4], [1]), (WhenFull.DROP_NEWEST, [1, 2, 3], [4])],
)
async def test_a_full_queue_drops_by_its_policy(when_full: WhenFull, kept: list[int], dropped: list[int]) -> None:
    """The bound is honoured (the running item does not count); the policy picks what is dropped, counted and
    reported."""
    gate, lost = Gate(), []
    worker = Worker("test-worker")
    lane = worker.queue(gate, maxsize=3, when_full=when_full, on_drop=lost.append)
    worker.start()
    try:
        lane.put(0)
        await settle()
        assert gate.started == [0]  # running, out of the queue
        results = [lane.put(n) for n in (1, 2, 3, 4)]
        assert len(lane) == 3 and lane.full and list(lane) == kept
        assert lost == dropped and lane.dropped == 1
        assert results == [True, True, True, when_full is WhenFull.DROP_OLDEST]
        gate.release.set()
        await worker.drain()
        assert gate.finished == [0, *kept]
    finally:
        await worker.close()


async def test_a_refusing_queue_raises_and_changes_nothing() -> None:
    """`WhenFull.REFUSE`: the caller gets `QueueFullError`, the waiting items stay, nothing is counted."""
    worker = Worker("test-worker")
    lane = worker.queue(Gate(), maxsize=2, when_full=WhenFull.REFUSE)
    lane.put(1)
    lane.put(2)
    with pytest.raises(QueueFullError):
        lane.put(3)
    assert list(lane) == [1, 2] and lane.dropped == 0


async def test_drain_waits_for_the_queue_and_the_running_item() -> None:
    """`drain` returns only once nothing waits and nothing runs; a failing item is skipped, not fatal."""
    handled: list[int] = []

    async def handle(item: int) -> None:
        await asyncio.sleep(0)
        if item == 2:
            raise ValueError("bad item")
        handled.append(item)

    worker = Worker("test-worker")
    lane = worker.queue(handle, maxsize=8, when_full=WhenFull.REFUSE)
    assert worker.idle
    worker.start()
    try:
        for n in range(5):
            lane.put(n)
        assert not worker.idle
        await asyncio.wait_for(worker.drain(), 5)
        assert worker.idle and handled == [0, 1, 3, 4] and len(lane) == 0
    finally:
        await worker.close()


async def test_earlier_lanes_go_first() -> None:
    """Lanes are served in creation order: a waiting item of the first lane goes before the second lane's."""
    order: list[str] = []

    async def record(item: str) -> None:
        order.append(item)

    worker = Worker("test-worker")
    urgent = worker.queue(record, maxsize=4, when_full=WhenFull.DROP_OLDEST)
    later = worker.queue(record, maxsize=4, when_full=WhenFull.DROP_OLDEST)
    later.put("job-1")
    later.put("job-2")
    urgent.put("stamp")
    worker.start()
    try:
        await worker.drain()
        assert order == ["stamp", "job-1", "job-2"]
    finally:
        await worker.close()


async def test_remove_takes_waiting_items_out() -> None:
    """`remove` takes matching waiting items out without counting them as dropped."""
    worker = Worker("test-worker")
    lane = worker.queue(Gate(), maxsize=8, when_full=WhenFull.REFUSE)
    for n in range(5):
        lane.put(n)
    assert lane.remove(lambda n: n % 2 == 0) == [0, 2, 4]
    assert list(lane) == [1, 3] and lane.dropped == 0


async def test_close_drains_then_cancels_the_running_item() -> None:
    """`close` cancels the item being handled (its handler sees the cancellation) and leaves the rest waiting;
    with ``drain_s`` it first lets the queue run down for that long."""
    gate = Gate()
    worker = Worker("test-worker")
    lane = worker.queue(gate, maxsize=4, when_full=WhenFull.REFUSE)
    worker.start()
    lane.put(1)
    lane.put(2)
    await settle()
    await worker.close(drain_s=0.01)  # item 1 never finishes: the drain gives up
    assert gate.started == [1] and gate.cancelled == [1] and gate.finished == []
    assert list(lane) == [2] and not worker.running


async def test_close_re_raises_the_callers_cancellation() -> None:
    """A caller cancelled while `close` waits for a slow handler is cancelled: `close` never swallows it."""
    stubborn_started, let_go = asyncio.Event(), asyncio.Event()

    async def stubborn(item: int) -> None:
        try:
            stubborn_started.set()
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            await let_go.wait()  # slow clean-up: `close` is still waiting when its caller is cancelled
            raise

    worker = Worker("test-worker")
    lane = worker.queue(stubborn, maxsize=1, when_full=WhenFull.REFUSE)
    worker.start()
    lane.put(1)
    await stubborn_started.wait()
    closer = asyncio.create_task(worker.close(timeout=30))
    await settle()
    assert not closer.done()
    closer.cancel()
    with pytest.raises(asyncio.CancelledError):
        await closer
    assert closer.cancelled()
    let_go.set()
    await settle()


async def test_an_owned_task_starts_once_and_closes_idempotently() -> None:
    """`OwnedTask`: a second `start` is refused (its coroutine closed unrun); `close` cancels, and is a no-op
    when nothing runs."""
    ran = asyncio.Event()

    async def forever() -> None:
        ran.set()
        await asyncio.Event().wait()

    owned = OwnedTask("test-owned")
    await owned.close()  # never started
    owned.start(forever())
    second = forever()
    with pytest.raises(RuntimeError):
        owned.start(second)
    assert second.cr_frame is None  # closed, so no "never awaited" warning
    await ran.wait()
    assert owned.running
    await owned.close()
    assert not owned.running
