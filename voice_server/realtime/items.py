"""The conversation items of one Realtime connection, as ``conversation.item.retrieve|delete|truncate`` see them.

OpenAI's Realtime conversation is a list of items a client can read back, delete from the model's context,
and truncate (an assistant audio item, where the client's own playback stopped). Soma's model context is the
session's heard history (`pipeline.session.Session.history`): each item here records the session turn whose
message it is, so an edit lands on the right message (`Session.edit_turn`).

Bounded: the newest `MAX_ITEMS` items are kept (the history itself keeps far fewer messages); an older id is
answered ``item_not_found``, as an unknown one is.
"""

from __future__ import annotations

import collections
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal, Protocol, runtime_checkable

from pipeline.frames import Span
from pipeline.playout import heard_text
from pipeline.ports import Message
from voice_server.realtime import protocol as p

MAX_ITEMS = 256


@runtime_checkable
class HistoryKeeper(Protocol):
    """A context that also keeps the conversation beyond the session (`voice_server.conversations.AvatarContext`):
    told when a client edits the history, so the stored record and the live state follow."""

    async def history_edited(self, history: Sequence[Message], heard: tuple[int, str] | None = None) -> None:
        """``history`` is the session's history now; ``heard`` (turn id, text) when a reply was truncated to
        what the client played."""
        ...


@dataclass(slots=True)
class Item:
    """One user or assistant message of the conversation.

    Attributes:
        id: The item id the client knows.
        role: ``user`` or ``assistant``.
        audio: Spoken (a transcript of audio) rather than typed/text.
        text: Its text: what was typed, transcribed, or (assistant) sent and heard.
        status: ``in_progress``, ``completed`` or ``incomplete``.
        turn_id: The session turn it belongs to; ``None`` while a user item waits for ``response.create``.
        spans: Assistant audio: the spoken chunks in the reply's own audio time.
        played_s: Assistant audio: seconds of it sent to the client.
    """

    id: str
    role: Literal["user", "assistant"]
    audio: bool
    text: str
    status: str = "completed"
    turn_id: int | None = None
    spans: tuple[Span, ...] = ()
    played_s: float = 0.0

    def as_dict(self) -> dict[str, Any]:
        """The item in the protocol's shape."""
        if self.role == "user":
            return p.user_item(self.id, self.text, audio=self.audio)
        return p.assistant_item(self.id, self.text, audio=self.audio, status=self.status)

    def truncated_text(self, audio_end_ms: int) -> str:
        """The words of this assistant audio item heard by ``audio_end_ms`` into its audio (never more than
        was heard before).

        Raises:
            ProtocolError: Not an assistant audio item, or ``audio_end_ms`` beyond the audio sent.
        """
        if self.role != "assistant" or not self.audio:
            raise p.ProtocolError("invalid_value", "only assistant audio items can be truncated", param="item_id")
        sent_ms = round(self.played_s * 1000)
        if audio_end_ms > sent_ms:
            raise p.ProtocolError("invalid_value", f"audio_end_ms {audio_end_ms} is beyond the {sent_ms} ms of "
                                  "audio sent for this item", param="audio_end_ms")
        heard = heard_text(self.spans, audio_end_ms / 1000).split()
        return " ".join(heard[: len(self.text.split())])


class Items:
    """The newest `MAX_ITEMS` items by id, oldest first."""

    def __init__(self, limit: int = MAX_ITEMS) -> None:
        self._items: collections.OrderedDict[str, Item] = collections.OrderedDict()
        self._limit = limit

    def add(self, item: Item) -> None:
        self._items[item.id] = item
        while len(self._items) > self._limit:
            self._items.popitem(last=False)

    def get(self, item_id: str) -> Item:
        """The item, or `ProtocolError` ``item_not_found``."""
        item = self._items.get(item_id)
        if item is None:
            raise p.ProtocolError("item_not_found", f"no item {item_id[:64]!r} in this conversation",
                                  param="item_id")
        return item

    def find(self, item_id: str) -> Item | None:
        return self._items.get(item_id)

    def remove(self, item_id: str) -> None:
        self._items.pop(item_id, None)

    def of_turn(self, turn_id: int, role: str) -> list[Item]:
        """The items of ``role`` that belong to session turn ``turn_id``, oldest first."""
        return [i for i in self._items.values() if i.turn_id == turn_id and i.role == role]
