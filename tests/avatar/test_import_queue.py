"""The import queue is fair: per-user slots (uploading, waiting and running count), a global cap, and
round-robin service between users, so one user can neither lock others out nor make them wait behind a
long line of their own jobs."""

from __future__ import annotations

import asyncio

import pytest

from voice_server.avatar.imports.queue import FairQueue, QueueFullError, QuotaExceededError


def test_a_user_at_their_quota_is_refused_and_others_are_not() -> None:
    """A's fifth admission is refused with the quota error; B is admitted; a released slot admits A again."""
    queue: FairQueue[str, int] = FairQueue(per_owner=4, total=64)
    for _ in range(4):
        queue.admit("A")
    with pytest.raises(QuotaExceededError, match="you already have 4 imports"):
        queue.admit("A")
    queue.admit("B")
    queue.release("A")
    queue.admit("A")
    assert (queue.held("A"), queue.held("B")) == (4, 1)


def test_the_global_cap_refuses_everyone_once_reached() -> None:
    """Past ``total`` held slots, any user gets the busy error (a QueueFullError that is not the quota one)."""
    queue: FairQueue[str, int] = FairQueue(per_owner=2, total=3)
    queue.admit("A")
    queue.admit("A")
    queue.admit("B")
    with pytest.raises(QueueFullError) as refused:
        queue.admit("C")
    assert not isinstance(refused.value, QuotaExceededError) and refused.value.retry_after_s > 0


async def test_jobs_are_served_round_robin_between_users() -> None:
    """A queues four jobs, then B and C one each: B and C run after A's first, not after all four."""
    queue: FairQueue[str, str] = FairQueue(per_owner=4, total=64)
    for owner, items in (("A", ["a1", "a2", "a3", "a4"]), ("B", ["b1"]), ("C", ["c1"])):
        for item in items:
            queue.admit(owner)
            queue.put(owner, item)
    order = [(await queue.get())[1] for _ in range(6)]
    assert order == ["a1", "b1", "c1", "a2", "a3", "a4"]


async def test_get_waits_for_a_put_without_polling() -> None:
    """An empty queue's `get` sleeps until the next `put` wakes it."""
    queue: FairQueue[str, str] = FairQueue(per_owner=1, total=1)
    getter = asyncio.create_task(queue.get())
    await asyncio.sleep(0.01)
    assert not getter.done()
    queue.admit("A")
    queue.put("A", "x")
    assert await asyncio.wait_for(getter, 1) == ("A", "x")


async def test_removed_jobs_leave_the_rotation_and_keep_their_slots_until_released() -> None:
    """`remove` takes a user's waiting jobs out (the others still run in turn); their slots stay held until
    the caller releases them."""
    queue: FairQueue[str, str] = FairQueue(per_owner=2, total=8)
    for owner, item in (("A", "a1"), ("B", "b1"), ("A", "a2"), ("B", "b2")):
        queue.admit(owner)
        queue.put(owner, item)
    assert queue.remove(lambda item: item.startswith("a")) == [("A", "a1"), ("A", "a2")]
    assert queue.held("A") == 2 and queue.waiting() == 2
    queue.release("A")
    queue.release("A")
    assert [(await queue.get())[1] for _ in range(2)] == ["b1", "b2"]
    with pytest.raises(RuntimeError):
        queue.put("C", "never admitted")
