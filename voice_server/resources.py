"""Everything the server holds for its lifetime: database, session store, models, metrics.

Opened once (by the app's lifespan, or by ``soma serve`` before it starts listening so that start-up errors
are reported as one line) and passed down explicitly (a serving app holds them in its
`voice_server.app_state.AppState`); nothing here is a global.
"""

from __future__ import annotations

import asyncio
import fcntl
import logging
import os
import time
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, TYPE_CHECKING

from voice_server.avatar.bond.service import BondService
from voice_server.avatar.imports.job import worker_id
from voice_server.avatar.memory.policy import RecallWeights
from voice_server.avatar.memory.service import MemoryService
from voice_server.avatar.persona.service import PersonaService
from voice_server.avatar.training.job import TrainingSettings
from voice_server.avatar.training.service import TrainingService
from voice_server.avatar.voice.job import MatchSettings
from voice_server.avatar.voice.match import CI_PLAN, DEFAULT_PLAN
from voice_server.avatar.voice.service import VoiceService
from voice_server.config import Settings
from voice_server.conversations import ConversationStore
from voice_server.live_calls import LiveCalls
from voice_server.metrics import Metrics
from voice_server.security.audit import AuditLog
from voice_server.security.backfill import reseal_legacy
from voice_server.security.keys import KeyFileError, Keyring, load_master_keys
from voice_server.stores.postgres import Database
from voice_server.stores.redis_store import SessionStore
from voice_server.user_files import MediaStore

if TYPE_CHECKING:  # types only: importing the model runtimes (ctranslate2, onnxruntime) is paid when loading
    from models.registry import ModelSet

log = logging.getLogger(__name__)


class DataDirBusyError(RuntimeError):
    """Another Soma server is already using this data directory."""


@dataclass(slots=True)
class Resources:
    """Long-lived handles shared by all requests and calls.

    Attributes:
        settings: The frozen settings the server started with.
        db: Postgres pool.
        sessions: Redis-backed session store.
        models: The loaded model set, or ``None`` when started with ``load_models=False``.
        memory: Long-term memory (recall and background learning), or ``None`` without an embedding model.
        metrics: Prometheus collectors.
        started_at: ``time.monotonic()`` when the resources became ready.
        keys: Users' data keys (encryption at rest).
        audit: The hash-chained audit log.
        persona: Users' personas (rebuilds, cached system prompts, per-turn examples).
        bond: The users' emotional bonds (observed after each turn, a tone line before each answer).
        live_calls: The conversations live now (background model work waits for none to be).
        voices: The person's voice: profile, voices, the chosen one, the search; ``None`` without models.
        training: The avatar's own model: training jobs, the model choice, tuned-model serving; ``None``
            without models.
    """

    settings: Settings
    db: Database
    sessions: SessionStore
    models: ModelSet | None
    memory: MemoryService | None
    metrics: Metrics
    started_at: float
    keys: Keyring
    audit: AuditLog
    persona: PersonaService
    bond: BondService | None = None
    live_calls: LiveCalls = field(default_factory=LiveCalls)
    voices: VoiceService | None = None
    training: TrainingService | None = None

    @classmethod
    @asynccontextmanager
    async def open(cls, settings: Settings, metrics: Metrics | None = None) -> AsyncIterator[Resources]:
        """Start everything in dependency order; stop it in reverse on exit, even after a failure.

        Args:
            settings: Validated settings.
            metrics: Collectors to register into (the app's, when it already has them).

        Raises:
            DataDirBusyError: Another server holds the data dir.
            voice_server.stores.postgres.DatabaseError: Postgres failed.
            voice_server.stores.redis_store.SessionStoreError: Redis failed.
            models.ModelMissingError: A model of the configured profile is not provisioned.
        """
        async with AsyncExitStack() as stack:
            settings.data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
            stack.enter_context(data_dir_lock(settings.data_dir))
            metrics = metrics or Metrics()
            # Models load in a thread while the stores start: together they are the cold-start time.
            models_task = asyncio.create_task(_load_models(settings, metrics), name="load-models")
            try:
                db = await stack.enter_async_context(
                    Database.open(settings.database_url, settings.data_dir, pool_max=settings.db_pool_max)
                )
                keys = await _keyring(settings, db)
                sessions = await stack.enter_async_context(SessionStore.open(settings.redis_url, settings.data_dir))
                models = await models_task
            except BaseException:
                if not models_task.done():
                    models_task.cancel()
                # The loading thread cannot be interrupted; wait for it so its models are closed, not leaked.
                loaded = (await asyncio.gather(models_task, return_exceptions=True))[0]
                if loaded is not None and not isinstance(loaded, BaseException):
                    loaded.close()
                raise
            if models is not None:
                stack.callback(models.close)
            live_calls = LiveCalls()
            memory = await stack.enter_async_context(_memory_service(settings, db, keys, models, live_calls))
            persona = await stack.enter_async_context(_persona_service(db, keys, models))
            bond = await stack.enter_async_context(_bond_service(db, keys))
            voices = await stack.enter_async_context(_voice_service(settings, db, keys, models, live_calls))
            training = await stack.enter_async_context(
                _training_service(settings, db, keys, models, live_calls, persona)
            )
            metrics.up.set(1)
            audit = AuditLog(db, keys)
            yield cls(settings, db, sessions, models, memory, metrics, time.monotonic(), keys, audit, persona, bond,
                      live_calls, voices, training)
            metrics.up.set(0)


async def _keyring(settings: Settings, db: Database) -> Keyring:
    """The master key (generated into the data dir on first start) and the keyring over it; legacy plaintext
    rows are sealed before anything is served.

    Raises:
        KeyFileError: The key file is missing (when supplied), malformed or too permissive, or it is not the
            key this database's data keys are wrapped with.
    """
    async with db.pool.connection() as conn:
        cur = await conn.execute("SELECT master_key_id FROM user_keys UNION SELECT master_key_id FROM server_keys")
        wrapped_by = {row["master_key_id"] for row in await cur.fetchall()}
        if wrapped_by and not settings.key_file.exists():
            # Never generate a fresh key over encrypted data: it could not read anything, and would hide the loss.
            raise KeyFileError(
                f"the master key file {settings.key_file} is missing but this database holds encrypted data:"
                " restore it (or set SOMA_MASTER_KEY_FILE)"
            )
        masters = load_master_keys(settings.key_file, create=settings.master_key_file is None)
        if wrapped_by - {m.id for m in masters}:
            raise KeyFileError(
                f"the master key in {settings.key_file} is not the one this database's data keys are wrapped"
                " with: restore the right key file (or set SOMA_MASTER_KEY_FILE)"
            )
        keys = Keyring(masters)
        await keys.open_server_keys(conn)
    sealed = await reseal_legacy(db.url, keys)
    if sealed:
        log.info("sealed %d legacy plaintext rows", sealed)
    return keys


@asynccontextmanager
async def _memory_service(
    settings: Settings, db: Database, keys: Keyring, models: ModelSet | None, live_calls: LiveCalls
) -> AsyncIterator[MemoryService | None]:
    """The memory service when the embedder is loaded; its worker is drained and stopped on exit."""
    if models is None or models.embed is None:
        yield None
        return
    llm = models.llm if settings.memory_llm_extraction else None
    memory = MemoryService(
        db, keys, models.embed, turns=ConversationStore(db, keys),
        weights=RecallWeights(budget_tokens=settings.memory_budget_tokens), llm=llm, live=live_calls,
        reflect_llm=models.llm if settings.memory_reflection else None,
    )
    await memory.start()
    try:
        yield memory
    finally:
        await memory.aclose()


@asynccontextmanager
async def _persona_service(db: Database, keys: Keyring, models: ModelSet | None) -> AsyncIterator[PersonaService]:
    """The persona service (examples only with the embedder); its worker is stopped on exit."""
    embedder = models.embed if models is not None else None
    persona = PersonaService(db, keys, embedder, turns=ConversationStore(db, keys))
    await persona.start()
    try:
        yield persona
    finally:
        await persona.aclose()


@asynccontextmanager
async def _bond_service(db: Database, keys: Keyring) -> AsyncIterator[BondService]:
    """The bond service; its worker applies what is queued and stops on exit."""
    bond = BondService(db, keys)
    await bond.start()
    try:
        yield bond
    finally:
        await bond.aclose()


@asynccontextmanager
async def _voice_service(
    settings: Settings, db: Database, keys: Keyring, models: ModelSet | None, live_calls: LiveCalls
) -> AsyncIterator[VoiceService | None]:
    """The voice service when models are loaded; its search is stopped on exit."""
    if models is None:
        yield None
        return
    plan = DEFAULT_PLAN if settings.voice_match_plan == "full" else CI_PLAN
    voices = VoiceService(db, keys, MediaStore(db, keys, settings.media_dir), models, live_calls,
                          models_dir=settings.models_dir, profile=settings.model_profile, match=MatchSettings(plan))
    await voices.start()
    try:
        yield voices
    finally:
        await voices.aclose()


@asynccontextmanager
async def _training_service(
    settings: Settings, db: Database, keys: Keyring, models: ModelSet | None, live_calls: LiveCalls,
    persona: PersonaService,
) -> AsyncIterator[TrainingService | None]:
    """The training service when an LLM is loaded; its job is stopped and tuned models closed on exit."""
    if models is None or models.llm is None:
        yield None
        return
    from models.catalog import Role
    from models.llm import CT2Llm  # the runtime is loaded already; imported here like the other model code

    def load(model_dir: Path) -> CT2Llm:
        llm = CT2Llm(model_dir, workers=settings.llm_workers, max_batch=settings.llm_max_batch)
        llm.limits = models.llm.limits if models.llm is not None else llm.limits
        return llm

    training = TrainingService(
        db, keys,
        TrainingSettings(models.llm.model_dir, models.names.get(Role.LLM, "llm"), settings.data_dir / "tuned",
                         threads=settings.training_threads, compare_pairs=settings.training_compare_pairs),
        live_calls, models.llm, load, persona.prompt_for, worker_id(settings.data_dir),
        settings.tuned_models_resident,
    )
    await training.start()
    try:
        yield training
    finally:
        await training.aclose()


def check_models(settings: Settings) -> None:
    """Fail fast (before any store starts) if a model of the configured profile is not provisioned.

    Raises:
        models.paths.ModelMissingError: Names every missing model and the command that provisions them.
    """
    if not settings.load_models:
        return
    from models.catalog import profile_model
    from models.locate import require_models
    from models.registry import LOADABLE_ROLES

    names = [profile_model(settings.model_profile, role) for role in LOADABLE_ROLES]
    require_models(settings.models_dir, names, settings.model_profile)


def model_names(model_set: ModelSet | None) -> list[str]:
    """``role:model`` for each loaded model (for /healthz)."""
    if model_set is None:
        return []
    return [f"{role}:{name}" for role, name in model_set.names.items()]


async def _load_models(settings: Settings, metrics: Metrics) -> ModelSet | None:
    if not settings.load_models:
        return None
    from models.registry import ThreadConfig, load_models

    threads = ThreadConfig(llm_workers=settings.llm_workers, llm_max_batch=settings.llm_max_batch)
    start = time.perf_counter()
    model_set = await asyncio.to_thread(load_models, settings.models_dir, settings.model_profile, threads=threads)
    for name, ms in model_set.load_ms.items():
        metrics.model_load_seconds.labels(name).set(ms / 1000.0)
    seconds = round(time.perf_counter() - start, 2)
    log.info("models loaded", extra={"profile": settings.model_profile, "seconds": seconds})
    return model_set


class _DirLock:
    def __init__(self, fh: IO[str]) -> None:
        self.fh = fh

    def __enter__(self) -> _DirLock:
        return self

    def __exit__(self, *exc: object) -> None:
        fcntl.flock(self.fh, fcntl.LOCK_UN)
        self.fh.close()


def data_dir_lock(data_dir: Path) -> _DirLock:
    """Hold an exclusive lock on ``data_dir/.lock`` so two servers never share one embedded database."""
    fh = open(data_dir / ".lock", "a+", encoding="utf-8")  # noqa: SIM115 - closed by _DirLock
    try:
        fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        fh.close()
        raise DataDirBusyError(f"another Soma server is already using the data dir {data_dir}") from None
    fh.seek(0)
    fh.truncate()
    fh.write(str(os.getpid()))
    fh.flush()
    return _DirLock(fh)
