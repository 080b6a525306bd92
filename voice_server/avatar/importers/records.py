"""What every importer yields: `ImportedMessage` and `Skipped`, the per-file `ImportReport`, and `Me`.

Sans-I/O values only. A parser yields `Record`s in file order; `Tally` folds them into an `ImportReport`
without keeping the messages (bounded memory: only the per-sender counts grow, capped at
`MAX_PARTICIPANTS` names).

Timestamps: ``at`` is timezone-aware (UTC) when the source states the instant (Telegram's unixtime,
Facebook/Instagram/X timestamps) and naive local wall-clock time when it does not (WhatsApp, notes with a
date in their heading); ``None`` when the source has no time at all.
"""

from __future__ import annotations

import hashlib
import unicodedata
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Literal

Source = Literal["whatsapp", "telegram", "generic", "notes", "facebook", "instagram", "twitter", "audio", "video"]
Attachment = Literal["image", "video", "audio", "voice", "sticker", "gif", "document", "contact", "location", "other"]
SkipReason = Literal[
    "system",  # service line: encryption notice, "X joined", group renamed, Telegram service message
    "deleted",  # "This message was deleted"
    "empty",  # nothing to keep (no text and no attachment)
    "bad_date",  # a header line whose date/time does not exist (e.g. month 13)
    "bad_record",  # a record with the wrong shape (missing sender/text, wrong JSON types, short CSV row)
    "retweet",  # someone else's words reposted by the user
    "no_speech",  # an audio/video file or voice note in which no words were heard
    "media_already_imported",  # audio/video content this user imported before: not transcribed again
    "media_missing",  # a chat line names a voice note the archive does not hold
    "media_damaged",  # a voice note in an archive that cannot be decoded (the chat itself is imported)
    "too_large",  # a JSON record over `MAX_RECORD_EVENTS` values or `MAX_RECORD_CHARS` characters: not a message
]

MAX_PARTICIPANTS = 10_000  # distinct senders counted per file; beyond it they are counted as OTHER_SENDERS
OTHER_SENDERS = "\u2026others"
MAX_TEXT_CHARS = 64 * 1024  # a message's text is cut here (WhatsApp's own limit is 65,536 characters)
MAX_RECORD_EVENTS = 50_000  # values (strings, numbers, keys, containers) in one JSON message, post or tweet
MAX_RECORD_CHARS = 4 << 20  # characters of strings and keys in one JSON record (a long post is ~63,000)
_INVISIBLE = dict.fromkeys(map(ord, "\u200e\u200f\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069\ufeff"))


class ImportFormatError(ValueError):
    """The file is not in the format it was parsed as, or is damaged (truncated, wrong encoding, binary).

    Parsers raise it from the parse call itself, before returning an iterator: each validates the whole file
    in a first pass. The message
    says what is wrong and where (line or byte offset) in words a user can act on.
    """


@dataclass(frozen=True, slots=True)
class ImportedMessage:
    """One message or note, normalised across sources.

    Attributes:
        source: the format it came from.
        conversation: the chat's name ("" for a 1:1 WhatsApp export parsed without one, the note's file
            title for notes, "posts"/"tweets" for feeds).
        sender: the display name as the export spells it (invisible direction marks removed).
        at: see the module docstring.
        text: the message text, unicode-normalised to NFC, without a trailing edit marker; "" for a pure
            attachment.
        is_user: whether `Me` matched the sender (always true for the user's own notes, posts and tweets).
        attachment: what media the message carried (the media itself is never imported here).
        where: 1-based line number (text formats) or 0-based record index (JSON formats) of its start;
            for a transcript, its part number within the recording.
        attachment_name: the attached file's name when the export names it (WhatsApp ``<attached: …>``);
            not stored, and not part of the fingerprint.
        transcribed_from: for text transcribed from audio, ``<sha256 of the audio file>:<part>``; the
            fingerprint is then this alone (see `fingerprint`).
    """

    source: Source
    conversation: str
    sender: str
    at: datetime | None
    text: str
    is_user: bool
    attachment: Attachment | None = None
    where: int = 0
    attachment_name: str = ""
    transcribed_from: str = ""

    def fingerprint(self) -> str:
        """A stable hex digest of what the message *is* (not where it sits in the file).

        Re-exporting a chat with newer messages appended keeps the old messages' fingerprints, so the
        import job can skip what it already has. Identical messages (same sender, minute, text) collide;
        the job disambiguates them with an occurrence counter. A transcript is identified by the audio it
        came from and its part: its words depend on the speech model, the recording does not, so the same
        voice note imported again (alone, or inside a chat archive) is the same message.
        """
        if self.transcribed_from:
            return hashlib.sha256(f"transcript\x1f{self.transcribed_from}".encode()).hexdigest()
        at = self.at.isoformat() if self.at else ""
        parts = (self.source, self.conversation, self.sender, at, self.text, self.attachment or "")
        return hashlib.sha256("\x1f".join(parts).encode()).hexdigest()


@dataclass(frozen=True, slots=True)
class Skipped:
    """A record the parser read and deliberately did not import, with why and where (see `ImportedMessage`)."""

    where: int
    reason: SkipReason


Record = ImportedMessage | Skipped


def clean_text(text: str) -> str:
    """Message text as every importer returns it: at most `MAX_TEXT_CHARS` characters (the rest is dropped:
    bounded work for every later step), NFC-normalised, surrounding whitespace removed."""
    return unicodedata.normalize("NFC", text.strip()[:MAX_TEXT_CHARS]).strip()


def clean_name(name: str) -> str:
    """A sender name without direction/format marks and surrounding space, NFC-normalised."""
    return unicodedata.normalize("NFC", name.translate(_INVISIBLE)).strip()


@dataclass(frozen=True, slots=True)
class Me:
    """Which participant is the user: one or more display names (or Telegram ids like ``user123``).

    Matching ignores case, direction marks and surrounding space. ``Me.nobody()`` matches no one (used for
    the first, survey pass, before the user has said who they are).
    """

    names: frozenset[str] = frozenset()

    @classmethod
    def of(cls, names: str | Iterable[str]) -> Me:
        """`Me` for a name or several (people appear under different names across exports)."""
        items = [names] if isinstance(names, str) else list(names)
        return cls(frozenset(clean_name(n).casefold() for n in items if clean_name(n)))

    @classmethod
    def nobody(cls) -> Me:
        """A `Me` that matches no sender."""
        return cls()

    def matches(self, *aliases: str | None) -> bool:
        """Whether any of the sender's aliases (name, id) is one of the user's names."""
        return any(a is not None and clean_name(a).casefold() in self.names for a in aliases)


NOBODY = Me()  # the default `me` of every parser: no sender is the user


@dataclass(frozen=True, slots=True)
class ImportReport:
    """What one file held: counts only, safe to show and to log.

    Attributes:
        messages: messages yielded.
        from_user: of those, how many `Me` matched.
        skipped: reason → count.
        participants: (sender, messages) most frequent first, then by name (deterministic).
        first_at, last_at: earliest and latest timestamp seen (naive and aware are not compared with each
            other: a file holds one kind).
    """

    messages: int
    from_user: int
    skipped: Mapping[str, int]
    participants: tuple[tuple[str, int], ...]
    first_at: datetime | None
    last_at: datetime | None


@dataclass(slots=True)
class Tally:
    """Folds a parser's records into an `ImportReport`; feed every record to `add`, then call `report`."""

    messages: int = 0
    from_user: int = 0
    skipped: Counter[str] = field(default_factory=Counter)
    senders: Counter[str] = field(default_factory=Counter)
    first_at: datetime | None = None
    last_at: datetime | None = None

    def add(self, record: Record) -> None:
        """Count one record."""
        match record:
            case Skipped(reason=reason):
                self.skipped[reason] += 1
            case ImportedMessage(sender=sender, at=at, is_user=is_user):
                self.messages += 1
                self.from_user += is_user
                if sender in self.senders or len(self.senders) < MAX_PARTICIPANTS:
                    self.senders[sender] += 1
                else:
                    self.senders[OTHER_SENDERS] += 1
                if at is not None:
                    if self.first_at is None or at < self.first_at:
                        self.first_at = at
                    if self.last_at is None or at > self.last_at:
                        self.last_at = at

    def report(self) -> ImportReport:
        """The report for everything added so far."""
        ranked = sorted(self.senders.items(), key=lambda kv: (-kv[1], kv[0]))
        return ImportReport(
            messages=self.messages,
            from_user=self.from_user,
            skipped=dict(sorted(self.skipped.items())),
            participants=tuple(ranked),
            first_at=self.first_at,
            last_at=self.last_at,
        )
