"""The session's outbound events: one ordered stream, two lanes with their own admission policy.

Events reach the transport in exactly the order the session emitted them (a reply's text deltas come before
its `ReplyDone`, which a client relies on), but not every event may be lost when the transport falls behind:

- **Bulk** events (reply text deltas, non-empty partial transcripts, latency marks) are bounded by
  ``bulk_limit``; beyond it new ones are dropped, as a slow client can only show them late anyway.
- **Control** events (`pipeline.frames.is_control`: ends of replies, turn states, errors, final transcripts,
  VAD edges) are never dropped: losing one breaks the protocol (a client waiting for ``response.done`` would
  wait forever). Their number is bounded by construction, with backpressure past a high-water mark: they
  come either from handling one input frame (at most two: a VAD edge or an input error), and the session
  stops reading input while `room_for_control` waits (above `CONTROL_HIGH_WATER` until the lane drains to
  `CONTROL_LOW_WATER`); or from a turn's life (final transcript, three turn states, `ReplyDone`, an error: a
  few per turn), and a new turn needs new input. So the lane never holds more than the high-water mark plus
  the few events of the turn in progress.
"""

from __future__ import annotations

import asyncio
import collections
import logging

from pipeline.frames import OutputEvent, is_control

log = logging.getLogger(__name__)

CONTROL_HIGH_WATER = 64  # control events waiting before the session stops reading input
CONTROL_LOW_WATER = 16  # ... and resumes once they have drained to this


class OutboundEvents:
    """Events from the session to its transport (see the module docstring). One consumer calls `get`.

    Args:
        bulk_limit: Bulk events waiting before new ones are dropped (``SessionConfig.event_queue``).
    """

    def __init__(self, bulk_limit: int) -> None:
        self.bulk_limit = bulk_limit
        self.dropped = 0  # bulk events dropped so far
        self._queue: collections.deque[tuple[OutputEvent, bool]] = collections.deque()  # (event, is control)
        self._bulk = 0
        self._control = 0
        self._ready = asyncio.Event()
        self._room = asyncio.Event()
        self._room.set()

    @property
    def control_waiting(self) -> int:
        """Control events not yet taken by the consumer."""
        return self._control

    def put(self, event: OutputEvent) -> bool:
        """Queue ``event`` behind every earlier one; ``False`` when it is a bulk event and the bulk lane is
        full (it is dropped; a control event is always queued)."""
        control = is_control(event)
        if control:
            self._control += 1
            if self._control >= CONTROL_HIGH_WATER:
                self._room.clear()
        elif self._bulk >= self.bulk_limit:
            self.dropped += 1
            if self.dropped in (1, 100, 10_000):
                log.warning("transport is not keeping up: %d events dropped", self.dropped)
            return False
        else:
            self._bulk += 1
        self._queue.append((event, control))
        self._ready.set()
        return True

    async def get(self) -> OutputEvent:
        """The oldest queued event, waiting for one if there is none."""
        while not self._queue:
            self._ready.clear()
            await self._ready.wait()
        event, control = self._queue.popleft()
        if control:
            self._control -= 1
            if self._control <= CONTROL_LOW_WATER:
                self._room.set()
        else:
            self._bulk -= 1
        return event

    async def room_for_control(self) -> None:
        """Return at once unless the control lane passed its high-water mark; then wait until it drained to
        the low-water mark. The producer of input-driven control events awaits this before each input."""
        if not self._room.is_set():
            await self._room.wait()
