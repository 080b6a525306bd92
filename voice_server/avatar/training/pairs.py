"""Training pairs from a person's chat history: (what was said before → what they replied), sans-I/O.

A pair's target is one of the person's own replies; its context is the few turns before it in the same chat and
session, the other participants' turns as ``user`` and the person's own as ``assistant`` (the avatar speaks as
them). Only the person's words are ever targets; the trainer masks the loss everywhere else.

Lines are fed in time order (chats may interleave). Consecutive messages of one side within `BURST_GAP_S` are
one turn (people send a thought in several bubbles), and a gap over `SESSION_GAP_S` starts a new session, so a
reply never gets a day-old context. Pure media (a photo with no words), link-only lines and lines too long to
be chat are dropped; phone numbers, e-mail and street addresses are masked by default. A reply already seen
with the same last context turn is a duplicate. The split is by time: the newest `HELDOUT_SHARE` of the
replies are held out for evaluation and never trained on.

Memory is bounded: one open session per chat (at most `CONTEXT_TURNS` + 1 turns each, chats capped at
`MAX_CHATS`) and at most `MAX_PAIRS` pairs (the newest are kept: they are how the person writes now).
"""

from __future__ import annotations

import hashlib
import math
import re
from collections import OrderedDict, deque
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime

Message = dict[str, str]

CONTEXT_TURNS = 4
BURST_GAP_S = 5 * 60.0
SESSION_GAP_S = 6 * 3600.0
HELDOUT_SHARE = 0.10
MIN_REPLIES = 200
MAX_PAIRS = 20_000
MAX_CHATS = 2_000
MAX_TURN_CHARS = 600  # a turn longer than this is a pasted text or a post, not how the person chats

_URL = re.compile(r"https?://\S+|www\.\S+", re.IGNORECASE)
_EMAIL = re.compile(r"[\w.+-]+@[\w-]+(?:\.[\w-]+)+")
_PHONE = re.compile(r"(?<![\w+])\+?\d[\d ()-]{6,}\d(?!\w)")
_ADDRESS = re.compile(
    r"\b\d{1,5}[a-z]? (?:[A-Z]?[a-z]+ ){1,3}(?:street|st|road|rd|avenue|ave|lane|ln|drive|dr|close|way|place|"
    r"court|crescent|terrace|boulevard|blvd)\b\.?",
    re.IGNORECASE,
)
_PLACEHOLDER = re.compile(
    r"^(?:<media omitted>|(?:image|video|audio|sticker|gif|document) omitted|this message was deleted|"
    r"you deleted this message|null)$",
    re.IGNORECASE,
)
_NORMAL = re.compile(r"[\W_]+")


class TooLittleDataError(ValueError):
    """Fewer replies than training needs; ``replies`` says how many there are."""

    def __init__(self, replies: int, needed: int = MIN_REPLIES) -> None:
        super().__init__(
            f"training needs at least {needed} of your own replies in imported chats; there are {replies}"
        )
        self.replies = replies
        self.needed = needed


@dataclass(frozen=True, slots=True)
class ChatLine:
    """One imported message as the builder reads it (``at`` naive or aware, but one kind per history)."""

    conversation: str
    sender: str
    text: str
    at: datetime
    is_user: bool
    attachment: str | None = None


@dataclass(frozen=True, slots=True)
class Pair:
    """The person's ``reply`` to ``context`` (oldest turn first, ending with another participant's turn)."""

    context: tuple[Message, ...]
    reply: str
    at: datetime

    def messages(self, system: str) -> list[Message]:
        """The pair as chat messages for training or evaluation: the system prompt, the context, the reply."""
        return [{"role": "system", "content": system}, *self.context, {"role": "assistant", "content": self.reply}]


@dataclass(frozen=True, slots=True)
class TrainingData:
    """The pairs split by time: ``train`` (older) and ``heldout`` (the newest `HELDOUT_SHARE`)."""

    train: tuple[Pair, ...]
    heldout: tuple[Pair, ...]
    dropped: dict[str, int] = field(default_factory=dict)

    @property
    def replies(self) -> int:
        """All usable replies (both parts)."""
        return len(self.train) + len(self.heldout)

    def summary(self) -> dict[str, object]:
        """What the person is shown before training: counts, the time span, what was dropped and why."""
        every = (*self.train, *self.heldout)
        return {
            "replies": self.replies,
            "train": len(self.train),
            "heldout": len(self.heldout),
            "needed": MIN_REPLIES,
            "enough": self.replies >= MIN_REPLIES,
            "first_at": min(p.at for p in every).isoformat() if every else None,
            "last_at": max(p.at for p in every).isoformat() if every else None,
            "dropped": dict(self.dropped),
        }


def mask_personal(text: str) -> str:
    """``text`` with e-mail addresses, phone numbers and street addresses replaced by ``[email]``,
    ``[phone]``, ``[address]`` (a tuned model must not learn to recite them)."""
    text = _EMAIL.sub("[email]", text)
    text = _ADDRESS.sub("[address]", text)
    return _PHONE.sub("[phone]", text)


def clean(line: ChatLine) -> tuple[str | None, str]:
    """The line's usable text, or ``None`` and why it is dropped (``media``, ``link``, ``long``)."""
    text = line.text.strip()
    if not text or _PLACEHOLDER.match(text):
        return None, "media"
    if not _URL.sub("", text).strip():
        return None, "link"
    if len(text) > MAX_TURN_CHARS:
        return None, "long"
    return text, ""


@dataclass(slots=True)
class _Turn:
    is_user: bool
    text: str
    first_at: datetime
    last_at: datetime


class PairBuilder:
    """Feed `ChatLine`s in time order with `offer`, then `finish` (see the module doc).

    Args:
        mask: Mask e-mail, phone numbers and street addresses (`mask_personal`).
        context_turns: Turns of context before each reply.
    """

    def __init__(self, *, mask: bool = True, context_turns: int = CONTEXT_TURNS) -> None:
        self._mask = mask
        self._context_turns = context_turns
        self._chats: OrderedDict[str, deque[_Turn]] = OrderedDict()
        self._pairs: deque[Pair] = deque(maxlen=MAX_PAIRS)
        self._seen: set[bytes] = set()
        self.dropped: dict[str, int] = {}

    def _drop(self, why: str) -> None:
        self.dropped[why] = self.dropped.get(why, 0) + 1

    def offer(self, line: ChatLine) -> None:
        """Take the next line of the history."""
        text, why = clean(line)
        if text is None:
            self._drop(why)
            return
        if self._mask:
            text = mask_personal(text)
        turns = self._chats.pop(line.conversation, None) or deque(maxlen=self._context_turns + 1)
        self._chats[line.conversation] = turns  # most recently active chat last
        while len(self._chats) > MAX_CHATS:
            self._close(self._chats.popitem(last=False)[1])
        last = turns[-1] if turns else None
        if last is not None and (line.at - last.last_at).total_seconds() > SESSION_GAP_S:
            self._close(turns)
            turns.clear()
            last = None
        same_side = last is not None and last.is_user == line.is_user
        if last is not None and same_side and (line.at - last.last_at).total_seconds() <= BURST_GAP_S:
            last.text = f"{last.text}\n{text}"
            last.last_at = line.at
            return
        if last is not None and last.is_user:
            self._emit(turns)  # the person's turn is complete: someone spoke after it, or they began anew
        turns.append(_Turn(line.is_user, text, line.at, line.at))

    def _close(self, turns: deque[_Turn]) -> None:
        if turns and turns[-1].is_user:
            self._emit(turns)

    def _emit(self, turns: deque[_Turn]) -> None:
        """The last turn (the person's) as a pair when another participant's turn comes before it."""
        reply = turns[-1]
        context = list(turns)[:-1][-self._context_turns :]
        if not context or context[-1].is_user:
            self._drop("no_context")
            return
        while context and context[0].is_user:  # a context starts with another participant's words
            context.pop(0)
        key = hashlib.blake2b(f"{_normal(reply.text)}\x1f{_normal(context[-1].text)}".encode(), digest_size=12).digest()
        if key in self._seen:
            self._drop("duplicate")
            return
        self._seen.add(key)
        messages = tuple({"role": "assistant" if t.is_user else "user", "content": t.text} for t in context)
        self._pairs.append(Pair(messages, reply.text, reply.first_at))

    def finish(self, heldout_share: float = HELDOUT_SHARE) -> TrainingData:
        """Close every open session and split the pairs by time (the newest ``heldout_share`` held out)."""
        for turns in self._chats.values():
            self._close(turns)
        self._chats.clear()
        pairs = sorted(self._pairs, key=lambda p: p.at)
        held = math.ceil(len(pairs) * heldout_share) if pairs else 0
        cut = len(pairs) - held
        return TrainingData(tuple(pairs[:cut]), tuple(pairs[cut:]), dict(self.dropped))


def build_pairs(lines: Iterable[ChatLine], *, mask: bool = True) -> TrainingData:
    """`PairBuilder` over ``lines`` (in time order)."""
    builder = PairBuilder(mask=mask)
    for line in lines:
        builder.offer(line)
    return builder.finish()


def require_enough(data: TrainingData) -> None:
    """Raises `TooLittleDataError` when ``data`` has fewer than `MIN_REPLIES` replies."""
    if data.replies < MIN_REPLIES:
        raise TooLittleDataError(data.replies)


def to_jsonl_rows(pairs: Sequence[Pair], system: str) -> list[dict[str, list[Message]]]:
    """The trainer's input rows (``{"messages": [...]}``, see `models.finetune`)."""
    return [{"messages": p.messages(system)} for p in pairs]


def _normal(text: str) -> str:
    return _NORMAL.sub(" ", text.casefold()).strip()
