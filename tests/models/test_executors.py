"""ComputeLane: model work off the event loop, bounded streaming, prompt stop. No models needed."""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from collections.abc import Iterator

import pytest

from models.executors import ComputeLane, ModelClosedError, StreamStalledError


def counting_producer(produced: list[int], limit: int = 1000) -> Iterator[int]:
    for i in range(limit):
        produced.append(i)
        yield i


async def test_run_executes_on_named_worker_thread() -> None:
    """lane.run() runs the function on the lane's own thread, never on the event loop's."""
    lane = ComputeLane("unit")
    try:
        name = await lane.run(lambda: threading.current_thread().name)
        assert name.startswith("soma-unit") and name != threading.current_thread().name
    finally:
        lane.close()


async def test_stream_is_bounded_by_consumer_pace() -> None:
    """A producer never runs more than the buffer ahead of a consumer that has stopped reading."""
    lane = ComputeLane("unit")
    produced: list[int] = []
    try:
        async with contextlib.aclosing(lane.stream(lambda _stop: counting_producer(produced), maxsize=3)) as items:
            assert await anext(items) == 0
            await asyncio.sleep(0.2)
            # 1 taken + 3 buffered + 1 produced and waiting for a slot.
            assert len(produced) <= 5
    finally:
        lane.close()


async def test_stream_propagates_producer_errors() -> None:
    """An exception raised on the worker surfaces in the consuming coroutine."""
    lane = ComputeLane("unit")

    def failing(_stop: threading.Event) -> Iterator[int]:
        yield 1
        raise ValueError("boom")

    try:
        received = []
        with pytest.raises(ValueError, match="boom"):
            async for item in lane.stream(failing):
                received.append(item)
        assert received == [1]
    finally:
        lane.close()


async def test_abandoned_stream_releases_worker_after_stall_timeout() -> None:
    """A stream left open without being read gives up after stall_timeout, freeing the lane's worker."""
    lane = ComputeLane("unit")
    produced: list[int] = []
    try:
        abandoned = lane.stream(lambda _stop: counting_producer(produced), maxsize=1, stall_timeout=0.3)
        await anext(abandoned)
        started = time.perf_counter()
        assert await lane.run(lambda: "next job") == "next job"
        assert time.perf_counter() - started < 2.0
        with pytest.raises(StreamStalledError):
            async for _ in abandoned:
                pass
    finally:
        lane.close()


async def test_close_stops_a_blocked_producer_promptly() -> None:
    """close() wakes a producer blocked on a full buffer instead of waiting for the stall timeout."""
    lane = ComputeLane("unit")
    stream = lane.stream(lambda _stop: counting_producer([]), maxsize=1, stall_timeout=60)
    await anext(stream)
    await asyncio.sleep(0.05)
    started = time.perf_counter()
    await asyncio.to_thread(lane.close)
    assert time.perf_counter() - started < 1.0
    with pytest.raises(ModelClosedError):
        await lane.run(lambda: None)
    await stream.aclose()


async def test_pending_and_busy_time_track_submitted_work() -> None:
    """`pending` counts queued and running calls (what sessions read to shed optional work); `busy_s` adds
    up the worker's compute time (utilisation in the benchmarks)."""
    lane = ComputeLane("test-load")
    try:
        first = asyncio.create_task(lane.run(time.sleep, 0.05))
        second = asyncio.create_task(lane.run(time.sleep, 0.05))
        await asyncio.sleep(0.01)
        assert lane.pending == 2
        await asyncio.gather(first, second)
        assert lane.pending == 0
        assert 0.1 <= lane.busy_s < 0.5
    finally:
        lane.close()
