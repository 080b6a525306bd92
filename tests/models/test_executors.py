"""ComputeLane: model work off the event loop, bounded streaming, prompt stop. No models needed."""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from collections.abc import Iterator

import pytest

from models.executors import ComputeLane, ModelClosedError, StreamStalledError


@pytest.fixture
def lane() -> Iterator[ComputeLane]:
    """A one-worker lane, closed after the test (closing twice is fine)."""
    unit = ComputeLane("unit")
    yield unit
    unit.close()


def counting_producer(produced: list[int], limit: int = 1000) -> Iterator[int]:
    for i in range(limit):
        produced.append(i)
        yield i


async def test_run_executes_on_named_worker_thread(lane: ComputeLane) -> None:
    """lane.run() runs the function on the lane's own thread, never on the event loop's."""
    name = await lane.run(lambda: threading.current_thread().name)
    assert name.startswith("soma-unit") and name != threading.current_thread().name


async def test_stream_is_bounded_by_consumer_pace(lane: ComputeLane) -> None:
    """A producer never runs more than the buffer ahead of a consumer that has stopped reading."""
    produced: list[int] = []
    async with contextlib.aclosing(lane.stream(lambda _stop: counting_producer(produced), maxsize=3)) as items:
        assert await anext(items) == 0
        await asyncio.sleep(0.2)
        # 1 taken + 3 buffered + 1 produced and waiting for a slot.
        assert len(produced) <= 5


async def test_stream_propagates_producer_errors(lane: ComputeLane) -> None:
    """An exception raised on the worker surfaces in the consuming coroutine."""

    def failing(_stop: threading.Event) -> Iterator[int]:
        yield 1
        raise ValueError("boom")

    received = []
    with pytest.raises(ValueError, match="boom"):
        async for item in lane.stream(failing):
            received.append(item)
    assert received == [1]


async def test_abandoned_stream_releases_worker_after_stall_timeout(lane: ComputeLane) -> None:
    """A stream left open without being read gives up after stall_timeout, freeing the lane's worker."""
    produced: list[int] = []
    abandoned = lane.stream(lambda _stop: counting_producer(produced), maxsize=1, stall_timeout=0.3)
    await anext(abandoned)
    started = time.perf_counter()
    assert await lane.run(lambda: "next job") == "next job"
    assert time.perf_counter() - started < 2.0
    with pytest.raises(StreamStalledError):
        async for _ in abandoned:
            pass


async def test_close_stops_a_blocked_producer_promptly(lane: ComputeLane) -> None:
    """close() wakes a producer blocked on a full buffer instead of waiting for the stall timeout."""
    stream = lane.stream(lambda _stop: counting_producer([]), maxsize=1, stall_timeout=60)
    await anext(stream)
    await asyncio.sleep(0.05)
    started = time.perf_counter()
    await asyncio.to_thread(lane.close)
    assert time.perf_counter() - started < 1.0
    with pytest.raises(ModelClosedError):
        await lane.run(lambda: None)
    await stream.aclose()


async def test_pending_and_busy_time_track_submitted_work(lane: ComputeLane) -> None:
    """`pending` counts queued and running calls (what sessions read to shed optional work); `busy_s` adds
    up the worker's compute time (utilisation in the benchmarks)."""
    first = asyncio.create_task(lane.run(time.sleep, 0.05))
    second = asyncio.create_task(lane.run(time.sleep, 0.05))
    await asyncio.sleep(0.01)
    assert lane.pending == 2
    await asyncio.gather(first, second)
    assert lane.pending == 0
    assert 0.1 <= lane.busy_s < 0.5
