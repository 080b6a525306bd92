"""The lifetime of a channel's conversation session: run it, watch it, stop it, close it.

Every channel — the realtime WebSocket, WebRTC calls and SIP calls — opens its conversation with
`voice_server.session_factory.open_conversation` and then hands it to a `SessionLifetime`, which runs the
session next to the channel's own tasks and ends them all in one order:

1. the channel transport's input ends (``close``), so the session stops reading and winds down;
2. the session gets `GRACE_S` to end by itself: it records the turn in progress as it ends;
3. the session and every task of the lifetime are cancelled (each gets `CANCEL_S` to stop);
4. the channel's ``on_stopped`` cleanup runs (the realtime connection's item edits, which write history,
   must stop before the conversation is marked ended);
5. the conversation is closed (`Conversation.close`: live state ``disconnected`` in Redis, ``ended_at`` in
   Postgres, the live-conversations gauge down); a failure there is logged, never raised.

The channel keeps only what is its own: its wire protocol and transport, and releasing them (socket, peer
connection, RTP port) after the lifetime ended.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Coroutine
from types import TracebackType
from typing import Any, Protocol

from pipeline.tasks import cancel_and_wait
from voice_server.session_factory import Conversation

log = logging.getLogger(__name__)

GRACE_S = 5.0  # the session's time to end by itself (and record the turn in progress) once input ended
CANCEL_S = 3.0  # a cancelled task's time to stop


class ClosableInput(Protocol):
    """The part of a channel's transport the lifetime uses."""

    def close(self) -> None:
        """End the session's input stream (the session then shuts down)."""
        ...


class SessionLifetime:
    """Runs one conversation's session with the channel's tasks, and ends them all (module docstring).

    Use it as an async context manager, or call `end` yourself; either way `end` must run once the
    conversation is open, whether or not the session was ever started. Call order: `start` (once), `watch`
    and `spawn` for the channel's tasks, then `wait`.

    Args:
        conversation: The opened conversation (its session not started yet).
        transport: The channel's transport the session reads from.
        name: Names the channel and connection in log lines (``"realtime"``, ``"call rtc_…"``).
        on_stopped: The channel's cleanup after every task stopped and before the conversation closes.
    """

    def __init__(
        self,
        conversation: Conversation,
        transport: ClosableInput,
        *,
        name: str,
        on_stopped: Callable[[], Awaitable[None]] | None = None,
    ) -> None:
        self.conversation = conversation
        self.name = name
        self._transport = transport
        self._on_stopped = on_stopped
        self._session: asyncio.Task[None] | None = None
        self._watched: list[asyncio.Task[Any]] = []
        self._owned: list[asyncio.Task[Any]] = []
        self._ended = False

    async def __aenter__(self) -> SessionLifetime:
        return self

    async def __aexit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.end()

    def start(self, task_name: str) -> None:
        """Start the session's ``run`` as the task ``task_name``."""
        assert self._session is None, "the session runs once"
        self._session = asyncio.create_task(self.conversation.session.run(), name=task_name)

    def watch(self, coro: Coroutine[Any, Any, Any], task_name: str) -> asyncio.Task[Any]:
        """Run ``coro`` until the lifetime ends; when it ends first, `wait` returns (the peer left, the
        client stopped reading, the call was hung up)."""
        task = asyncio.create_task(coro, name=task_name)
        self._watched.append(task)
        return task

    def spawn(self, coro: Coroutine[Any, Any, Any], task_name: str) -> asyncio.Task[Any]:
        """Run ``coro`` until the lifetime ends; its own end ends nothing."""
        task = asyncio.create_task(coro, name=task_name)
        self._owned.append(task)
        return task

    def adopt(self, *tasks: asyncio.Task[Any]) -> None:
        """Cancel ``tasks`` (started by the channel before the lifetime) with the lifetime's own."""
        self._owned.extend(tasks)

    async def wait(self) -> None:
        """Return when the session or a watched task ended (the session's end: the transport closed)."""
        tasks = [t for t in (self._session, *self._watched) if t is not None]
        if tasks:
            await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)

    async def end(self) -> None:
        """Stop the session and every task, run ``on_stopped`` and close the conversation. Idempotent."""
        if self._ended:
            return
        self._ended = True
        self._transport.close()
        session = [self._session] if self._session is not None else []
        if session:
            await asyncio.wait(session, timeout=GRACE_S)  # the turn in progress is recorded as the session ends
        await cancel_and_wait(*session, *self._watched, *self._owned, timeout=CANCEL_S)
        try:
            if self._on_stopped is not None:
                await self._on_stopped()
        finally:
            try:
                await self.conversation.close()
            except Exception:  # the conversation's end is bookkeeping: the channel still releases its own
                log.exception("%s: closing the conversation failed", self.name)
