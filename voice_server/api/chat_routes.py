"""OpenAI-compatible HTTP chat: ``POST /v1/chat/completions`` (SSE streaming or one JSON body) and
``GET /v1/models`` (the caller's avatars).

Stateless by default, as OpenAI's API is: the prompt holds the client's messages, the avatar's persona (a
system/developer message replaces it for that request) and what the avatar recalls from its memories about
the new message — nothing of earlier requests. Soma's extension field ``"soma": {"history": "recent"}``
(``extra_body=`` in the SDK; default ``"none"``) opts in to conversation history: when the client sent no
earlier turns itself (no ``assistant`` message; otherwise it is the authority on its context), the newest of
the user's heard history of the last 30 minutes is added. Either way the exchange is recorded as a turn of
the user's running ``chat`` conversation (memories are learned from it); a client that disconnects
mid-stream records only what was sent.

``stop`` (a string or up to 4) ends the reply before the first stop sequence, which is never sent;
``finish_reason`` is then ``"stop"``. Invalid requests are 400 ``invalid_request_error`` with the field in
``param`` (`voice_server.errors`); ``n`` above 1 is refused (``unsupported_value``): an avatar gives one
answer.
"""

from __future__ import annotations

import json
import logging
import secrets
import time
import uuid
from collections.abc import AsyncIterator, Callable
from typing import Annotated, Any, Literal

import anyio
from fastapi import APIRouter, Depends
from fastapi.responses import JSONResponse, StreamingResponse
from pydantic import BaseModel, ConfigDict, Field, field_validator
from pydantic_core import PydanticCustomError
from starlette.background import BackgroundTask

from pipeline.frames import TokenUsage
from pipeline.llm import ConversationLlm, ReplyPolicy
from pipeline.ports import FinishedTurn, Message
from voice_server.accounts import Principal
from voice_server.api.deps import ResourcesDep, require_scope
from voice_server.avatar.bond.service import BondService
from voice_server.avatar.directory import Avatar, avatar_names, resolve_avatar
from voice_server.avatar.memory.service import MemoryService
from voice_server.avatar.persona.service import PersonaService
from voice_server.avatar.training.serving import tuned_policy
from voice_server.conversations import ConversationStore, prompt, record_turn, turn_material
from voice_server.errors import ApiError
from voice_server.session_factory import RESUME_WINDOW_S

log = logging.getLogger(__name__)
router = APIRouter(prefix="/v1", tags=["chat"])
ChatUser = Annotated[Principal, Depends(require_scope("chat"))]

DEFAULT_MAX_TOKENS = 256
HISTORY_MESSAGES = 12
# Remembered history is not part of the cached persona prefix: every token of it is encoded again for each
# request (~0.75 ms a token with the full model). ~700 characters (~170 tokens) keep about one exchange
# and the first token under 300 ms (1000 characters measured 314 ms p50); long-term context is the memory
# feature's job.
HISTORY_CHARS = 700
MAX_STOPS = 4  # OpenAI's limit
MAX_STOP_CHARS = 256  # every token is checked against each stop's prefixes: bounded work per token
MAX_MESSAGE_CHARS = 32_000
# A nucleus this small holds only the likeliest token, which always has at least 1/vocabulary of the mass
# (more than this for any vocabulary under a million tokens): such a ``top_p`` is greedy decoding. CTranslate2
# refuses 0, and float32 would round a tinier value to 0.
GREEDY_TOP_P = 1e-6


class TextPart(BaseModel):
    """One content part; only text parts are understood."""

    model_config = ConfigDict(extra="ignore")
    type: str = Field(max_length=32)
    text: str | None = Field(default=None, max_length=32_000)


class ChatMessage(BaseModel):
    model_config = ConfigDict(extra="ignore")
    role: Literal["system", "developer", "user", "assistant", "tool"]
    content: str | list[TextPart] | None = Field(default=None)

    def text(self, index: int) -> str:
        """The message's text; ``index``, its place in ``messages``, names it in errors.

        Raises:
            ApiError: 400 for a non-text content part or a message over `MAX_MESSAGE_CHARS`.
        """
        param = f"messages[{index}].content"
        if self.content is None:
            return ""
        if isinstance(self.content, str):
            if len(self.content) > MAX_MESSAGE_CHARS:
                message = f"a message may have at most {MAX_MESSAGE_CHARS} characters"
                raise ApiError(400, "message_too_long", message, param=param)
            return self.content
        texts = []
        for n, part in enumerate(self.content):
            if part.type != "text" or part.text is None:
                message = f"content parts of type {part.type!r} are not supported"
                raise ApiError(400, "unsupported_content", message, param=f"{param}[{n}].type")
            texts.append(part.text)
        return "".join(texts)


class StreamOptions(BaseModel):
    model_config = ConfigDict(extra="ignore")
    include_usage: bool = False


class SomaOptions(BaseModel):
    """Soma's own request options, in the body's ``soma`` object (the SDK sends it with ``extra_body=``).

    Attributes:
        history: ``"none"`` (default, stateless like OpenAI) or ``"recent"``: add the user's recent heard
            history when the client sent no earlier turns itself.
    """

    model_config = ConfigDict(extra="forbid")  # a misspelt option must not be silently ignored
    history: Literal["none", "recent"] = "none"


StopSequence = Annotated[str, Field(min_length=1, max_length=MAX_STOP_CHARS)]


class ChatCompletionRequest(BaseModel):
    """The supported subset of OpenAI's request; other fields (``user``, ``seed``, ``presence_penalty``…)
    are accepted and ignored."""

    model_config = ConfigDict(extra="ignore")
    model: str = Field(max_length=128)
    messages: list[ChatMessage] = Field(min_length=1, max_length=256)
    stream: bool = False
    stream_options: StreamOptions | None = None
    max_tokens: int | None = Field(default=None, ge=1, le=2048)
    max_completion_tokens: int | None = Field(default=None, ge=1, le=2048)
    temperature: float | None = Field(default=None, ge=0.0, le=2.0)
    top_p: float | None = Field(default=None, ge=0.0, le=1.0)
    n: int | None = Field(default=1, ge=1)
    stop: StopSequence | Annotated[list[StopSequence], Field(max_length=MAX_STOPS)] | None = None
    soma: SomaOptions | None = None  # null, like an absent field, means the defaults (OpenAI's rule for null)

    @field_validator("n")
    @classmethod
    def _one_choice(cls, n: int | None) -> int | None:
        if n is not None and n > 1:
            raise PydanticCustomError("unsupported_value", "only n=1 is supported: an avatar gives one answer")
        return n

    @property
    def history(self) -> Literal["none", "recent"]:
        """``soma.history``, ``"none"`` unless the client asked for more."""
        return self.soma.history if self.soma is not None else "none"

    def stops(self) -> tuple[str, ...]:
        """The client's stop sequences (none, one or up to four)."""
        if self.stop is None:
            return ()
        return (self.stop,) if isinstance(self.stop, str) else tuple(self.stop)


@router.get("/models", summary="The caller's avatars, as OpenAI models")
async def list_models(user: ChatUser) -> dict[str, Any]:
    """``{"object": "list", "data": [{"id", "object": "model", "created", "owned_by"}]}``."""
    return {"object": "list", "data": [_model_card(name, user.username) for name in avatar_names(user)]}


@router.get("/models/{model_id}", summary="One of the caller's avatars")
async def get_model(model_id: str, user: ChatUser) -> dict[str, Any]:
    """404 ``model_not_found`` unless ``model_id`` is one of the caller's avatars."""
    avatar = await resolve_avatar(user, model_id, None)  # a model card shows no persona: none is looked up
    return _model_card(avatar.id, avatar.owner)


def _model_card(model_id: str, owner: str) -> dict[str, Any]:
    return {"id": model_id, "object": "model", "created": 0, "owned_by": owner}


@router.post("/chat/completions", summary="Chat with an avatar (OpenAI Chat Completions compatible)")
async def chat_completions(body: ChatCompletionRequest, user: ChatUser, res: ResourcesDep) -> Any:
    """Answer the last user message; ``stream: true`` sends ``chat.completion.chunk`` SSE events then
    ``[DONE]``.

    Raises:
        ApiError: 404 unknown model, 400 bad messages (``param`` names the message) or a prompt over
            ``SOMA_MAX_PROMPT_TOKENS`` (counted with the model's tokenizer, off the event loop), 503 no models.
    """
    avatar = await resolve_avatar(user, body.model, res.persona)
    llm_model = res.models.llm if res.models is not None else None
    if llm_model is None:
        raise ApiError(503, "models_unavailable", "this server was started without models")
    store = ConversationStore(res.db, res.keys)
    messages, user_text = await _prompt(body, avatar, user, store, res.memory, res.persona, res.bond)
    budget = llm_model.limits.max_prompt_tokens
    prompt_tokens = await llm_model.acount_tokens(messages)
    if prompt_tokens > budget:
        message = f"the prompt has {prompt_tokens} tokens; at most {budget}"
        raise ApiError(400, "context_length_exceeded", message, param="messages")
    top_p = body.top_p
    # Greedy unless the client asks for sampling (or the person's tuned model answers, below).
    sampling = bool(body.temperature) and (top_p is None or top_p >= GREEDY_TOP_P)
    policy = ReplyPolicy(
        max_tokens=body.max_completion_tokens or body.max_tokens or DEFAULT_MAX_TOKENS,
        temperature=body.temperature if sampling and body.temperature else 1.0,
        top_k=40 if sampling else 1,
        top_p=top_p if sampling and top_p is not None else 1.0,
        stop=ReplyPolicy().stop + body.stops(),  # the defaults end a reply that starts writing the user's line
        max_sentences=None,
    )
    # The person's own tuned model answers when it is on; the lease ends with the reply (`_Exchange.pieces`),
    # and for a stream also once the response is over (a client gone before the first piece).
    lease = await res.training.lease_for(user.user_id) if res.training is not None else None
    chat_model = lease.llm if lease is not None else llm_model
    if lease is not None and body.temperature is None and top_p is None:
        policy = tuned_policy(policy)  # a tuned model speaks sampled unless the client chose its decoding
    exchange = _Exchange(ConversationLlm(chat_model, policy), messages, user_text, avatar, user, store, res.memory)
    exchange.bond = res.bond
    exchange.release = lease.release if lease is not None else None
    if body.stream:
        usage = body.stream_options is not None and body.stream_options.include_usage
        return StreamingResponse(
            exchange.sse(include_usage=usage),
            media_type="text/event-stream",
            headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
            background=BackgroundTask(lease.release) if lease is not None else None,
        )
    text = await exchange.complete()
    return JSONResponse(
        {
            **exchange.envelope("chat.completion"),
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": text, "refusal": None},
                    "finish_reason": exchange.finish_reason,
                    "logprobs": None,
                }
            ],
            "usage": exchange.usage(),
        }
    )


async def _prompt(
    body: ChatCompletionRequest,
    avatar: Avatar,
    user: Principal,
    store: ConversationStore,
    memory: MemoryService | None,
    persona: PersonaService | None = None,
    bond: BondService | None = None,
) -> tuple[list[Message], str]:
    """The prompt for this request (persona or the client's instructions, recalled memories and — with the
    avatar's own persona — examples of how the user writes, and with ``soma.history: "recent"`` the user's
    recent history) and the user's new message.

    Raises:
        ApiError: 400 for a tool message, unsupported content, or a last message that is not a non-empty user
            message.
    """
    instructions: list[str] = []
    dialogue: list[Message] = []
    for index, m in enumerate(body.messages):
        if m.role == "tool":
            message = "tool messages are not supported: avatars do not call tools"
            raise ApiError(400, "unsupported_role", message, param=f"messages[{index}].role")
        text = m.text(index)
        if m.role in ("user", "assistant"):
            dialogue.append({"role": m.role, "content": text})
        elif text:
            instructions.append(text)
    system = "\n\n".join(instructions)
    if not dialogue or dialogue[-1]["role"] != "user" or not dialogue[-1]["content"].strip():
        message = "the last message must be a non-empty user message"
        raise ApiError(400, "invalid_messages", message, param="messages")
    if body.history == "recent" and not any(m["role"] == "assistant" for m in dialogue):
        history = await store.recent_history(user.user_id, max_messages=HISTORY_MESSAGES, within_s=RESUME_WINDOW_S)
        dialogue = _newest_within(history, HISTORY_CHARS) + dialogue
    user_text = dialogue[-1]["content"]
    late = await turn_material(
        user.user_id, user.username, user_text, memory=memory, bond=bond,
        examples=None if system else persona,  # a client's own instructions replace the persona, examples too
    )
    return prompt(system or avatar.persona, dialogue[:-1], late, user_text), user_text


def _newest_within(history: list[Message], budget_chars: int) -> list[Message]:
    """The newest exchanges (a user message and its answer) of ``history`` that fit ``budget_chars``, oldest
    first. The newest exchange that does not fit whole keeps its question and the beginning of its answer,
    so one long answer does not wipe out the whole memory; a reply is never kept without its question."""
    exchanges: list[list[Message]] = []
    for message in history:
        if message["role"] == "user" or not exchanges:
            exchanges.append([message])
        else:
            exchanges[-1].append(message)
    kept: list[Message] = []
    left = budget_chars
    for exchange in reversed(exchanges):
        if exchange[0]["role"] != "user":
            break
        size = sum(len(m["content"]) for m in exchange)
        if size <= left:
            kept[:0] = exchange
            left -= size
            continue
        question = exchange[0]["content"]
        room = left - len(question)
        if room >= _MIN_GIST_CHARS:
            answer = [{"role": m["role"], "content": m["content"][:room].rstrip() + "…"} for m in exchange[1:2]]
            kept[:0] = [exchange[0], *answer]
        break
    return kept


_MIN_GIST_CHARS = 80  # less of an answer than this is not worth its question's tokens


class _Exchange:
    """One request's generation and its record in the conversation history."""

    def __init__(
        self,
        llm: ConversationLlm,
        messages: list[Message],
        user_text: str,
        avatar: Avatar,
        user: Principal,
        store: ConversationStore,
        memory: MemoryService | None,
    ) -> None:
        self.llm = llm
        self.messages = messages
        self.user_text = user_text
        self.avatar = avatar
        self.user = user
        self.store = store
        self.memory = memory
        self.bond: BondService | None = None
        self.release: Callable[[], None] | None = None  # ends the tuned model's lease (idempotent)
        self.id = "chatcmpl-" + secrets.token_hex(12)
        self.created = int(time.time())
        self.stats = TokenUsage()
        self.sent = ""
        self._t0 = time.monotonic()
        self._first: float | None = None

    @property
    def finish_reason(self) -> str:
        return "length" if self.stats.finish == "length" else "stop"

    def envelope(self, obj: str) -> dict[str, Any]:
        return {"id": self.id, "object": obj, "created": self.created, "model": self.avatar.id,
                "system_fingerprint": None}

    def usage(self) -> dict[str, Any]:
        """OpenAI's ``usage``; ``cached_tokens`` counts the persona prefix, whose encoding the model keeps
        between requests (the first request with a new persona fills that cache)."""
        prompt, completion = self.stats.prompt_tokens, self.stats.generated_tokens
        return {
            "prompt_tokens": prompt,
            "completion_tokens": completion,
            "total_tokens": prompt + completion,
            "prompt_tokens_details": {"cached_tokens": self.stats.cached_tokens, "audio_tokens": 0},
            "completion_tokens_details": {
                "reasoning_tokens": 0,
                "audio_tokens": 0,
                "accepted_prediction_tokens": 0,
                "rejected_prediction_tokens": 0,
            },
        }

    async def pieces(self) -> AsyncIterator[str]:
        """The reply's text pieces; records the turn when the stream ends, however it ends."""
        interrupted = True
        try:
            async for piece in self.llm.astream(self.messages, stats=self.stats):
                if self._first is None:
                    self._first = time.monotonic()
                self.sent += piece
                yield piece
            interrupted = False
        finally:
            if self.release is not None:
                self.release()
            # Shielded: a client that disconnected cancels this generator, but what it was sent is history.
            with anyio.CancelScope(shield=True):
                try:
                    await self._record(interrupted)
                except Exception:  # the answer was delivered; a failed history write must not turn it into an error
                    log.exception("recording a chat turn failed")

    async def complete(self) -> str:
        async for _ in self.pieces():
            pass
        return self.sent

    async def sse(self, *, include_usage: bool) -> AsyncIterator[str]:
        def chunk(delta: dict[str, Any], finish: str | None, **extra: Any) -> str:
            choice = {"index": 0, "delta": delta, "finish_reason": finish, "logprobs": None}
            body = {**self.envelope("chat.completion.chunk"), "choices": [choice], **extra}
            return f"data: {json.dumps(body, ensure_ascii=False)}\n\n"

        yield chunk({"role": "assistant", "content": ""}, None)
        try:
            async for piece in self.pieces():
                yield chunk({"content": piece}, None)
        except Exception as exc:  # headers are sent: report in-band, as OpenAI does
            message = f"generation failed: {type(exc).__name__}"
            error = {"error": {"message": message, "type": "server_error", "param": None, "code": "generation_failed"}}
            yield f"data: {json.dumps(error)}\n\n"
            return
        yield chunk({}, self.finish_reason)
        if include_usage:
            body = {**self.envelope("chat.completion.chunk"), "choices": [], "usage": self.usage()}
            yield f"data: {json.dumps(body)}\n\n"
        yield "data: [DONE]\n\n"

    async def _record(self, interrupted: bool) -> None:
        marks = {"request": self._t0}
        if self._first is not None:
            marks["llm_first_token"] = self._first
        turn = FinishedTurn(0, self.user_text, self.sent, self.sent, interrupted, marks)
        conversation: uuid.UUID = await self.store.current(
            self.user.user_id, self.avatar.id, "chat", within_s=RESUME_WINDOW_S
        )
        await record_turn(self.store, conversation, self.user.user_id, turn, memory=self.memory, bond=self.bond)
