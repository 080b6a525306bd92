"""Pure memory policy: extraction rules, the LLM output parser, reconciliation and recall ranking."""

from __future__ import annotations

import uuid
from datetime import UTC, date, datetime, timedelta
from typing import Any

import pytest

from voice_server.avatar.memory import policy
from voice_server.avatar.memory.evidence import EVIDENCE_HEADER, Hit, evidence_line, format_evidence
from voice_server.avatar.memory.extraction import Candidate, Forget, extract, parse_llm_candidates
from voice_server.avatar.memory.store import Match

TODAY = date(2026, 11, 30)


@pytest.mark.parametrize(
    ("said", "kind", "subject", "attribute"),
    [
        ("My sister Ana lives in Porto.", "person", "ana", "location"),
        ("Ana moved to Lisbon.", "person", "ana", "location"),
        ("I love hiking in the mountains.", "preference", "me", None),
        ("I am moving to Berlin next month.", "plan", "me", "location"),
        ("I feel really anxious about work", "feeling", "me", None),  # a word about work sets no job
        ("My birthday is on March 3.", "event", "me", None),
        ("My name is Bob.", "fact", "me", "name"),
        ("I work as a nurse.", "fact", "me", "job"),
        ("My dog Rex is sick.", "person", "rex", None),
    ],
)
def test_statements_about_a_life_become_candidates(said: str, kind: str, subject: str, attribute: str | None) -> None:
    (found,) = extract(said, TODAY)
    assert isinstance(found, Candidate)
    assert (found.kind, found.subject, found.attribute) == (kind, subject, attribute)
    assert found.text[0].isupper() and found.text[-1] in ".!"
    assert 0 <= found.importance <= 1


@pytest.mark.parametrize(
    "said", ["What is my name?", "Hello there.", "Count to 5.", "Tell me a joke about cats.", "ok", "Do you like me"]
)
def test_questions_and_chatter_are_not_memories(said: str) -> None:
    assert extract(said, TODAY) == []


def test_forget_requests() -> None:
    assert extract("Forget that.", TODAY) == [Forget("")]
    assert extract("That is no longer true.", TODAY) == [Forget("")]
    (named,) = extract("Please forget that Ana moved to Lisbon", TODAY)
    assert named == Forget("Ana moved to Lisbon", "ana", "location")
    (negated,) = extract("Ana doesn't live in Lisbon anymore.", TODAY)
    assert isinstance(negated, Forget) and negated.subject == "ana" and negated.attribute == "location"


def test_dates_and_known_subjects() -> None:
    (plan,) = extract("I'm flying to Rome tomorrow.", TODAY)
    assert isinstance(plan, Candidate) and plan.event_date == TODAY + timedelta(days=1)
    (past,) = extract("I'm visiting my aunt on January 5th.", TODAY)
    assert isinstance(past, Candidate) and past.event_date == date(2027, 1, 5)  # a plan: the next January 5
    assert extract("Carlos adopted a puppy.", TODAY) == []
    (known,) = extract("Carlos adopted a puppy.", TODAY, frozenset({"carlos"}))
    assert isinstance(known, Candidate) and known.subject == "carlos"
    many = extract(" ".join(f"I like fruit number {n}." for n in range(20)), TODAY)
    assert len(many) == 5


def test_llm_output_parser_takes_only_well_formed_items() -> None:
    good = parse_llm_candidates('```json\n[{"text": "i like tea", "kind": "preference", "importance": 3}]\n```', TODAY)
    assert good == [Candidate("I like tea.", "preference", 1.0, "me", None, None)]
    for junk in ("", "no", "[", "[1, 2]", '{"text": "x"}', '[{"text": "", "kind": "fact"}]',
                 '[{"text": "x", "kind": "fact", "importance": true}]', "[" * 9000):
        assert parse_llm_candidates(junk, TODAY) == []


def row(
    text: str, subject: str | None, kind: str = "person", age_days: float = 0, importance: float = 0.5
) -> dict[str, Any]:
    when = datetime(2026, 11, 30, tzinfo=UTC) - timedelta(days=age_days)
    return {"id": uuid.uuid4(), "text": text, "subject": subject, "kind": kind, "importance": importance,
            "updated_at": when, "said_at": when, "event_date": None}


def test_reconcile_decisions() -> None:
    lisbon = Candidate("Ana moved to Lisbon.", "person", 0.7, "ana", "location")
    porto = Match(row("My sister Ana lives in Porto.", "ana"), 0.70)
    jazz = Match(row("Ana likes jazz.", "ana"), 0.50)
    assert policy.reconcile(lisbon, [porto, jazz]) == policy.Decision("update", (porto.id,))
    assert policy.reconcile(lisbon, [jazz]) == policy.Decision("add")
    same = Match(row("Ana moved to Lisbon!", "ana"), 0.97)
    assert policy.reconcile(lisbon, [same, porto]) == policy.Decision("none", (same.id,))
    assert policy.reconcile(lisbon, []) == policy.Decision("add")


def test_reconcile_updates_only_a_conflicting_value_of_the_same_property() -> None:
    """Issue 20: two statements about the user that merely share a keyword ("moved", "live") are two facts; the
    same property with another value is an update, the same value again is not."""
    known = Match(row("I've known these friends for 4 years, since I moved from my home country.", "me",
                      kind="fact"), 0.55)
    (authentic,) = extract("I want to live authentically.", TODAY)
    assert isinstance(authentic, Candidate) and authentic.attribute is None
    assert policy.reconcile(authentic, [known]) == policy.Decision("add")
    nurse = Match(row("I work as a nurse.", "me", kind="fact"), 0.6)
    (anxious,) = extract("I feel really anxious about work.", TODAY)
    assert isinstance(anxious, Candidate) and policy.reconcile(anxious, [nurse]) == policy.Decision("add")
    (teacher,) = extract("I work as a teacher now.", TODAY)
    assert isinstance(teacher, Candidate)
    assert policy.reconcile(teacher, [nurse]) == policy.Decision("update", (nurse.id,))
    porto = Match(row("My sister Ana lives in Porto.", "ana"), 0.7)
    again = Candidate("Ana lives in Porto with Rui.", "person", 0.7, "ana", "location")
    assert policy.reconcile(again, [porto]) == policy.Decision("add")


def test_an_older_statement_becomes_the_history_of_a_newer_one() -> None:
    """Issue 20: a fact from an imported 2023 message never replaces what the user said since; it is kept as the
    newer memory's history. Said later, it updates as usual."""
    lisbon = Match(row("My sister Ana lives in Lisbon.", "ana", age_days=2), 0.7)
    porto = Candidate("My sister Ana lives in Porto.", "person", 0.7, "ana", "location")
    old = datetime(2023, 5, 12, tzinfo=UTC)
    assert policy.reconcile(porto, [lisbon], old) == policy.Decision("history", (lisbon.id,))
    assert policy.reconcile(porto, [lisbon], datetime(2026, 11, 30, tzinfo=UTC)) == policy.Decision(
        "update", (lisbon.id,))
    assert policy.reconcile(porto, [lisbon]) == policy.Decision("update", (lisbon.id,))
    # Recall dates a memory by when it was said (the message's day), not when it was stored.
    said = Match({**row("I adopted a puppy called Pixie.", "me"), "said_at": old}, 0.8)
    assert evidence_line(Hit("memory", said.id, row=said.row)).startswith("- 2023-05-12, the user:")


def test_forget_targets() -> None:
    porto = Match(row("My sister Ana lives in Porto.", "ana"), 0.69)
    unrelated = Match(row("I like jazz.", "me"), 0.1)
    recent = [uuid.uuid4(), uuid.uuid4()]
    assert policy.forget_targets(Forget(""), [], recent) == recent[:1]
    assert policy.forget_targets(Forget(""), [], []) == []
    assert policy.forget_targets(Forget("Ana lives in Porto", "ana", "location"), [porto, unrelated], []) == [porto.id]


def test_recall_ranks_by_relevance_recency_importance_within_budget() -> None:
    now = datetime(2026, 11, 30, tzinfo=UTC)
    w = policy.RecallWeights(budget_tokens=40)
    fresh = Match(row("Fresh and relevant.", None, age_days=0), 0.6)
    stale = Match(row("Stale but as relevant.", None, age_days=365), 0.6)
    vital = Match(row("Stale, relevant and vital.", None, age_days=365, importance=1.0), 0.6)
    weak = Match(row("Barely related.", None), 0.2)
    long = Match(row("x" * 400, None), 0.9)
    chosen = policy.select([stale, weak, fresh, vital, long], now, w)
    assert chosen[0] is fresh and stale in chosen and vital in chosen
    assert chosen.index(vital) < chosen.index(stale)
    assert weak not in chosen and long not in chosen  # below the relevance floor / over the budget
    hits = [Hit("memory", m.id, row=m.row, selected=True) for m in chosen]
    text = format_evidence(hits, [], budget_tokens=200)
    assert text.startswith(EVIDENCE_HEADER) and "- 2026-11-30, the user: Fresh and relevant." in text
    assert format_evidence([], [], budget_tokens=200) == ""
    assert "Nothing you remember mentions Havana," in format_evidence([], ["Havana"], budget_tokens=200)
    assert format_evidence(hits, ["Havana"], budget_tokens=0) == ""  # SOMA_MEMORY_BUDGET_TOKENS=0: recall off


def test_recalled_memories_never_change_the_cached_system_prefix() -> None:
    from voice_server.conversations import prompt

    history = [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}]
    with_memories = prompt("PERSONA", history, "What the user told you before: …", "Where does Ana live?")
    without = prompt("PERSONA", history, "", "Where does Ana live?")
    assert with_memories[0] == without[0] == {"role": "system", "content": "PERSONA"}
    assert with_memories[1:3] == history and with_memories[3]["role"] == "system"
    assert with_memories[-1] == without[-1] == {"role": "user", "content": "Where does Ana live?"}
    assert len(without) == 4
