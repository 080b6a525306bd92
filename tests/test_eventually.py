"""The tests' one bounded poll: it returns the probe's value once it holds and fails naming what never happened."""

from __future__ import annotations

import itertools

import pytest

from tests.eventually import eventually, eventually_async


def test_returns_the_first_value_that_holds() -> None:
    """The probe runs until ``until`` holds; that value is returned, and the probe is not called again."""
    counter = itertools.count()
    assert eventually(lambda: next(counter), until=lambda n: n >= 3, timeout_s=5, interval=0, what="three") == 3
    assert next(counter) == 4


def test_fails_with_what_and_the_last_value() -> None:
    """After the timeout the failure names ``what`` and the last value seen, so a log needs no rerun."""
    with pytest.raises(AssertionError, match=r"the import to end: not within 0.05 s \(last seen: \['running'\]\)"):
        eventually(lambda: ["running"], until=lambda s: s == ["done"], timeout_s=0.05, interval=0.01,
                   what="the import to end")


async def test_async_takes_plain_and_awaitable_probes() -> None:
    """`eventually_async` awaits a probe's awaitable and takes a plain value as it is."""
    counter = itertools.count()

    async def later() -> int:
        return next(counter)

    assert await eventually_async(later, until=lambda n: n == 2, timeout_s=5, interval=0, what="two") == 2
    assert await eventually_async(lambda: "ready", timeout_s=5, what="ready") == "ready"
    with pytest.raises(AssertionError, match="nothing: not within 0.01 s"):
        await eventually_async(lambda: 0, timeout_s=0.01, interval=0.005, what="nothing")
