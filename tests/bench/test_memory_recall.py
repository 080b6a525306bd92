"""The memory-recall benchmark's scoring (`bench.memory_recall`): token F1, the abstention detector, and the
provenance rule that decides whether a retrieved memory states an evidence message."""

from __future__ import annotations

from datetime import datetime

import pytest

from bench.data.memory_history import Message, Question
from bench.memory_recall import ABSTAIN, evidence_recall, states, token_f1

AT = datetime(2024, 3, 12, 18, 4)
LOCKER = Message("noor:7", "Noor", 7, AT, "Maya Ortiz", "ugh my gym locker is number 47 now, they moved me", True)
JOB = Message("lena:3", "Lena", 3, AT, "Lena", "I got the job at the bakery in Berlin!!", False)


def test_token_f1_is_squad_style() -> None:
    assert token_f1("Number 47.", "47") == pytest.approx(2 / 3)  # "number" costs precision, not recall
    assert token_f1("The Bakery in Berlin", "bakery in berlin") == 1.0  # case, punctuation, articles ignored
    assert token_f1("I don't know", "Pixie") == 0.0
    assert token_f1("", "Pixie") == 0.0


@pytest.mark.parametrize("reply", [
    "I don't know, you never told me about that.", "Hmm, I'm not sure.", "No idea!", "I can't remember that one.",
    "You never mentioned a Mr. Haddad.", "I don't think you ever told me.", "I do not recall that.",
])  # fmt: skip
def test_abstentions_are_recognised(reply: str) -> None:
    assert ABSTAIN.search(reply)


@pytest.mark.parametrize("reply", [
    "It's number 47.", "She got the job at the bakery in Berlin.", "On 12 March, I think it was a Tuesday.",
    "I know, right? Noor's puppy is called Pixie.",
])  # fmt: skip
def test_answers_are_not_abstentions(reply: str) -> None:
    assert not ABSTAIN.search(reply)


def test_a_memory_states_the_message_it_was_taken_from() -> None:
    memory = {"text": "My gym locker is number 47", "said_at": "2024-03-12T18:04:00+00:00"}
    assert states(memory, LOCKER)
    assert not states({**memory, "said_at": "2024-03-12T18:05:00+00:00"}, LOCKER)  # another minute
    assert not states({**memory, "said_at": None}, LOCKER)  # no time: an import's date is not the message's
    assert not states({"text": "Maya likes hiking in the hills", "said_at": memory["said_at"]}, LOCKER)
    assert not states(memory, JOB)  # same minute, another message


def test_evidence_recall_is_the_share_of_evidence_messages_stated() -> None:
    question = Question("q1", "two", "?", "47", ("noor:7", "lena:3"), (), AT)
    messages = {m.id: m for m in (LOCKER, JOB)}
    found = [{"text": "gym locker number 47", "said_at": "2024-03-12T18:04:00"}]
    assert evidence_recall(found, question, messages) == 0.5
    found.append({"text": "Lena got the job at the bakery in Berlin", "said_at": "2024-03-12T18:04:00"})
    assert evidence_recall(found, question, messages) == 1.0
    assert evidence_recall([], question, messages) == 0.0
