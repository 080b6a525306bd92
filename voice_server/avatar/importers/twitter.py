"""X/Twitter archive ``data/tweets.js`` (older archives: ``tweet.js``): the user's own tweets.

The file is JavaScript: ``window.YTD.tweets.part0 = [ {"tweet": {…}}, … ]``. The assignment prefix is
skipped and the array after it streamed as JSON. Each tweet's ``full_text`` (``text`` in old archives) is
HTML-escaped (``&amp;``) and its links are ``t.co`` short links: the text is unescaped, links are replaced
by their ``expanded_url``, and media links are removed (the media sets ``attachment``). ``created_at``
(``Wed Jan 15 14:30:05 +0000 2023``) becomes an aware UTC ``at``. Retweets (``RT @…``) are someone else's
words and are skipped as ``retweet``; replies and quotes are the user's and kept. ``conversation`` is
"tweets"; ``sender`` is ``author``.
"""

from __future__ import annotations

import html
import re
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from itertools import islice
from typing import IO, Any

from voice_server.avatar.importers._io import OVERSIZED, check_json, json_events, json_records
from voice_server.avatar.importers.records import (
    MAX_TEXT_CHARS,
    Attachment,
    ImportedMessage,
    ImportFormatError,
    Record,
    Skipped,
    clean_text,
)

_PREFIX = re.compile(rb"^(?:\xef\xbb\xbf)?\s*window\.YTD\.[A-Za-z_]+\.part\d+\s*=\s*")
_MONTHS = {m: i for i, m in enumerate("Jan Feb Mar Apr May Jun Jul Aug Sep Oct Nov Dec".split(), start=1)}
_CREATED = re.compile(r"^\w{3} (?P<mon>\w{3}) (?P<d>\d{2}) (?P<H>\d{2}):(?P<M>\d{2}):(?P<S>\d{2}) "
                      r"(?P<sign>[+-])(?P<oh>\d{2})(?P<om>\d{2}) (?P<y>\d{4})$")
_MEDIA: dict[str, Attachment] = {"photo": "image", "video": "video", "animated_gif": "gif"}
MAX_ENTITIES = 100  # links and media expanded per tweet (a real one has a handful)


def is_archive_head(head: bytes) -> bool:
    """Whether ``head`` starts like a Twitter archive data file."""
    return _PREFIX.match(head) is not None


def parse(f: IO[bytes], *, author: str = "me") -> Iterator[Record]:
    """Yield the user's tweets in file order (newest first, as the archive has them); ``where`` is the index.

    Raises:
        ImportFormatError: before any record: no ``window.YTD…=`` prefix, damaged JSON, or no array.
    """
    f.seek(0)
    m = _PREFIX.match(f.read(256))
    if m is None:
        raise ImportFormatError('not an X/Twitter archive file: it does not start with "window.YTD.…part0 ="')
    offset = check_json(f, m.end())
    _, first, _ = next(json_events(f, offset))
    if first != "start_array":
        raise ImportFormatError('X/Twitter archive: expected an array after "="')
    return (_tweet(i, obj, author) for i, obj in enumerate(json_records(f, offset, "item")))


def _tweet(index: int, obj: Any, author: str) -> Record:
    if obj is OVERSIZED:
        return Skipped(index, "too_large")
    tweet = obj.get("tweet", obj) if isinstance(obj, dict) else None
    if not isinstance(tweet, dict):
        return Skipped(index, "bad_record")
    raw = tweet.get("full_text", tweet.get("text"))
    if not isinstance(raw, str):
        return Skipped(index, "bad_record")
    if raw.startswith("RT @"):
        return Skipped(index, "retweet")
    text, attachment = _expand(raw, tweet)
    if not text and attachment is None:
        return Skipped(index, "empty")
    at = _created(tweet.get("created_at"))
    return ImportedMessage("twitter", "tweets", author, at, text, True, attachment, index)


def _expand(raw: str, tweet: dict[str, Any]) -> tuple[str, Attachment | None]:
    entities: dict[str, Any] = tweet["entities"] if isinstance(tweet.get("entities"), dict) else {}
    extended: dict[str, Any] = tweet["extended_entities"] if isinstance(tweet.get("extended_entities"), dict) else {}
    text = raw[:MAX_TEXT_CHARS]  # every replacement below scans the text: bounded text, bounded work
    for url in islice(entities.get("urls") or (), MAX_ENTITIES):
        if isinstance(url, dict) and isinstance(url.get("url"), str) and isinstance(url.get("expanded_url"), str):
            text = text.replace(url["url"], url["expanded_url"])
    attachment: Attachment | None = None
    for media in islice(extended.get("media") or entities.get("media") or (), MAX_ENTITIES):
        if isinstance(media, dict):
            attachment = attachment or _MEDIA.get(str(media.get("type")), "other")
            if isinstance(media.get("url"), str):
                text = text.replace(media["url"], "")
    return clean_text(html.unescape(text)), attachment


def _created(value: Any) -> datetime | None:
    m = _CREATED.match(value) if isinstance(value, str) else None
    if m is None or m["mon"] not in _MONTHS:
        return None
    offset_min = (int(m["oh"]) * 60 + int(m["om"])) * (-1 if m["sign"] == "-" else 1)
    try:
        local = datetime(int(m["y"]), _MONTHS[m["mon"]], int(m["d"]), int(m["H"]), int(m["M"]), int(m["S"]), tzinfo=UTC)
    except ValueError:
        return None
    return local - timedelta(minutes=offset_min)
