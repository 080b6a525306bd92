"""Importers' streaming parsers: a person's exported history in, `ImportedMessage` records out.

This layer is sans-I/O apart from reading the one file it is given: no database, no embedding, no keys.
Every parser is a generator over a *seekable binary* file that

1. validates the whole file first, in constant memory, when it is called: a malformed file (truncated JSON,
   wrong encoding, binary junk, wrong structure) raises `ImportFormatError` from the call itself, so no
   iterator exists and nothing is ever yielded from it; then
2. returns an iterator that yields `ImportedMessage` / `Skipped` records in file order, one at a time,
   deterministically.

Typical use by the import job to come::

    fmt = detect(path, head)
    report = survey(fmt, f, path=path)        # who is in it: ask the user which participant they are
    for record in parse(fmt, f, path=path, me=Me.of(chosen)):
        ...                                   # write inside one transaction

Formats: `whatsapp`, `telegram`, `generic` (documented JSON / JSON Lines / CSV), `notes`, Facebook/Instagram
(`meta`) messages and posts, and `twitter`. `MEDIA_FORMATS` (``audio``, ``video``, ``whatsapp_zip``) need
the speech model, so `parse` does not take them: the import job's `voice_server.avatar.imports.recordings_job` reads
them with `recordings`, `keyframes` and `whatsapp_zip`.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import PurePath
from typing import IO

from voice_server.avatar.importers import generic, meta, notes, telegram, twitter, whatsapp, whatsapp_zip
from voice_server.avatar.importers.detect import FORMATS, HEAD_BYTES, MEDIA_FORMATS, Format, detect
from voice_server.avatar.importers.records import (
    NOBODY,
    ImportedMessage,
    ImportFormatError,
    ImportReport,
    Me,
    Record,
    Skipped,
    Tally,
)

__all__ = [
    "FORMATS",
    "HEAD_BYTES",
    "MEDIA_FORMATS",
    "NOBODY",
    "Format",
    "ImportFormatError",
    "ImportReport",
    "ImportedMessage",
    "Me",
    "Record",
    "Skipped",
    "Tally",
    "detect",
    "parse",
    "participants",
    "survey",
]


def parse(fmt: Format, f: IO[bytes], *, me: Me = NOBODY, path: str = "", author: str = "me") -> Iterator[Record]:
    """Parse ``f`` as ``fmt``, taking what the format cannot say from ``path``.

    ``path`` (the file's path or upload name) gives a WhatsApp chat's name, a note's title and whether Meta
    JSON is Instagram's. ``author`` is the sender of the user's own notes, posts and tweets.

    Raises:
        ImportFormatError: before any record, when ``f`` is not a valid ``fmt`` file.
        ValueError: ``fmt`` is one of `MEDIA_FORMATS` (they are transcribed by the import job).
    """
    name = PurePath(path).name
    match fmt:
        case "whatsapp":
            return whatsapp.parse(f, me=me, conversation=whatsapp.conversation_from_filename(name) if name else "")
        case "telegram":
            return telegram.parse(f, me=me)
        case "generic":
            return generic.parse(f, me=me)
        case "notes":
            return notes.parse(f, title=PurePath(name).stem, author=author)
        case "meta_messages":
            return meta.parse_messages(f, me=me, source=meta.source_of(path))
        case "meta_posts":
            return meta.parse_posts(f, author=author, source=meta.source_of(path))
        case "twitter":
            return twitter.parse(f, author=author)
        case "audio" | "video" | "whatsapp_zip":
            raise ValueError(f"{fmt} files are transcribed by the import job (avatar.imports.recordings_job)")


def survey(fmt: Format, f: IO[bytes], *, path: str = "", me: Me = NOBODY) -> ImportReport:
    """Read the whole file once and report on it (counts, skips, participants), keeping no messages; for a
    WhatsApp archive, its chat (audio and video have no participants: `ValueError`)."""
    if fmt == "whatsapp_zip":
        return whatsapp_zip.survey(f, PurePath(path).name, me)
    tally = Tally()
    for record in parse(fmt, f, me=me, path=path):
        tally.add(record)
    return tally.report()


def participants(fmt: Format, f: IO[bytes], *, path: str = "") -> tuple[tuple[str, int], ...]:
    """Who wrote in the file and how many messages each, most active first: what a UI shows to ask "which
    one is you?" before the real import."""
    return survey(fmt, f, path=path).participants
