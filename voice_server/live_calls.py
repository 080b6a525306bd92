"""How many conversations are live on this server, with an event for "none is".

Background model work (imports' speech windows, proactive messages' generations) steps aside while any
conversation is live (`voice_server.avatar.calls_first`). It waits on `LiveCalls.until_none` instead of
polling the ``soma_live_conversations`` gauge: the gauge stays what operators read, this is what code awaits.
Both move at the same two places (`voice_server.session_factory`: a conversation opened, and closed).

One per server, owned by `voice_server.resources.Resources`. Event loop only.
"""

from __future__ import annotations

import asyncio
import logging

log = logging.getLogger(__name__)


class LiveCalls:
    """A count of live conversations, all channels together. Call `opened` when one starts and `closed`
    exactly once when it ends."""

    def __init__(self) -> None:
        self._count = 0
        self._none = asyncio.Event()  # set exactly while the count is zero
        self._none.set()
        self._some = asyncio.Event()  # set exactly while the count is not zero

    @property
    def count(self) -> int:
        """Conversations live now."""
        return self._count

    def opened(self) -> None:
        """A conversation started."""
        self._count += 1
        self._none.clear()
        self._some.set()

    def closed(self) -> None:
        """A conversation ended (one `opened` each; an extra call is logged and ignored, never negative)."""
        if self._count == 0:
            log.error("live calls: a conversation was closed that was never opened")
            return
        self._count -= 1
        if self._count == 0:
            self._none.set()
            self._some.clear()

    async def until_none(self, max_wait_s: float | None = None) -> bool:
        """Return once no conversation is live, or after ``max_wait_s`` seconds (``None``: no limit); true when
        none was. Returns at once when none is live now."""
        try:
            async with asyncio.timeout(max_wait_s):
                # A call may start between the event being set and this task running again: look again.
                while self._count:
                    await self._none.wait()
        except TimeoutError:
            return False
        return True

    async def until_some(self) -> None:
        """Return once a conversation is live (at once when one is): a background child process is paused then."""
        while not self._count:
            await self._some.wait()
