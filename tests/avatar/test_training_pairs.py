"""Training pairs from a chat history: turns, sessions, cleaning, masking, dedup and the time-ordered split."""

from __future__ import annotations

from datetime import datetime, timedelta

import pytest

from voice_server.avatar.training.pairs import (
    MIN_REPLIES,
    ChatLine,
    PairBuilder,
    TooLittleDataError,
    build_pairs,
    mask_personal,
    require_enough,
)

T0 = datetime(2026, 1, 5, 18, 0)


def _line(minutes: float, text: str, is_user: bool, chat: str = "Alex", sender: str = "") -> ChatLine:
    return ChatLine(chat, sender or ("Sam" if is_user else chat), text, T0 + timedelta(minutes=minutes), is_user)


def test_a_reply_gets_the_turns_before_it_with_bursts_joined() -> None:
    """Bubbles of one side within five minutes are one turn; the person's turn becomes a pair when the other
    side speaks again (or the history ends), with the other side as ``user`` and the person as ``assistant``."""
    pairs = build_pairs(
        [
            _line(0, "Hey! How was the match?", False),
            _line(1, "proper good", True),
            _line(2, "we won 3-1 haha", True),
            _line(3, "Amazing. Pub later?", False),
            _line(4, "sound as a pound", True),
        ],
        mask=False,
    )
    every = (*pairs.train, *pairs.heldout)
    assert [p.reply for p in every] == ["proper good\nwe won 3-1 haha", "sound as a pound"]
    assert every[0].context == ({"role": "user", "content": "Hey! How was the match?"},)
    assert [m["role"] for m in every[1].context] == ["user", "assistant", "user"]
    assert every[1].messages("SYS")[0] == {"role": "system", "content": "SYS"}
    assert every[1].messages("SYS")[-1] == {"role": "assistant", "content": "sound as a pound"}
    assert len(pairs.heldout) == 1 and pairs.heldout[0].reply == "sound as a pound"  # the newest tenth, rounded up


def test_sessions_chats_and_openers() -> None:
    """A reply after a six-hour gap has no context (it opens a new session: no pair); chats never mix; a
    context never starts with the person's own turn."""
    builder = PairBuilder(mask=False)
    for line in [
        _line(0, "You up?", False),
        _line(1, "Morning all", False, chat="Family", sender="Mum"),
        _line(2, "yeah mate", True),
        _line(3, "morning x", True, chat="Family"),
        _line(400, "back now", True),
    ]:
        builder.offer(line)
    data = builder.finish(heldout_share=0.0)
    assert [(p.reply, p.context[-1]["content"]) for p in data.train] == [
        ("yeah mate", "You up?"),
        ("morning x", "Morning all"),
    ]
    assert data.dropped == {"no_context": 1}


def test_media_links_and_duplicates_are_dropped_and_personal_data_masked() -> None:
    """Pure media and link-only lines are not turns; the same reply to the same words is kept once; e-mail,
    phone numbers and street addresses are masked in both sides."""
    lines = [
        _line(0, "<Media omitted>", False),
        _line(1, "Where are you?", False),
        _line(2, "https://maps.example.com/x", True),
        _line(3, "at 12 Mill Lane, ring me on +44 7700 900123 or sam.rivers@example.com", True),
        _line(10, "Ok!", False),
        _line(11, "cheers x", True),
        _line(20, "Ok!", False),
        _line(21, "cheers x", True),
    ]
    data = build_pairs(lines)
    replies = [p.reply for p in (*data.train, *data.heldout)]
    assert replies == ["at [address], ring me on [phone] or [email]", "cheers x"]
    assert data.dropped == {"media": 1, "link": 1, "duplicate": 1}
    assert mask_personal("call 555-123-4567 at 3pm") == "call [phone] at 3pm"
    assert mask_personal("see you at 5, 10 of us") == "see you at 5, 10 of us"


def test_the_newest_tenth_is_held_out_and_too_little_data_is_named() -> None:
    """The split is by time whatever order the chats interleave in; fewer than `MIN_REPLIES` replies raise an
    error that says how many there are."""
    lines = []
    for i in range(40):
        chat = "Alex" if i % 2 else "Jo"
        lines += [_line(i * 10, f"Question number {i}?", False, chat=chat)]
        lines += [_line(i * 10 + 1, f"answer {i}", True, chat=chat)]
    data = build_pairs(lines)
    assert (len(data.train), len(data.heldout)) == (36, 4)
    assert max(p.at for p in data.train) < min(p.at for p in data.heldout)
    assert [p.reply for p in data.heldout] == ["answer 36", "answer 37", "answer 38", "answer 39"]
    with pytest.raises(TooLittleDataError, match=f"at least {MIN_REPLIES} .* there are 40") as error:
        require_enough(data)
    assert error.value.replies == 40
    summary = data.summary()
    assert summary["replies"] == 40 and summary["enough"] is False and summary["heldout"] == 4
