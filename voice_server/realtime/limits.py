"""Token limits on what a Realtime client adds to the prompt: its messages and its instructions.

Characters are a poor measure of cost: an emoji is one character and several tokens, and the prompt is encoded
in one uninterruptible model call whose time grows faster than its length (see `models.prompt_fit`). So text is
measured with the LLM's own tokenizer — off the event loop — after a cheap bound: a token is at least one UTF-8
byte, so text of fewer bytes than the limit cannot exceed it and is not counted at all.

A message over the limit is refused with an ``invalid_request_error`` and not added, rather than cut: the
client learns what happened and nothing it did not say enters the conversation.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence

from models.prompt_fit import PromptLimits
from voice_server.realtime.protocol import MAX_MESSAGE_CHARS, ProtocolError

CountTokens = Callable[[str], Awaitable[int]]


class InputLimits:
    """Checks user messages and instructions against `PromptLimits`.

    Args:
        limits: The server's limits (the LLM handle's ``limits``).
        count: Tokens of a text, computed off the event loop (``CT2Llm.acount_text_tokens``); ``None`` (tests
            without a model) counts UTF-8 bytes, an upper bound.
    """

    def __init__(self, limits: PromptLimits, count: CountTokens | None) -> None:
        self.limits = limits
        self._count = count

    async def tokens(self, text: str, limit: int) -> int:
        """Tokens of ``text``, or its UTF-8 byte length when that alone shows it is under ``limit``."""
        size = len(text.encode("utf-8", "surrogatepass"))
        if size < limit or self._count is None:
            return size
        return await self._count(text)

    async def check_turn(self, pending: Sequence[str], text: str, *, param: str) -> None:
        """Refuse ``text`` as the next user message of a turn whose earlier messages are ``pending`` (waiting for
        ``response.create``, sent together as one turn) when the turn would exceed the limits.

        Raises:
            ProtocolError: ``text_too_long`` — the message alone, or with the pending ones, is too long.
        """
        limit = self.limits.max_item_tokens
        turn = "\n".join([*pending, text])
        if len(turn) > MAX_MESSAGE_CHARS:
            raise ProtocolError("text_too_long", f"with the messages waiting for response.create, the turn would "
                                f"exceed {MAX_MESSAGE_CHARS} characters; send response.create first",
                                param=param)
        total = await self.tokens(turn, limit)
        if total <= limit:
            return
        alone = await self.tokens(text, limit) if pending else total
        if alone > limit:
            raise ProtocolError("text_too_long", f"the message has {alone} tokens; a message may have at most "
                                f"{limit} tokens", param=param)
        raise ProtocolError("text_too_long", f"with the messages waiting for response.create, the turn would exceed "
                            f"{limit} tokens; send response.create first", param=param)

    async def check_instructions(self, text: str | None) -> None:
        """Refuse instructions (which replace the persona, the prompt's fixed part) that leave too little room.

        Raises:
            ProtocolError: ``text_too_long`` naming ``session.instructions``.
        """
        limit = self.limits.max_instructions_tokens
        if text and (tokens := await self.tokens(text, limit)) > limit:
            raise ProtocolError("text_too_long", f"instructions have {tokens} tokens; at most {limit} are allowed",
                                param="session.instructions")
