"""Playout buffer: heard-text accounting, bounded writes, clearing, and gaps inside a reply."""

from __future__ import annotations

import asyncio

import numpy as np

from pipeline.playout import Playout, heard_text

RATE = 1_000  # 1 sample per ms keeps the arithmetic readable


def _tone(ms: int) -> np.ndarray:
    return np.full(ms, 5000, np.int16)


def test_heard_text_counts_only_played_words() -> None:
    """Whole chunks played count fully; a partly played chunk gives its share of words, rounded down."""
    spans = [(0, 100, "Hello there."), (100, 300, "How are you today?")]
    assert heard_text(spans, 40) == ""
    assert heard_text(spans, 50) == "Hello"
    assert heard_text(spans, 100) == "Hello there."
    assert heard_text(spans, 200) == "Hello there. How are"
    assert heard_text(spans, 300) == "Hello there. How are you today?"


async def test_write_waits_for_room_and_clear_releases_it() -> None:
    """A writer above the high-water mark waits; clearing its reply releases it with False."""
    playout = Playout(RATE, max_buffered_s=0.1)
    assert await playout.write(1, _tone(150), "first")
    blocked = asyncio.create_task(playout.write(1, _tone(50), "second"))
    await asyncio.sleep(0)
    assert not blocked.done()
    playout.clear(1)
    assert await blocked is False


async def test_gap_inside_a_reply_is_counted_once_per_gap() -> None:
    """Reading past the audio of a reply that has more to come is an underrun; after end_reply it is not."""
    drained: list[int] = []
    playout = Playout(RATE, on_drained=drained.append)
    await playout.write(7, _tone(40), "one")
    assert np.all(playout.read(20) == 5000)
    playout.read(20)  # exactly the rest: no gap yet
    playout.read(20)
    playout.read(20)  # still dry: the same gap
    assert (playout.underruns, round(playout.underrun_s, 3)) == (1, 0.04)
    await playout.write(7, _tone(20), "two")
    playout.read(20)
    playout.end_reply(7)
    playout.read(20)  # silence after the reply ended is not a gap
    assert (playout.underruns, round(playout.underrun_s, 3)) == (1, 0.04)
    assert drained == [7] and playout.heard_text(7) == "one two"


async def test_clearing_a_paused_reply_plays_nothing_more() -> None:
    """A reply paused (faded out) and then interrupted leaves silence: no fade of unplayed audio (a click)."""
    playout = Playout(RATE)
    await playout.write(3, _tone(100), "paused reply")
    playout.read(20)
    playout.pause()
    playout.read(20)  # the pause fades out here
    assert playout.paused
    playout.clear(3)
    assert not np.any(playout.read(40))
    await playout.write(4, _tone(40), "next")
    playout.clear(4)  # cleared while playing: a short fade-out, then silence
    faded = playout.read(20)
    assert 0 < np.count_nonzero(faded) <= 4 and not np.any(playout.read(20))
