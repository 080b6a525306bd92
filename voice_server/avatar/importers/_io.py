"""Reading the file an importer is given: seekable binary in, strictly decoded lines or JSON events out.

Every parser makes two passes over its file: a validating pass (`check_text` / `check_json`) that reads the
whole file in constant memory and raises `ImportFormatError` for anything damaged, then the yielding pass.
That is why a parser never yields a record from a file it later rejects, and why files must be seekable (the
import job spools uploads to a sealed temporary file first). A file that changes between the passes is
outside the contract.
"""

from __future__ import annotations

import codecs
import io
from collections import deque
from collections.abc import Iterator
from contextlib import contextmanager
from typing import IO, Any

import ijson  # type: ignore[import-untyped]  # ijson ships no type information

from voice_server.avatar.importers.records import ImportFormatError

JSON_BUF = 64 * 1024
MAX_LINE_CHARS = 1 << 20  # a "line" longer than this is not text a person wrote
_OVERLONG = "\x00overlong"  # marks a line cut at MAX_LINE_CHARS bytes (NUL cannot come from a valid line)


def require_seekable(f: IO[bytes]) -> None:
    """Raise `ValueError` unless ``f`` can be read twice (both passes)."""
    if not f.seekable():
        raise ValueError("importers need a seekable binary file (spool uploads to a temporary file first)")


def _bom_encoding(f: IO[bytes]) -> tuple[str, int]:
    f.seek(0)
    head = f.read(4)
    if head.startswith(codecs.BOM_UTF8):
        return "utf-8", 3
    if head.startswith(codecs.BOM_UTF16_LE) or head.startswith(codecs.BOM_UTF16_BE):
        return "utf-16", 0  # the codec reads the BOM itself
    return "utf-8", 0


@contextmanager
def text_lines(f: IO[bytes], *, keepends: bool = False) -> Iterator[Iterator[tuple[int, str]]]:
    """(1-based line number, line without its newline unless ``keepends``) from the start of ``f``.

    UTF-8 (with or without BOM) is decoded line by line, so an error names the exact line; UTF-16 with a
    BOM is accepted too (errors then name the first line of the failing chunk). Other bytes, NUL bytes or
    a line over `MAX_LINE_CHARS` raise `ImportFormatError`. Lines end at ``\n`` (``\r\n`` included).
    ``f`` stays open for the caller.
    """
    require_seekable(f)
    encoding, skip = _bom_encoding(f)
    f.seek(skip)
    if encoding == "utf-16":
        wrapper = io.TextIOWrapper(f, encoding=encoding, errors="strict", newline=None)
        try:
            yield _checked(_numbered(wrapper), encoding, keepends)
        finally:
            wrapper.detach()
    else:
        yield _checked(_utf8_lines(f), encoding, keepends)


def _numbered(wrapper: io.TextIOWrapper) -> Iterator[str]:
    while line := wrapper.readline(MAX_LINE_CHARS + 1):
        yield line


def _utf8_lines(f: IO[bytes]) -> Iterator[str]:
    while raw := f.readline(MAX_LINE_CHARS + 1):
        # An overlong line may be cut inside a character; decode only its start so the error says "too long".
        yield raw.decode("utf-8") if len(raw) <= MAX_LINE_CHARS else raw[:16].decode("utf-8", "replace") + _OVERLONG


def _checked(lines: Iterator[str], encoding: str, keepends: bool) -> Iterator[tuple[int, str]]:
    n = 0
    try:
        for n, line in enumerate(lines, start=1):  # noqa: B007  # n names the failing line below
            if len(line) > MAX_LINE_CHARS or line.endswith(_OVERLONG):
                raise ImportFormatError(f"line {n} is over {MAX_LINE_CHARS:,} characters: not a text export")
            if "\x00" in line:
                raise ImportFormatError(f"line {n} holds binary data (NUL bytes): not a text export")
            yield n, line if keepends else line.rstrip("\r\n")
    except UnicodeDecodeError as e:
        raise ImportFormatError(
            f"line {n + 1} is not {encoding.upper()} text ({e.reason}): re-export the file as UTF-8"
        ) from None


def check_text(f: IO[bytes]) -> int:
    """Decode the whole file once (constant memory); return its line count or raise `ImportFormatError`."""
    count = 0
    with text_lines(f) as lines:
        for count, _ in lines:  # noqa: B007
            pass
    return count


def _json_start(f: IO[bytes]) -> int:
    """Offset of the first JSON byte (after a UTF-8 BOM and whitespace); rejects what cannot be JSON."""
    require_seekable(f)
    f.seek(0)
    head = f.read(64)
    skip = 3 if head.startswith(codecs.BOM_UTF8) else 0
    if head[:2] in (codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE):
        raise ImportFormatError("the file is UTF-16; JSON exports are UTF-8: re-export it")
    body = head[skip:].lstrip()
    if not body:
        raise ImportFormatError("the file is empty")
    if body[:1] not in (b"{", b"["):
        raise ImportFormatError(f"not JSON: it starts with {body[:12]!r}")
    return skip


def check_json(f: IO[bytes], start: int | None = None) -> int:
    """Parse the whole JSON document once without building it; return the offset it starts at.

    Raises:
        ImportFormatError: not JSON, truncated, invalid UTF-8 or trailing junk, with the byte offset.
    """
    offset = _json_start(f) if start is None else start
    f.seek(offset)
    try:
        deque(ijson.basic_parse(f, buf_size=JSON_BUF), maxlen=0)
    except ijson.JSONError as e:
        what = "truncated" if "premature EOF" in _first_line(e) else "damaged"
        raise ImportFormatError(f"the JSON is {what} (read up to byte {f.tell():,}): {_first_line(e)}") from None
    except UnicodeDecodeError as e:
        raise ImportFormatError(f"the JSON is damaged near byte {f.tell():,}: {_first_line(e)}") from None
    return offset


def json_events(f: IO[bytes], offset: int) -> Iterator[tuple[str, str, Any]]:
    """ijson's (prefix, event, value) stream from ``offset`` (floats, not Decimals)."""
    f.seek(offset)
    return ijson.parse(f, buf_size=JSON_BUF, use_float=True)  # type: ignore[no-any-return]


def json_items(f: IO[bytes], offset: int, prefix: str) -> Iterator[Any]:
    """Each value at ``prefix`` (e.g. ``"item"`` for a top-level array), built one at a time."""
    f.seek(offset)
    return ijson.items(f, prefix, buf_size=JSON_BUF, use_float=True)  # type: ignore[no-any-return]


def _first_line(e: Exception) -> str:
    arg = e.args[0] if e.args else ""
    text = (arg.decode("utf-8", "replace") if isinstance(arg, bytes) else str(arg)).strip().splitlines()
    return text[0][:200] if text else type(e).__name__
