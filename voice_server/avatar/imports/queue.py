"""The import queue: bounded per user and in all, served round-robin between users.

One user must not be able to keep everyone else's imports out (a shared FIFO of 16 slots let one user fill
it and give everyone else ``429``), nor make them wait behind a long line of their own uploads. So:

* **admission** is per owner: an owner holds a *slot* from the moment an upload is admitted until its job
  ends (uploading, waiting and running all count), at most ``per_owner`` slots each and ``total`` in all;
  over either limit `admit` refuses at once, before anything is written;
* **service** is round-robin: each owner with waiting jobs has its own FIFO, and `get` takes the next job
  of the owner whose turn it is, who then goes to the back of the line. A newcomer waits for at most one
  job of each other owner, however many they queued.

Sans-I/O apart from the `asyncio.Event` that wakes the one consumer. Not thread-safe: event loop only.
"""

from __future__ import annotations

import asyncio
import collections
from collections.abc import Callable, Hashable
from typing import Generic, TypeVar

Owner = TypeVar("Owner", bound=Hashable)
Item = TypeVar("Item")

RETRY_AFTER_S = 30  # what a refused client is told to wait: about one text import, or a minute of audio


class QueueFullError(RuntimeError):
    """The server holds as many imports as it takes, from all users together; try again later."""

    retry_after_s = RETRY_AFTER_S


class QuotaExceededError(QueueFullError):
    """This user already has as many imports uploading, waiting or running as one user may."""


class FairQueue(Generic[Owner, Item]):
    """Waiting items per owner, served round-robin; slots bounded per owner and in all (see the module doc).

    Call order for one item: `admit` (the slot is held from here), then `put` once it is ready, or `release`
    if it never will be; after `get` (or `remove`) hands it out, `release` when its work ends.
    """

    def __init__(self, per_owner: int, total: int) -> None:
        if per_owner < 1 or total < per_owner:
            raise ValueError("need 1 <= per_owner <= total")
        self.per_owner = per_owner
        self.total = total
        self._held: collections.Counter[Owner] = collections.Counter()
        self._waiting: dict[Owner, collections.deque[Item]] = {}
        self._turns: collections.deque[Owner] = collections.deque()  # owners with waiting items, next first
        self._ready = asyncio.Event()

    def held(self, owner: Owner) -> int:
        """Slots ``owner`` holds (admitted and not yet released)."""
        return self._held[owner]

    def waiting(self) -> int:
        """Items waiting to be handed out, all owners together."""
        return sum(len(items) for items in self._waiting.values())

    def admit(self, owner: Owner) -> None:
        """Take a slot for one more of ``owner``'s items.

        Raises:
            QuotaExceededError: ``owner`` already holds ``per_owner`` slots.
            QueueFullError: all ``total`` slots are held.
        """
        if self._held[owner] >= self.per_owner:
            raise QuotaExceededError(
                f"you already have {self.per_owner} imports uploading, waiting or running; "
                "wait for one of them to finish"
            )
        if self._held.total() >= self.total:
            raise QueueFullError("the server is busy with too many imports; try again later")
        self._held[owner] += 1

    def release(self, owner: Owner) -> None:
        """Give back one of ``owner``'s slots (its item finished, failed, or was never put)."""
        if self._held[owner] <= 0:
            raise RuntimeError("release without a held slot")
        self._held[owner] -= 1
        if not self._held[owner]:
            del self._held[owner]

    def put(self, owner: Owner, item: Item) -> None:
        """Queue ``item`` under a slot `admit` gave ``owner``; never blocks, never refuses."""
        if self._held[owner] <= len(self._waiting.get(owner, ())):
            raise RuntimeError("put without an admitted slot")
        items = self._waiting.get(owner)
        if items is None:
            items = self._waiting[owner] = collections.deque()
            self._turns.append(owner)
        items.append(item)
        self._ready.set()

    async def get(self) -> tuple[Owner, Item]:
        """The next item, round-robin between owners; waits while none is waiting. One consumer only."""
        while not self._turns:
            self._ready.clear()
            await self._ready.wait()
        owner = self._turns.popleft()
        items = self._waiting[owner]
        item = items.popleft()
        if items:
            self._turns.append(owner)  # their next item waits for everyone else's turn
        else:
            del self._waiting[owner]
        return owner, item

    def remove(self, match: Callable[[Item], bool]) -> list[tuple[Owner, Item]]:
        """Take every waiting item ``match`` accepts out of the queue (their slots stay held: `release`)."""
        taken: list[tuple[Owner, Item]] = []
        for owner in list(self._waiting):
            keep: collections.deque[Item] = collections.deque()
            for item in self._waiting[owner]:
                if match(item):
                    taken.append((owner, item))
                else:
                    keep.append(item)
            if keep:
                self._waiting[owner] = keep
            else:
                del self._waiting[owner]
                self._turns.remove(owner)
        return taken
