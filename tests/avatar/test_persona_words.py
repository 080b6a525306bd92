"""Persona words on a realistic chat (no database): a lower-case writer who drops apostrophes ("ill", "hes",
"dont"), signs off with "laters", and whose phone capitalises the first word ("Friday", "Ive", "Meeting")
gets real interests and real people, never contractions, chat words, weekdays or sentence starts."""

from __future__ import annotations

from datetime import date

import pytest

from voice_server.avatar.memory.extraction import Candidate, extract
from voice_server.avatar.persona.lexicon import APOSTROPHE_FREE, CONTRACTIONS, NOT_TOPICS, Lexicon
from voice_server.avatar.persona.profile import Extracted, MemoryFact, NameCounter, ProfileExtractor
from voice_server.avatar.persona.style import TopCounter, words_of

ME, FRIEND = "Dan Hughes", "Mo"
# Dan's messages, written for this test in the style of the user test's chats: lower case, no apostrophes,
# "laters"/"cya", capitals only where a phone put them (sentence starts) or on a name ("Biscuit", the dog).
DAN = (
    "ill be at the wall by 7 laters",
    "hes coming climbing with us on saturday",
    "Friday works for me, ill bring the rope",
    "Ive just finished work, ill call you in a bit",
    "Meeting was moved to 3 so ill be late",
    "went climbing with jess this morning, shes a machine laters",
    "jess said the wall is shut on monday",
    "took Biscuit out in the rain lol",
    "Biscuit ate my guitar pick haha",
    "cant make it tonight, work is mad",
    "dont forget the chalk laters",
    "thats the best climbing session in ages",
    "its fine ill sort it",
    "were going to the gym after, you coming",
    "whats the plan for the weekend",
    "lets go climbing on thursday",
    "practising guitar all evening",
    "gonna learn a new song on guitar laters",
    "wanna grab food after climbing",
    "cya at the wall",
    "me and jess are getting pizza",
    "Friday is my day off",
    "Sorry just saw this, ill ring you",
    "Jess is coming too",
    "Biscuit is poorly today",
    "the meeting was pointless, ive had enough",
    "ugh Meeting ran over again",
    "Work is mad this week",
    "Thanks for the lift laters",
    "back in London on sunday with Biscuit",
    "hes got a new guitar amp",
    "im knackered after climbing lol",
    "youre mad, the meeting is at 10",
    "didnt see your message, isnt it tomorrow",
    "wasnt me haha",
    "theyre doing the climbing comp in London",
    "Ive told jess about the guitar lessons",
)
MO = ("Nice one!", "See you there.", "Haha classic.", "Are you still coming?", "Ok!")
# Wrong in the user test (interests: "ill", "hes", "laters"; people: "Friday", "Ive", "Meeting").
NOT_INTERESTS = set(
    "ill hes shes laters im ive dont cant thats its were whats lets cya lol haha gonna wanna youre theyre didnt "
    "isnt wasnt friday monday sorry".split()
)
NOT_PEOPLE = set(
    "Friday Ive Im Ill Dont Meeting Sorry Thanks Laters Work Monday London Sunday Hes Climbing Guitar".split()
)


def dan_messages(rounds: int = 6) -> list[tuple[str, str]]:
    """(sender, text) in chat order: every line of Dan's ``rounds`` times, each answered by Mo."""
    out: list[tuple[str, str]] = []
    for r in range(rounds):
        for n, line in enumerate(DAN):
            out.append((ME, line))
            out.append((FRIEND, MO[(n + r) % len(MO)]))
    return out


def memories_of(messages: list[tuple[str, str]]) -> list[MemoryFact]:
    """The memories an import makes of Dan's messages (the import job runs the same rules on each)."""
    found: dict[str, MemoryFact] = {}
    for sender, text in messages:
        if sender != ME:
            continue
        for item in extract(text, date(2024, 3, 1)):
            if isinstance(item, Candidate):
                found[item.text] = MemoryFact(item.text, item.kind, item.importance, item.subject)
    return list(found.values())


@pytest.fixture(scope="module")
def dan() -> tuple[Extracted, list[MemoryFact]]:
    messages = dan_messages()
    memories = memories_of(messages)
    extractor = ProfileExtractor(Lexicon())
    for sender, text in messages:
        if sender == ME:
            extractor.add_own(text, sender)
        else:
            extractor.add_other(sender)
    return extractor.finish(memories, display_name="", username="dan"), memories


def test_the_memory_rules_do_offer_the_wrong_subjects(dan: tuple[Extracted, list[MemoryFact]]) -> None:
    """The chat reproduces the user test: person memories about "friday", "ive", "meeting", "sorry"."""
    _, memories = dan
    subjects = {m.subject for m in memories if m.kind == "person"}
    assert {"friday", "ive", "meeting", "sorry", "jess", "biscuit"} <= subjects, subjects


def test_contractions_and_chat_words_are_never_interests(dan: tuple[Extracted, list[MemoryFact]]) -> None:
    """Interests are the writer's topics (climbing, guitar), not "ill", "hes", "laters" or a weekday."""
    profile = dan[0].doc.profile
    interests = profile["interests"]
    assert not NOT_INTERESTS & set(interests), interests
    assert {"climbing", "guitar"} <= set(interests), interests
    assert "laters" in profile["style"]["sign_offs"]


def test_people_need_evidence_of_a_name(dan: tuple[Extracted, list[MemoryFact]]) -> None:
    """The chat partner, "jess" (lower case, next to "with"/"said"/"me and") and "Biscuit" (capitalised
    mid-sentence) are people; sentence starts, weekdays, contractions and a place are not."""
    extracted = dan[0]
    people = extracted.doc.profile["people"]
    assert people[0] == FRIEND
    assert {"Jess", "Biscuit"} <= set(people), people
    assert not NOT_PEOPLE & set(people), people
    assert extracted.doc.profile["places"] == ["London"]
    assert "jess" not in extracted.doc.profile["interests"] and "biscuit" not in extracted.doc.profile["interests"]
    assert "People in my life: Mo, " in extracted.doc.profile["self_description"]


def test_every_contraction_has_its_bare_form() -> None:
    """The stop list is generated from the contractions: each one's apostrophe-less form is in it, and the
    forms of the user test (and "were", which is also a word) are never topics."""
    assert len(CONTRACTIONS) > 80
    assert all(c.replace("'", "") in APOSTROPHE_FREE for c in CONTRACTIONS)
    bare = "im ive ill id hes shes its thats dont cant wont didnt isnt wasnt youre theyre were whats lets shouldve yall"
    for word in (*bare.split(), "laters", "cya", "lol", "gonna", "wanna", "friday", "march"):
        assert word in NOT_TOPICS, word
    assert not {"climbing", "guitar", "jess", "football", "hiking"} & NOT_TOPICS


def count_names(lines: list[str]) -> dict[str, tuple[str, int]]:
    names = NameCounter()
    mentions = TopCounter(1000)
    for line in lines:
        names.add(line)
        mentions.update({w.casefold() for w in words_of(line)})
    return names.names(mentions, 2)


def test_name_evidence_rules() -> None:
    """Capitals count mid-sentence only and only where the word is not also written in lower case there;
    a Title Case writer's capitals count for nothing; a lower-case name needs person cues."""
    found = count_names(
        [
            "Meeting at 3",
            "Meeting again",
            "off to see Ana at the station",
            "lunch with Ana and Bruno at the new place",
            "Bruno says hi",
        ]
    )
    assert set(found) == {"ana"} and found["ana"] == ("Ana", 2)
    found = count_names(
        [
            "ugh Meeting ran over",
            "lol Meeting again",
            "the meeting was long",
            "this meeting is pointless",
            "another meeting today",
        ]
    )
    assert "meeting" not in found  # capitalised twice mid-message, but mostly a lower-case word
    found = count_names(["Went To The Shop With Tom", "Tom Said The Shop Was Shut", "Love The Shop"])
    assert "shop" not in found and "tom" in found  # Title Case: only the cues count ("with", "said")
    found = count_names(
        [
            "went out with work people",
            "work was long",
            "work is mad",
            "at work",
            "work again",
            "off to work",
            "work work work",
            "went to the pub with work",
        ]
    )
    assert "work" not in found  # next to "with" in 2 of 8 messages: under the share a name has
    found = count_names(["my sister jess is here", "jess says hi", "me and jess", "jessie and i"])
    assert "jess" in found and found["jess"][0] == "Jess"
