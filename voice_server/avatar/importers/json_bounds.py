"""Hostile-JSON guard: one bounded pass over the raw bytes before any JSON parser sees them.

Why it exists: ijson's prefixed parsers (``ijson.parse`` / ``ijson.items``, which every JSON importer uses)
keep one prefix string per open container, each as long as the path to it ("messages.item.item.item…"), so
a document nested *d* deep holds O(d²) characters at once: a 200 KB Telegram ``result.json`` nested 100,000
deep needs tens of gigabytes. And yajl buffers a whole token (a string, a number) before it hands it on, so
a single 2 GB string is 2 GB in memory, then again as a Python ``str``. Neither can be stopped from inside
the parser, so `scan_json` reads the bytes first, in fixed-size chunks, and refuses a document that

* nests deeper than `MAX_DEPTH` containers,
* holds a string (or object key) over `MAX_STRING_BYTES` raw bytes, or
* holds a bare token (number, ``true``, junk) over `MAX_SCALAR_BYTES` bytes.

A document it accepts can be parsed by ijson with O(`MAX_DEPTH`²) prefix characters and token buffers of at
most those sizes. The scan is exact for valid JSON (brackets are counted only outside strings, a quote
preceded by an odd run of backslashes is escaped); on invalid JSON it may misplace string boundaries, but
every byte is still inside either a string or a bare token, both bounded, and yajl (which runs next and
agrees with the scan up to the first syntax error) rejects the document. Memory: one chunk and a few numpy
arrays over it (about 16 MB at `CHUNK` bytes); time: a few numpy passes per chunk.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import IO

import numpy as np
import numpy.typing as npt

from voice_server.avatar.importers.records import ImportFormatError

MAX_DEPTH = 64  # Telegram's full export nests 8 deep, Meta's posts ~7: 64 is far beyond any real export
MAX_STRING_BYTES = 4 << 20  # raw, escapes included: a 63,206-character Facebook post as \u-mojibake is ~760 KB
MAX_SCALAR_BYTES = 256  # ids and timestamps are ≤ 20 digits; Python refuses ints over 4,300 digits anyway
CHUNK = 256 * 1024

_QUOTE, _BACKSLASH = ord('"'), ord("\\")


@dataclass(slots=True)
class _State:
    """What one chunk hands the next (absolute offsets)."""

    depth: int = 0
    in_string: bool = False
    string_start: int = 0  # offset of the open string's quote
    backslashes: int = 0  # parity of the backslash run the previous chunk ended with
    bare_run: int = 0  # bytes since the previous chunk's last delimiter


def scan_json(f: IO[bytes], start: int) -> None:
    """Check the JSON document from ``start`` to the end of ``f`` against the bounds (see the module doc).

    Leaves ``f`` at its end. Does not check syntax: call it before the parser that does.

    Raises:
        ImportFormatError: nested deeper than `MAX_DEPTH`, or a string or bare token too long, with the
            byte offset where the limit was crossed.
    """
    f.seek(start)
    state = _State()
    offset = start
    while chunk := f.read(CHUNK):
        _scan_chunk(chunk, offset, state)
        offset += len(chunk)


def _scan_chunk(chunk: bytes, base: int, state: _State) -> None:
    """Advance ``state`` over ``chunk`` (which starts at offset ``base``), raising at the first excess.

    Works on positions of the few bytes that matter (quotes, backslashes, brackets, delimiters), found with
    whole-chunk numpy comparisons, so the cost per byte is a handful of vector operations.
    """
    data = np.frombuffer(chunk, dtype=np.uint8)
    entered_inside = state.in_string
    quotes = _unescaped_quotes(data, chunk, state)
    _check_strings(quotes + base, base + data.size, state)

    folded = data | 0x20  # "[" → "{" and "]" → "}"
    brackets = np.flatnonzero((folded == ord("{")) | (folded == ord("}")))
    # A bracket is structure when an even number of quotes (with the carried state) precede it.
    structural = brackets[(np.searchsorted(quotes, brackets) + entered_inside) & 1 == 0]
    steps = np.where(folded[structural] == ord("{"), 1, -1)
    depth = state.depth + np.cumsum(steps, dtype=np.int64)
    if depth.size and int(depth.max()) > MAX_DEPTH:
        at = base + int(structural[int(np.argmax(depth > MAX_DEPTH))])
        raise ImportFormatError(f"the JSON nests deeper than {MAX_DEPTH} levels (at byte {at:,}): not an export")
    if depth.size:
        state.depth = int(depth[-1])
    _check_bare_tokens(data, quotes, base, entered_inside, state)


def _unescaped_quotes(data: npt.NDArray[np.uint8], chunk: bytes, state: _State) -> npt.NDArray[np.int64]:
    """Positions (in the chunk) of the quotes not escaped by an odd run of backslashes; carries the parity
    of the run the chunk ends with."""
    quotes = np.flatnonzero(data == _QUOTE)
    backslashes = np.flatnonzero(data == _BACKSLASH)
    carry = state.backslashes
    state.backslashes = (len(chunk) - len(chunk.rstrip(b"\\")) + (carry if not chunk.strip(b"\\") else 0)) & 1
    if not backslashes.size and not carry:
        return quotes
    # Each backslash's run starts where the positions stop being consecutive; a run at position 0 continues
    # the previous chunk's.
    starts = np.ones(backslashes.size, dtype=bool)
    starts[1:] = np.diff(backslashes) != 1
    run_start = np.maximum.accumulate(np.where(starts, backslashes, -1)) if backslashes.size else backslashes
    before = np.searchsorted(backslashes, quotes) - 1  # the last backslash before each quote
    has = before >= 0
    adjacent = np.zeros(quotes.size, dtype=bool)
    adjacent[has] = backslashes[before[has]] == quotes[has] - 1
    runs = np.zeros(quotes.size, dtype=np.int64)
    runs[adjacent] = quotes[adjacent] - run_start[before[adjacent]]
    runs += np.where((quotes - runs) == 0, carry, 0)  # the run reaches back into the previous chunk
    unescaped: npt.NDArray[np.int64] = quotes[runs & 1 == 0]
    return unescaped


def _check_strings(quotes: npt.NDArray[np.int64], end: int, state: _State) -> None:
    """Pair each opening quote with its closing one and bound the distance; ``end`` is the chunk's end."""
    if state.in_string:
        quotes = np.concatenate(([state.string_start], quotes))
    opening, closing = quotes[0::2], quotes[1::2]
    lengths = closing - opening[: closing.size]
    too_long = lengths > MAX_STRING_BYTES
    if too_long.any():
        _string_too_long(int(opening[int(np.argmax(too_long))]))
    state.in_string = opening.size > closing.size
    if state.in_string:
        state.string_start = int(opening[-1])
        if end - state.string_start > MAX_STRING_BYTES:
            _string_too_long(state.string_start)


def _check_bare_tokens(
    data: npt.NDArray[np.uint8], quotes: npt.NDArray[np.int64], base: int, entered_inside: bool, state: _State
) -> None:
    """Bound the runs of bytes between delimiters (whitespace, controls, quotes, ``,:[]{}``) that lie
    outside strings: bare tokens. Runs inside strings are bounded by `_check_strings`. ``entered_inside``:
    whether the chunk starts inside a string."""
    folded = data | 0x20
    delimiter = (data <= 0x20) | (data == _QUOTE) | (data == ord(",")) | (data == ord(":")) | (folded == ord("{"))
    delimiter |= folded == ord("}")
    marks = np.concatenate(([-1 - state.bare_run], np.flatnonzero(delimiter), [data.size]))
    long_runs = np.flatnonzero(np.diff(marks) - 1 > MAX_SCALAR_BYTES)
    if long_runs.size:
        before = marks[long_runs]  # the delimiter each long run follows (-1 - carry: the chunk's start)
        quotes_before = np.searchsorted(quotes, before, side="right")
        outside = (quotes_before + entered_inside) & 1 == 0
        if outside.any():
            at = base + int(before[int(np.argmax(outside))]) + 1
            raise ImportFormatError(f"the JSON holds a value over {MAX_SCALAR_BYTES} characters that is not a "
                                    f"string (at byte {at:,}): not an export")
    state.bare_run = int(data.size - 1 - marks[-2])


def _string_too_long(at: int) -> None:
    raise ImportFormatError(f"the JSON holds a string over {MAX_STRING_BYTES:,} bytes (starting at byte {at:,}): "
                            "not text a person wrote")
