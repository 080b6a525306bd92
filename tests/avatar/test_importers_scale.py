"""Streaming at scale: a 100 k-message WhatsApp export and Telegram result.json in bounded memory."""

from __future__ import annotations

import time
import tracemalloc
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO

import pytest

from tests.avatar import import_fixtures as fx
from voice_server.avatar.importers import Record, Tally, telegram, whatsapp

MESSAGES = 100_000
PEAK_LIMIT = 20 * 1024 * 1024

Parser = Callable[[IO[bytes]], Iterator[Record]]
WRITERS: dict[str, tuple[Callable[[Path, int], int], Parser]] = {
    "whatsapp": (fx.whatsapp_android_stream, lambda f: whatsapp.parse(f)),
    "telegram": (fx.telegram_stream, lambda f: telegram.parse(f)),
}


def _consume(parser: Parser, path: Path) -> Tally:
    tally = Tally()
    with path.open("rb") as f:
        for record in parser(f):
            tally.add(record)
    return tally


def _peak(parser: Parser, path: Path) -> int:
    tracemalloc.start()
    try:
        _consume(parser, path)
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


@pytest.mark.slow
@pytest.mark.parametrize("fmt", sorted(WRITERS))
def test_100k_messages_parse_in_bounded_memory(fmt: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """100 k messages: all read, tracemalloc peak < 20 MB and not growing with the file (10 k vs 100 k)."""
    write, parser = WRITERS[fmt]
    small, big = tmp_path / "small", tmp_path / "big"
    write(small, MESSAGES // 10)
    size = write(big, MESSAGES)

    started = time.perf_counter()
    tally = _consume(parser, big)
    elapsed = time.perf_counter() - started
    report = tally.report()
    assert report.messages == MESSAGES and not report.skipped
    assert report.participants[0] == ("Ana Souza", MESSAGES // len(fx.SENDERS))

    peak_small, peak_big = _peak(parser, small), _peak(parser, big)
    with capsys.disabled():
        print(
            f"\n{fmt}: {MESSAGES:,} messages, {size / 2**20:.1f} MiB in {elapsed:.2f} s "
            f"= {MESSAGES / elapsed:,.0f} messages/s (both passes); tracemalloc peak {peak_big / 2**20:.2f} MiB "
            f"(10 k messages: {peak_small / 2**20:.2f} MiB)"
        )
    assert peak_big < PEAK_LIMIT
    assert peak_big < 2 * peak_small + 1024 * 1024  # constant, not proportional to the file
