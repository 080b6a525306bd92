"""Waiting for what a server does in the background: one bounded poll with a message saying what never happened.

Use it only where the server offers nothing to wait on (no event, no response that carries the result): a
memory learned off the reply's path, a metric going back to zero after a peer left, a row a scheduler writes.
Where the server can signal (an SSE event, a WebSocket event, a response), wait on that instead.

    found = eventually(lambda: memories(srv, token), until=lambda ms: len(ms) >= 2, timeout_s=30,
                       what="two memories learned")

The probe runs at once, then every ``interval`` seconds, until ``until(value)`` holds, and its last value is
returned; after ``timeout_s`` seconds the wait fails with an ``AssertionError`` naming ``what`` and the last value
seen. An exception from the probe is not retried: it fails the test as it would have without the wait.
"""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar, overload

T = TypeVar("T")

# Long enough that a last value (a list of rows, a JSON body) is readable, short enough for a failure report.
_SHOWN_CHARS = 2000


def _never(what: str, timeout: float, value: object) -> AssertionError:
    shown = repr(value)
    if len(shown) > _SHOWN_CHARS:
        shown = shown[:_SHOWN_CHARS] + "…"
    return AssertionError(f"{what}: not within {timeout:g} s (last seen: {shown})")


def eventually(
    probe: Callable[[], T], *, until: Callable[[T], object] = bool, timeout_s: float, what: str,
    interval: float = 0.2,
) -> T:
    """Call ``probe`` until ``until(value)`` is true and return that value; fail after ``timeout_s`` seconds.

    Blocks the calling thread: use `eventually_async` inside a coroutine, where the event loop must keep running
    (a WebRTC peer, a SIP phone, a server in the same process).
    """
    deadline = time.monotonic() + timeout_s
    while True:
        value = probe()
        if until(value):
            return value
        if time.monotonic() >= deadline:
            raise _never(what, timeout_s, value)
        time.sleep(interval)


@overload
async def eventually_async(
    probe: Callable[[], Awaitable[T]], *, until: Callable[[T], object] = ..., timeout_s: float, what: str,
    interval: float = ...,
) -> T: ...


@overload
async def eventually_async(
    probe: Callable[[], T], *, until: Callable[[T], object] = ..., timeout_s: float, what: str, interval: float = ...
) -> T: ...


async def eventually_async(
    probe: Callable[[], Any], *, until: Callable[[Any], object] = bool, timeout_s: float, what: str,
    interval: float = 0.2,
) -> Any:
    """Like `eventually`, but sleeps on the event loop; ``probe`` may be a plain function or return an awaitable.

    A plain ``probe`` that does blocking I/O (a short HTTP request to the test server in another process) blocks
    the loop while it runs, as the loops this replaces did; keep such probes short.
    """
    deadline = time.monotonic() + timeout_s
    while True:
        value = probe()
        if inspect.isawaitable(value):
            value = await value
        if until(value):
            return value
        if time.monotonic() >= deadline:
            raise _never(what, timeout_s, value)
        await asyncio.sleep(interval)
