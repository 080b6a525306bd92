"""The persona's system prompt and the per-turn "how <name> writes" section (sans-I/O).

The system prompt is the LLM's cached static prefix (`pipeline.llm.ConversationLlm`): it depends only on
the stored profile and the user's edits, never on the turn, so it stays byte-identical between turns and
sessions until the persona is rebuilt or edited. Built from a full profile it stays within ~250 tokens
(measured by tests/avatar/test_persona_prompt.py with the models' tokenizers): each cached token still
costs encoding time once per session, and every token of it is attended to at every decoding step.

Edits (``PATCH /v1/persona``): ``name`` replaces the detected name; ``self_description`` replaces the
generated one; ``style_notes`` are added to the style; ``instructions`` are added at the end.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Literal

from pipeline.session import DEFAULT_PERSONA
from voice_server.avatar.persona.profile import PersonaDoc

EditKey = Literal["name", "self_description", "style_notes", "instructions"]
EDIT_KEYS: tuple[EditKey, ...] = ("name", "self_description", "style_notes", "instructions")
EXAMPLE_MAX_CHARS = 200
# Character budgets of the generated parts (~4 characters a token in English, emoji cost several): with the
# fixed sentences they keep a full profile's prompt under ~250 tokens. The user's own edits are bounded by
# the API's field lengths instead.
ABOUT_MAX_CHARS = 360
HINTS_MAX_CHARS = 300


def _quoted(items: Sequence[str]) -> str:
    return ", ".join(f'"{item}"' for item in items)


def style_hints(style: Mapping[str, Any]) -> list[str]:
    """The style profile as short instructions, strongest habits only, most telling first (the prompt keeps
    as many as fit its budget); empty for an empty profile."""
    if not style or not style.get("messages"):
        return []
    hints: list[str] = []
    words = style["words_per_message"]["median"]
    size = "short" if words <= 8 else "medium-length" if words <= 20 else "long"
    hints.append(f"{size} messages (about {words} words)")
    caps = style["capitalisation"]
    if caps["no_capitals"] >= 0.8:
        hints.append("never uses capital letters, everything in lower case")
    elif caps["starts_lower_case"] >= 0.6:
        hints.append("usually starts in lower case")
    if style["greetings"]:
        hints.append(f"greets with {_quoted(style['greetings'][:2])}")
    if style["sign_offs"]:
        hints.append(f"signs off with {_quoted(style['sign_offs'][:2])}")
    punctuation = style["punctuation"]
    if punctuation["trailing_full_stop"] <= 0.1:
        hints.append("rarely ends with a full stop")
    elif punctuation["trailing_full_stop"] >= 0.6:
        hints.append("ends sentences with a full stop")
    if punctuation["exclamation"] >= 0.25:
        hints.append("uses lots of exclamation marks")
    if punctuation["ellipsis"] >= 0.15:
        hints.append('often trails off with "..."')
    emoji = style["emoji"]
    if emoji["messages_with_emoji"] >= 0.15 and emoji["top"]:
        hints.append(f"uses emoji often, especially {' '.join(emoji['top'][:3])}")
    elif emoji["messages_with_emoji"] < 0.02:
        hints.append("almost never uses emoji")
    label = style["formality"]["label"]
    hints.append({"casual": "casual, relaxed tone", "formal": "polite, formal tone"}.get(label, "friendly tone"))
    if style["phrases"]:
        hints.append(f"often says {_quoted(style['phrases'][:3])}")
    return hints


def _within(sentences: Sequence[str], limit: int, sep: str) -> str:
    """The leading ``sentences`` that fit ``limit`` characters joined with ``sep`` (at least the first)."""
    kept: list[str] = []
    for sentence in sentences:
        if kept and len(sep.join([*kept, sentence])) > limit:
            break
        kept.append(sentence)
    return sep.join(kept)


def system_prompt(doc: PersonaDoc | None, edits: Mapping[str, str], fallback_name: str) -> str:
    """The system prompt in the user's voice; `DEFAULT_PERSONA` when nothing is known and nothing edited.

    Args:
        doc: The built persona, or ``None`` (never built, or built from no data).
        edits: The user's edits (`EDIT_KEYS`; absent keys are not edited).
        fallback_name: The name when neither the persona nor an edit gives one (the username).
    """
    if doc is None and not edits:
        return DEFAULT_PERSONA
    profile = doc.profile if doc is not None else {}
    name = edits.get("name") or (doc.name if doc is not None else "") or fallback_name
    about = edits.get("self_description") or _within(
        profile.get("self_description", "").replace(". ", ".\n").splitlines(), ABOUT_MAX_CHARS, " "
    )
    hints = _within(style_hints(profile.get("style", {})), HINTS_MAX_CHARS, "; ")
    parts = [
        f"You are {name}. Speak as {name} would, in the first person, as yourself: never as an AI or an assistant."
    ]
    if about:
        parts.append(f'You describe yourself like this: "{about}"')
    if hints:
        parts.append(f"How you write: {hints}.")
    if edits.get("style_notes"):
        parts.append(f"Also: {edits['style_notes']}")
    parts.append(
        "Answer in one or two short sentences, in your own style; never use lists, headings, markdown or code. "
        "If you don't know something about your life, say so briefly instead of making it up."
    )
    if edits.get("instructions"):
        parts.append(edits["instructions"])
    return "\n".join(parts)


def examples_section(name: str, examples: Sequence[str]) -> str:
    """The per-turn system section quoting a few of the user's real messages ("" for none)."""
    if not examples:
        return ""
    lines = [f"How {name} writes (real messages of theirs; copy the style, not the content):"]
    for text in examples:
        one_line = " ".join(text.split())
        if len(one_line) > EXAMPLE_MAX_CHARS:
            one_line = one_line[: EXAMPLE_MAX_CHARS - 1].rstrip() + "…"
        lines.append(f"- {one_line}")
    return "\n".join(lines)
