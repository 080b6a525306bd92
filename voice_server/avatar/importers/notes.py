"""Plain-text and Markdown notes written by the user: a journal file, a notes folder, an Obsidian vault page.

One file is one note, or, with ``split_level`` set (the default: 1), one note per ATX heading of that level
or higher (``# Title``; ``## Sub`` too with ``split_level=2``). Text before the first such heading is a
note of its own. Headings inside fenced code blocks (``` or ~~~) do not split, and a leading YAML front
matter block (``---`` … ``---``) is dropped. The heading line stays in the note's text (its words matter).

Every note is the user's: ``sender`` is ``author`` and ``is_user`` is true. ``conversation`` is the
``title`` given (the file's stem, say). ``at`` is the date a heading starts with (``# 2023-01-15 …``,
``# 15.01.2023``, ISO with time too), naive; otherwise ``None``. ``where`` is the note's first line.
A note that is only a heading is kept; blank text before the first heading is ignored; text beyond
`MAX_NOTE_CHARS` in one note is dropped (bounded memory).
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterator
from datetime import datetime
from typing import IO

from voice_server.avatar.importers._io import check_text, text_lines
from voice_server.avatar.importers.records import ImportedMessage, Record, Skipped

MAX_NOTE_CHARS = 256 * 1024
# The closing "#"s are stripped with rstrip, not a lazy ".*?" before "[ \t#]*$": that pair retries the
# trailing run at every character, quadratic on a heading line full of "#".
_HEADING = re.compile(r"^(?P<level>#{1,6})[ \t]+(?P<title>.*)$")
_FENCE = re.compile(r"^[ \t]{0,3}(?P<fence>`{3,}|~{3,})")
_ISO_DATE = re.compile(r"^(?P<y>\d{4})-(?P<m>\d{2})-(?P<d>\d{2})(?:[T ](?P<H>\d{2}):(?P<M>\d{2}))?")
_DMY_DATE = re.compile(r"^(?P<d>\d{1,2})[./](?P<m>\d{1,2})[./](?P<y>\d{4})")


def parse(f: IO[bytes], *, title: str = "", author: str = "me", split_level: int | None = 1) -> Iterator[Record]:
    """Yield the file's notes in order.

    Args:
        f: the text file (UTF-8, or UTF-16 with a BOM), binary and seekable; left open.
        title: the ``conversation`` every note gets.
        author: the ``sender`` every note gets.
        split_level: split at headings of this level or higher (1–6), or ``None`` for one note per file.

    Raises:
        ImportFormatError: before any note, when the file is not text (undecodable, NUL bytes).
    """
    if split_level is not None and not 1 <= split_level <= 6:
        raise ValueError("split_level must be 1..6 or None")
    check_text(f)
    return _notes(f, title, author, split_level)


def _notes(f: IO[bytes], title: str, author: str, split_level: int | None) -> Iterator[Record]:
    start, heading, size = 1, "", 0
    body: list[str] = []
    fence: str | None = None
    front_matter = False
    with text_lines(f) as lines:
        for n, line in lines:
            if n == 1 and line.strip() == "---":
                front_matter = True
                start = 2
                continue
            if front_matter:
                if line.strip() in ("---", "..."):
                    front_matter = False
                start = n + 1
                continue
            if m := _FENCE.match(line):
                mark = m["fence"][0] * 3
                fence = None if fence == mark else fence or mark
            elif fence is None and split_level is not None and (h := _HEADING.match(line)):
                if len(h["level"]) <= split_level:
                    if heading or any(part.strip() for part in body):
                        yield _note(start, heading, body, title, author)
                    start, heading, body, size = n, h["title"].rstrip(" \t#"), [], 0
            if size < MAX_NOTE_CHARS:
                body.append(line)
                size += len(line) + 1
    if heading or any(part.strip() for part in body):
        yield _note(start, heading, body, title, author)


def _note(where: int, heading: str, body: list[str], title: str, author: str) -> Record:
    text = unicodedata.normalize("NFC", "\n".join(body)[:MAX_NOTE_CHARS]).strip()
    if not text:
        return Skipped(where, "empty")
    return ImportedMessage("notes", title, author, _heading_date(heading), text, True, None, where)


def _heading_date(heading: str) -> datetime | None:
    m = _ISO_DATE.match(heading) or _DMY_DATE.match(heading)
    if m is None:
        return None
    parts = m.groupdict()
    try:
        return datetime(
            int(parts["y"]), int(parts["m"]), int(parts["d"]), int(parts.get("H") or 0), int(parts.get("M") or 0)
        )
    except ValueError:
        return None
