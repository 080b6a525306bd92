"""The "train my avatar" feature for the routes, the CLI and the channels: what data there is, jobs, which model
answers, and the tuned model a conversation speaks with.

Owns the `TrainingRunner` (jobs) and the `TunedModels` cache (serving); the tables and sealed files are
`voice_server.avatar.training.store`'s.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from models import finetune
from voice_server.avatar.training import store
from voice_server.avatar.training.job import Progress, QueueFullError, TrainingRunner, TrainingSettings, training_data
from voice_server.avatar.training.pairs import require_enough
from voice_server.avatar.training.serving import Lease, TunedModels
from voice_server.live_calls import LiveCalls
from voice_server.security.keys import Keyring
from voice_server.stores.postgres import Database

__all__ = ["QueueFullError", "TrainingService", "TrainingUnavailableError"]


class TrainingUnavailableError(RuntimeError):
    """This server cannot train (no base weights for its model, or no models loaded); the message says why."""


class TrainingService:
    """Training jobs, the model choice and tuned-model serving for one server.

    Args:
        db, keys: The stores.
        settings: The runner's settings (base model, where models go, budgets).
        live: Live conversations.
        base_llm: The loaded base model (calls' model; the comparison uses it too).
        load: Loads a CTranslate2 directory as a `models.llm.CT2Llm` (blocking).
        persona_prompt: The persona prompt as served (user id, username).
        worker: This data dir's worker id.
        resident: Tuned models kept loaded.
    """

    def __init__(
        self,
        db: Database,
        keys: Keyring,
        settings: TrainingSettings,
        live: LiveCalls,
        base_llm: Any,
        load: Callable[[Path], Any],
        persona_prompt: Callable[[uuid.UUID, str], Awaitable[str]],
        worker: str,
        resident: int,
    ) -> None:
        self._db = db
        self._keys = keys
        self.settings = settings
        self.models = TunedModels(db, keys, settings.models_root, settings.base_dir, load, resident)
        self.runner = TrainingRunner(db, keys, settings, live, lambda: base_llm, load, persona_prompt, worker,
                                     self.models.forget)

    async def start(self) -> None:
        """Start the job worker."""
        await self.runner.start()

    async def aclose(self) -> None:
        """Stop the job in progress and close the loaded tuned models."""
        await self.runner.aclose()
        await self.models.aclose()

    @property
    def can_train(self) -> bool:
        """Whether the base model's weights for training are here (`models.finetune.base_available`)."""
        return finetune.base_available(self.settings.base_dir)

    async def data(self, user_id: uuid.UUID) -> dict[str, Any]:
        """What the person's imported chats give to train on (`TrainingData.summary`)."""
        async with self._db.pool.connection() as conn:
            key = await self._keys.for_user(conn, user_id)
        return (await training_data(self._db, key)).summary()

    async def submit(self, user_id: uuid.UUID, username: str, *, minutes: float | None,
                     max_steps: int | None, mask: bool = True) -> dict[str, Any] | None:
        """Check the data, then queue a job (`TrainingRunner.submit`).

        Raises:
            TrainingUnavailableError: This server cannot train.
            voice_server.avatar.training.pairs.TooLittleDataError: Too few replies (nothing is started).
            QueueFullError: Too many jobs wait.
        """
        if not self.can_train:
            raise TrainingUnavailableError(
                f"the base model's training weights are not provisioned in {self.settings.base_dir}; "
                "run: soma models provision"
            )
        async with self._db.pool.connection() as conn:
            key = await self._keys.for_user(conn, user_id)
        require_enough(await training_data(self._db, key))
        return await self.runner.submit(user_id, username, minutes=minutes, max_steps=max_steps, mask=mask)

    async def job(self, user_id: uuid.UUID, job_id: uuid.UUID) -> dict[str, Any] | None:
        """The user's job with its live progress merged in (``live``), or ``None``."""
        async with self._db.pool.connection() as conn:
            key = await self._keys.for_user(conn, user_id)
            row = await store.get_job(conn, key, job_id)
        return None if row is None else self._with_live(row)

    async def jobs(self, user_id: uuid.UUID) -> list[dict[str, Any]]:
        """The user's newest jobs."""
        async with self._db.pool.connection() as conn:
            key = await self._keys.for_user(conn, user_id)
            rows = await store.list_jobs(conn, key)
        return [self._with_live(row) for row in rows]

    def _with_live(self, row: dict[str, Any]) -> dict[str, Any]:
        progress = self.runner.progress(row["id"])
        return {**row, "live": progress.as_json() if progress is not None else None}

    def progress(self, job_id: uuid.UUID) -> Progress | None:
        """A job's live progress on this server (for its event stream)."""
        return self.runner.progress(job_id)

    async def cancel(self, user_id: uuid.UUID, job_id: uuid.UUID) -> dict[str, Any] | None:
        """Cancel the user's job; its row, or ``None`` if not theirs."""
        return await self.runner.cancel(user_id, job_id)

    async def model_state(self, user_id: uuid.UUID) -> dict[str, Any]:
        """Which model answers the user, the previous one, and every tuned model of theirs (newest first)."""
        async with self._db.pool.connection() as conn:
            key = await self._keys.for_user(conn, user_id)
            active, previous = await store.choice(conn, user_id)
            models = await store.list_models(conn, key)
        return {
            "active": "tuned" if active is not None else "base",
            "tuned_model_id": active,
            "previous_tuned_model_id": previous,
            "base": self.settings.base_name,
            "models": models,
            "can_train": self.can_train,
        }

    async def choose(self, user_id: uuid.UUID, model_id: uuid.UUID | None) -> dict[str, Any] | None:
        """Make ``model_id`` (``None``: the base model) answer the user; ``None`` when it is not theirs."""
        async with self._db.pool.connection() as conn, conn.transaction():
            key = await self._keys.for_user(conn, user_id)
            if model_id is not None and await store.get_model(conn, key, model_id) is None:
                return None
            await store.choose(conn, user_id, model_id)
        # A model switched off stays loaded until the cache needs its room (`TunedModels` keeps at most
        # `resident`): switching back is then instant.
        return await self.model_state(user_id)

    async def rollback(self, user_id: uuid.UUID) -> dict[str, Any]:
        """Switch back to what answered before the last switch (the base model when there was none)."""
        async with self._db.pool.connection() as conn:
            _, previous = await store.choice(conn, user_id)
        state = await self.choose(user_id, previous)
        assert state is not None  # the previous model is the user's own (or None)
        return state

    async def lease_for(self, user_id: uuid.UUID) -> Lease | None:
        """The user's tuned model for a conversation (`TunedModels.lease_for`); ``None``: the base model."""
        return await self.models.lease_for(user_id)

    def cancel_user(self, user_id: uuid.UUID) -> None:
        """Stop the user's jobs (erasure: before their rows go)."""
        self.runner.cancel_user(user_id)

    async def erase_files(self, user_id: uuid.UUID) -> None:
        """Forget the user's loaded models (they close once unleased) and delete their model files (the rows
        cascade with the account)."""
        self.models.forget_user(user_id)
        await asyncio.to_thread(store.remove_model_files, self.settings.models_root, user_id)
