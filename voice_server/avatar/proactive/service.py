"""This process's proactive engagement: the notification store, the live hub and (unless disabled) the
scheduler, started and stopped together by the app's lifespan."""

from __future__ import annotations

import logging

from voice_server.avatar.clock import Clock, system_clock
from voice_server.avatar.proactive.hub import NotificationHub
from voice_server.avatar.proactive.messages import Completer, PersonalLlm
from voice_server.avatar.proactive.notifications import NotificationStore
from voice_server.avatar.proactive.scheduler import ProactiveScheduler
from voice_server.security.keys import Keyring
from voice_server.stores.postgres import Database

log = logging.getLogger(__name__)


class ProactiveService:
    """The parts routes and realtime sessions use. Call `start` once and `aclose` at shutdown.

    Args:
        db: The database.
        keys: Users' data keys.
        worker: This process's worker id (stable per data dir).
        llm: Words the messages (templates without it).
        personal: The person's own tuned model, when on (`voice_server.avatar.proactive.scheduler`).
        schedule: Run the scheduler here (``SOMA_PROACTIVE``); delivery works either way.
        interval_s: The scheduler's longest wait between passes.
        clock: The current time.
    """

    def __init__(
        self,
        db: Database,
        keys: Keyring,
        *,
        worker: str,
        llm: Completer | None,
        personal: PersonalLlm | None = None,
        schedule: bool = True,
        interval_s: float = 60.0,
        clock: Clock = system_clock,
    ) -> None:
        self.clock = clock
        self.store = NotificationStore(db, keys)
        self.hub = NotificationHub(db, self.store)
        self.scheduler = (
            ProactiveScheduler(db, keys, worker=worker, llm=llm, personal=personal, clock=clock,
                               interval_s=interval_s)
            if schedule
            else None
        )

    async def start(self) -> None:
        await self.hub.start()
        if self.scheduler is not None:
            await self.scheduler.start()

    async def aclose(self) -> None:
        if self.scheduler is not None:
            await self.scheduler.aclose()
        await self.hub.aclose()

    def wake(self) -> None:
        """A user's settings or milestones changed: plan now rather than at the next interval."""
        if self.scheduler is not None:
            self.scheduler.wake()
