"""Fitting a chat prompt into a token budget by dropping the oldest conversation first.

Why a budget at all: the prompt is encoded in one uninterruptible CTranslate2 call whose cost grows faster than
linearly with its length (Qwen2.5-0.5B int8 on 2 cores: ~930 tokens 2.2 s, ~1,830 tokens 5.6 s, ~3,630 tokens
18.8 s, plus memory for the attention). A prompt nobody bounded is a denial of service that not even a
closed connection or a shutdown can stop.

Sans-I/O: the caller passes its counters (the model's tokenizer), so the policy is tested without a model.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

Message = Mapping[str, str]

# Role markers and separators a chat template adds around each message's content (ChatML: "<|im_start|>user\n"
# … "<|im_end|>\n" is 5 tokens). Only an estimate to choose how many messages to drop; the result is re-counted.
MESSAGE_OVERHEAD_TOKENS = 5


@dataclass(frozen=True, slots=True)
class PromptLimits:
    """How much text one generation may be asked to read (``SOMA_MAX_PROMPT_TOKENS``, ``SOMA_MAX_ITEM_TOKENS``).

    Attributes:
        max_prompt_tokens: Every prompt is cut to this many tokens, oldest history first (`fit_messages`).
            Encoding the prompt cannot be interrupted, so this also bounds how long a generation whose client
            left, or a shutdown, can take.
        max_item_tokens: Most tokens in one user message (a Realtime item, a typed turn); enforced by the
            channels, which answer with an error instead of cutting.
    """

    max_prompt_tokens: int = 3000
    max_item_tokens: int = 1000

    @property
    def max_instructions_tokens(self) -> int:
        """Most tokens a client's own instructions (which replace the persona) may take: half the prompt, so a
        full-size message and some history still fit."""
        return self.max_prompt_tokens // 2


class PromptTooLongError(ValueError):
    """The part of a prompt that is never dropped (system messages and the newest turn) exceeds the budget.

    Attributes:
        tokens: Tokens of that part.
        budget: The budget it had to fit.
    """

    def __init__(self, tokens: int, budget: int) -> None:
        super().__init__(f"the prompt needs {tokens} tokens without any history; at most {budget} are allowed")
        self.tokens = tokens
        self.budget = budget


def fit_messages(
    messages: Sequence[Message],
    budget: int,
    count: Callable[[Sequence[Message]], int],
    count_text: Callable[[str], int],
) -> tuple[list[Message], int]:
    """The longest suffix of the conversation that fits ``budget`` tokens, with what must stay.

    Kept whatever it costs: the leading system messages (the persona, also the model's cached prefix) and the
    tail from the last message back over the system messages right before it (the user's turn and its recalled
    memories). Dropped oldest first: the messages in between (the history), a whole exchange at a time, so an
    answer never stays without its question.

    Args:
        messages: The prompt, as the chat template receives it.
        budget: Most tokens the rendered prompt may have.
        count: Tokens of a rendered prompt (the model's template and tokenizer).
        count_text: Tokens of one message's content (used only to estimate how many messages to drop).

    Returns:
        The messages to use and their token count (``count`` of them).

    Raises:
        PromptTooLongError: Even with no history left, the prompt exceeds ``budget``.
    """
    total = count(messages)
    if total <= budget:
        return list(messages), total
    head = 0
    while head < len(messages) - 1 and messages[head].get("role") == "system":
        head += 1
    tail = len(messages) - 1
    while tail > head and messages[tail - 1].get("role") == "system":
        tail -= 1
    first, middle, last = list(messages[:head]), list(messages[head:tail]), list(messages[tail:])
    # Estimate from content sizes how much history must go, then confirm with a real count (one more message
    # at a time): the template's own tokens make the estimate inexact, and a count per message would re-encode
    # the whole prompt once per dropped message.
    excess = total - budget
    drop = 0
    while drop < len(middle) and excess > 0:
        excess -= count_text(middle[drop].get("content", "")) + MESSAGE_OVERHEAD_TOKENS
        drop += 1
    while True:
        drop = _exchange_boundary(middle, drop)
        kept = [*first, *middle[drop:], *last]
        total = count(kept)
        if total <= budget:
            return kept, total
        if drop >= len(middle):
            raise PromptTooLongError(total, budget)
        drop += 1


def _exchange_boundary(middle: Sequence[Message], drop: int) -> int:
    """``drop`` moved forward past answers, so the kept history starts with a question (or is empty)."""
    while drop < len(middle) and middle[drop].get("role") != "user":
        drop += 1
    return drop
