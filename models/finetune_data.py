"""What both sides of fine-tuning share: training examples (`build_example`), the event writer and the error type.

Imported by the parent-side helpers (`models.finetune`) and by the torch side (`models.finetune_train`) alike,
so neither imports the other's module at load time. No torch here.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TextIO

MAX_TOKENS = 256
"""Longest training example in tokens (system prompt + kept history + reply)."""
IGNORE = -100
"""Label of positions that carry no loss (the prompt and the padding), as torch's cross_entropy expects."""
Message = Mapping[str, str]
Render = Callable[[Sequence[Message], bool], str]
"""``render(messages, add_generation_prompt)``: the chat template as text (see models.chat_prompt)."""
Encode = Callable[[str], list[int]]
"""Token ids of a text, no special tokens added (special tokens written in the text are still recognised)."""


class FinetuneError(Exception):
    """A problem the child reports as one ``error`` event (bad input, missing base weights, ...)."""


@dataclass(frozen=True, slots=True)
class Example:
    """One training example: token ids and their labels (:data:`IGNORE` over the prompt)."""

    input_ids: list[int]
    labels: list[int]

    @property
    def reply_tokens(self) -> int:
        return sum(1 for label in self.labels if label != IGNORE)


def build_example(
    messages: Sequence[Message], *, render: Render, encode: Encode, end_token: str, max_tokens: int = MAX_TOKENS
) -> Example | None:
    """Tokenize one conversation whose last message is the reply to learn.

    The prompt is ``messages[:-1]`` rendered with the assistant header (``add_generation_prompt=True``), the
    same text serving hands the model; the reply is its content plus ``end_token`` (so the model learns to
    stop), tokenized on its own and appended, which makes the label boundary exact by construction. Labels
    are :data:`IGNORE` over the prompt and the token ids over the reply.

    Over ``max_tokens``, the oldest earlier exchange (a user message and the answer to it) is dropped first,
    repeatedly; the system message, the last user message and the reply are always kept. If still too long,
    the reply is cut (its end token then goes); if the prompt alone reaches ``max_tokens``, ``None``.
    """
    head = list(messages[:1]) if messages and messages[0].get("role") == "system" else []
    history = list(messages[len(head) : -1])
    reply = encode(messages[-1]["content"] + end_token)
    while True:
        prompt = encode(render([*head, *history], True))
        if len(prompt) + len(reply) <= max_tokens or len(history) <= 1:
            break
        history = history[2:] if len(history) > 2 else history[-1:]
    if len(prompt) >= max_tokens:
        return None
    reply = reply[: max_tokens - len(prompt)]
    return Example(input_ids=prompt + reply, labels=[IGNORE] * len(prompt) + reply)


class EventWriter:
    """Writes events as JSON lines to the child's real stdout (library prints go to stderr instead)."""

    def __init__(self, stream: TextIO) -> None:
        self._stream = stream

    def __call__(self, event: str, **fields: Any) -> None:
        self._stream.write(json.dumps({"event": event, **fields}) + "\n")
        self._stream.flush()
