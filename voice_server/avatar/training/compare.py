"""Does the tuned model write more like the person? Replies of three systems to the held-out contexts, compared in
style with what the person really replied there.

The systems: the base model without the persona (what a generic chatbot says), the base model with the persona
prompt (today's avatar), and the tuned model with the persona prompt. The two persona systems reply through
`pipeline.llm.ConversationLlm`, as every channel does (the same guard, no sentence cap: a text reply), each decoded
as it is served: the base model greedy, the tuned one sampled (`serving.tuned_policy`). Each generation first waits
until no call is live: the base model is the one calls use, and both compete for the same two cores.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

from pipeline.llm import ConversationLlm, ReplyPolicy
from voice_server.avatar.training.pairs import Pair
from voice_server.avatar.training.serving import tuned_policy
from voice_server.avatar.training.style_distance import style_distance, style_profile
from voice_server.live_calls import LiveCalls

T = TypeVar("T")
SAMPLE_PAIRS = 48  # held-out contexts replied to per system (~2.5 min of generation on the 0.5B model)
SHOWN_SAMPLES = 6  # side-by-side examples kept for the person to read
REPLY_TOKENS = 60
SYSTEMS = ("base", "prompt_only", "tuned")


class CompareCancelled(RuntimeError):
    """The job was cancelled between generations."""


@dataclass(frozen=True, slots=True)
class Comparison:
    """Style distances to the person's real replies (lower is closer) and the side-by-side samples."""

    distances: dict[str, float]
    parts: dict[str, dict[str, float]]
    samples: list[dict[str, str]]
    pairs: int

    def as_json(self) -> dict[str, Any]:
        """The comparison as stored in the job's result."""
        return {"style_distance": self.distances, "style_parts": self.parts, "samples": self.samples,
                "sampled_pairs": self.pairs}


def spread(items: Sequence[T], count: int) -> list[T]:
    """``count`` items spread evenly over ``items`` (all of them when there are fewer)."""
    if len(items) <= count:
        return list(items)
    step = len(items) / count
    return [items[int(i * step)] for i in range(count)]


async def compare(
    base: Any, tuned: Any, heldout: Sequence[Pair], system: str, *, live: LiveCalls, cancelled: asyncio.Event,
    pairs: int = SAMPLE_PAIRS,
) -> Comparison:
    """Reply to ``pairs`` held-out contexts (spread over them) with each system and measure the style distance of each
    system's replies to the person's real ones (`style_distance`).

    Args:
        base, tuned: `models.llm.CT2Llm`-like models (``acomplete``, ``astream``, ``prefix_tokens``).
        heldout: The held-out pairs (never trained on).
        system: The persona prompt as served.

    Raises:
        CompareCancelled: ``cancelled`` was set.
        ValueError: ``heldout`` is empty.
    """
    chosen = spread(heldout, pairs)
    if not chosen:
        raise ValueError("no held-out replies to compare on")
    policy = ReplyPolicy(max_tokens=REPLY_TOKENS, max_sentences=None)
    persona = {"prompt_only": ConversationLlm(base, policy), "tuned": ConversationLlm(tuned, tuned_policy(policy))}
    replies: dict[str, list[str]] = {name: [] for name in SYSTEMS}
    for pair in chosen:
        for name in SYSTEMS:
            if cancelled.is_set():
                raise CompareCancelled("cancelled")
            await live.until_none()
            if name == "base":
                text = await base.acomplete(list(pair.context), max_tokens=REPLY_TOKENS, repetition_penalty=1.1)
            else:
                messages = [{"role": "system", "content": system}, *pair.context]
                text = "".join([piece async for piece in persona[name].astream(messages)])
            replies[name].append(text.strip())
    real = style_profile([p.reply for p in chosen])
    distances: dict[str, float] = {}
    parts: dict[str, dict[str, float]] = {}
    for name in SYSTEMS:
        measured = style_distance(style_profile([r or " " for r in replies[name]]), real)
        distances[name] = round(measured.total, 4)
        parts[name] = {k: round(v, 4) for k, v in measured.parts.items()}
    samples = [
        {"said": chosen[i].context[-1]["content"], "real": chosen[i].reply,
         "prompt_only": replies["prompt_only"][i], "tuned": replies["tuned"][i]}
        for i in spread(range(len(chosen)), SHOWN_SAMPLES)
    ]
    return Comparison(distances, parts, samples, len(chosen))
