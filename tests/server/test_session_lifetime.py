"""`SessionLifetime` with fakes: the one end order every channel's session goes through."""

from __future__ import annotations

import asyncio
from typing import cast

from voice_server.session_factory import Conversation
from voice_server.session_lifetime import SessionLifetime


class _Fakes:
    """A session that records its turn once its input ends, and a conversation that logs its close."""

    def __init__(self) -> None:
        self.log: list[str] = []
        self.input_ended = asyncio.Event()

    async def run(self) -> None:
        await self.input_ended.wait()
        self.log.append("turn recorded")

    def close(self) -> None:  # the channel's transport
        self.log.append("input closed")
        self.input_ended.set()

    async def stopped(self) -> None:
        self.log.append("channel stopped")


class _Conversation:
    def __init__(self, fakes: _Fakes) -> None:
        self.session = fakes
        self.fakes = fakes

    async def close(self) -> None:
        self.fakes.log.append("conversation closed")
        raise RuntimeError("redis is down")  # logged, never raised


async def test_a_watched_task_ending_ends_everything_in_order() -> None:
    """The peer leaving (a watched task ends) closes the input, lets the session record its turn, cancels the
    other tasks, runs the channel's cleanup and closes the conversation, in that order; a failing close is
    only logged."""
    fakes = _Fakes()
    conversation = cast(Conversation, _Conversation(fakes))
    peer_left = asyncio.Event()
    lifetime = SessionLifetime(conversation, fakes, name="test", on_stopped=fakes.stopped)
    async with lifetime:
        lifetime.start("test-session")
        lifetime.watch(peer_left.wait(), "test-peer")
        pump = lifetime.spawn(asyncio.Event().wait(), "test-pump")
        asyncio.get_running_loop().call_later(0.01, peer_left.set)
        await lifetime.wait()
    assert fakes.log == ["input closed", "turn recorded", "channel stopped", "conversation closed"]
    assert pump.cancelled()
    await lifetime.end()  # idempotent
    assert fakes.log.count("conversation closed") == 1


async def test_a_conversation_whose_session_never_started_is_still_closed() -> None:
    """A call refused after its conversation opened (no session ran) still closes the input and the
    conversation."""
    fakes = _Fakes()
    lifetime = SessionLifetime(cast(Conversation, _Conversation(fakes)), fakes, name="test")
    await lifetime.end()
    assert fakes.log == ["input closed", "conversation closed"]
