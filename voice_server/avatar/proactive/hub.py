"""Live delivery: new notifications fanned out to this process's subscribers (SSE streams, realtime sockets).

Any server process may store a notification (whichever worker claimed the job); the insert's ``NOTIFY``
reaches every process that listens on `notifications.CHANNEL` when it commits. `NotificationHub` holds one
dedicated listening connection per process, loads a notification only when one of its owner's
subscribers is connected here, and puts it on each subscriber's bounded queue.

Nothing here ever blocks the sender: a subscriber whose queue is full (a client not reading) is dropped —
its stream ends, and the client reconnects and is replayed what it missed (``Last-Event-ID``), since every
notification is stored first. For the same reason, when the listening connection is lost every subscriber
is dropped after it reconnects: a notification committed during the gap was never heard here.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import uuid
from typing import Any, Final

import psycopg

from pipeline.tasks import cancel_and_wait
from voice_server.avatar.proactive.notifications import CHANNEL, NotificationStore
from voice_server.stores.postgres import Database

log = logging.getLogger(__name__)

QUEUE_MAX: Final = 32  # notifications waiting for one subscriber
PER_USER_MAX: Final = 8  # a user's subscribers in one process; a new one beyond it drops the oldest
RETRY_S: Final = (0.5, 1.0, 2.0, 5.0, 10.0, 30.0)


class Subscription:
    """One live subscriber's queue. Use as a context manager (or call `close`)."""

    def __init__(self, hub: NotificationHub, user_id: uuid.UUID) -> None:
        self.hub = hub
        self.user_id = user_id
        self._queue: asyncio.Queue[dict[str, Any]] = asyncio.Queue(QUEUE_MAX)
        self._ended = asyncio.Event()
        self.dropped = False

    def offer(self, notification: dict[str, Any]) -> None:
        """Queue without waiting; a full queue drops the subscriber."""
        try:
            self._queue.put_nowait(notification)
        except asyncio.QueueFull:
            log.info("events: a subscriber is not reading; dropped (it will be replayed on reconnect)")
            self.drop()

    def drop(self) -> None:
        """End this subscription (the client must reconnect and replay)."""
        self.dropped = True
        self.close()

    def close(self) -> None:
        self._ended.set()
        self.hub.unsubscribe(self)

    @property
    def ended(self) -> bool:
        return self._ended.is_set()

    async def get(self) -> dict[str, Any] | None:
        """The next notification, or ``None`` once the subscription ended (queued items come first)."""
        if not self._queue.empty():
            return self._queue.get_nowait()
        if self.ended:
            return None
        getter = asyncio.ensure_future(self._queue.get())
        ender = asyncio.ensure_future(self._ended.wait())
        try:
            await asyncio.wait([getter, ender], return_when=asyncio.FIRST_COMPLETED)
        finally:
            ender.cancel()
            if not getter.done():
                getter.cancel()
        if getter.done() and not getter.cancelled():
            return getter.result()
        return None

    def __enter__(self) -> Subscription:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class NotificationHub:
    """This process's live subscribers, fed by the Postgres listener. `start` once, `aclose` at shutdown.

    Args:
        db: The database (its `Database.connect` gives the listening connection).
        store: Loads a notification for its subscribers.
    """

    def __init__(self, db: Database, store: NotificationStore) -> None:
        self.db = db
        self.store = store
        self._subs: dict[uuid.UUID, collections.deque[Subscription]] = {}
        self._listener: asyncio.Task[None] | None = None
        self.listening = asyncio.Event()

    def subscribe(self, user_id: uuid.UUID) -> Subscription:
        """A new subscription to ``user_id``'s notifications (see `PER_USER_MAX`)."""
        subs = self._subs.setdefault(user_id, collections.deque())
        if len(subs) >= PER_USER_MAX:
            subs[0].drop()
        sub = Subscription(self, user_id)
        subs.append(sub)
        return sub

    def unsubscribe(self, sub: Subscription) -> None:
        subs = self._subs.get(sub.user_id)
        if subs is not None:
            with contextlib.suppress(ValueError):
                subs.remove(sub)
            if not subs:
                del self._subs[sub.user_id]

    def subscribers(self, user_id: uuid.UUID) -> int:
        return len(self._subs.get(user_id, ()))

    def publish(self, user_id: uuid.UUID, notification: dict[str, Any]) -> None:
        """Offer ``notification`` to every subscriber of ``user_id`` here (never blocks)."""
        for sub in list(self._subs.get(user_id, ())):
            sub.offer(notification)

    def drop_user(self, user_id: uuid.UUID) -> None:
        """End every subscription of ``user_id`` here (their account is being erased)."""
        for sub in list(self._subs.get(user_id, ())):
            sub.drop()

    def drop_all(self) -> None:
        for subs in list(self._subs.values()):
            for sub in list(subs):
                sub.drop()

    # -------------------------------------------------------------------------------------------- listener

    async def start(self) -> None:
        """Start listening (returns once ``LISTEN`` is in place, or after the first failure is logged)."""
        self._listener = asyncio.create_task(self._listen(), name="notification-listener")
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(10):
                await self.listening.wait()

    async def aclose(self) -> None:
        """Stop listening and end every subscription."""
        if self._listener is not None:
            await cancel_and_wait(self._listener)
            self._listener = None
        self.drop_all()

    async def _listen(self) -> None:
        failures = 0
        while True:
            try:
                conn = await self.db.connect()
            except (psycopg.Error, OSError):
                log.warning("events: cannot open the listening connection; retrying", exc_info=True)
                await asyncio.sleep(RETRY_S[min(failures, len(RETRY_S) - 1)])
                failures += 1
                continue
            try:
                await conn.execute(f"LISTEN {CHANNEL}")
                if failures:
                    self.drop_all()  # a gap: whatever was committed meanwhile was not heard here
                self.listening.set()
                failures = 0
                async for note in conn.notifies():
                    await self._deliver(note.payload)
            except (psycopg.Error, OSError):
                log.warning("events: the listening connection was lost; reconnecting", exc_info=True)
                failures += 1
            finally:
                self.listening.clear()
                with contextlib.suppress(Exception):
                    await conn.close()
            await asyncio.sleep(RETRY_S[min(failures, len(RETRY_S) - 1)])

    async def _deliver(self, payload: str) -> None:
        try:
            user_part, _, id_part = payload.partition(":")
            user_id, notification_id = uuid.UUID(user_part), uuid.UUID(id_part)
        except ValueError:
            log.warning("events: malformed notification payload ignored")
            return
        if not self.subscribers(user_id):
            return
        try:
            notification = await self.store.get(user_id, notification_id)
        except Exception:
            log.warning("events: a notification could not be loaded for live delivery", exc_info=True)
            return
        if notification is not None:
            self.publish(user_id, notification)
