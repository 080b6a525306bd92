"""What memory needs of the models: the embedder's and the LLM's async faces (protocols, so memory never
imports the model runtimes)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Protocol, Unpack

if TYPE_CHECKING:  # types only: the LLM runtime is imported when the models load
    from models.chat_prompt import Message
    from models.llm import GenerateOptions


class Embedder(Protocol):
    """`models.embed.MiniLmEmbedder`'s async face (memory's, imports', the indexer's and the persona's)."""

    async def aembed(self, texts: Sequence[str]) -> Any: ...


class Completer(Protocol):
    """`models.llm.CT2Llm`'s one-shot completion."""

    async def acomplete(self, messages: Sequence[Message], **options: Unpack[GenerateOptions]) -> str: ...
