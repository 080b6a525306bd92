"""The training job: the person's replies → LoRA (a child process) → evaluated → merged CTranslate2 model, sealed
→ switched on only if it beats today's avatar.

One job runs at a time on the server; others wait in a bounded queue. Stages (``training_jobs.stage``):
``preparing`` (pairs from the imported chats, `voice_server.avatar.training.pairs`), ``training``
(`models.finetune train`, paused while calls are live: `voice_server.avatar.training.child`), ``evaluating``
(perplexity of the held-out replies, base vs tuned), ``exporting`` (merge + int8 conversion, in RAM),
``sampling`` (replies of three systems to held-out contexts, `voice_server.avatar.training.compare`) and
``deciding`` (the gate). The work directory (the pairs, checkpoints, the exported weights: all derived from the
person's messages) is a private RAM-backed directory removed when the job ends; only sealed files are kept.

The gate: the tuned model is switched on only when its held-out perplexity is lower than the base model's *and*
its replies are closer in style to the person's real replies than today's avatar's (base model + persona prompt).
A model that does not pass is kept (its evaluation can be read, and the person may still choose it).

Progress lives in memory while a job runs (`progress`: polled and streamed without database writes per step);
the row gets the step and the loss curve every `PROGRESS_WRITE_S`. A server that stops mid-job marks it failed
at its next start.
"""

from __future__ import annotations

import asyncio
import json
import logging
import shutil
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from models import finetune
from voice_server.avatar.imports.store import ChatRow, stream_chat_rows
from voice_server.avatar.training import store
from voice_server.avatar.training.child import TERM_WAIT_S, ChildCancelled, ChildFailed, run_child
from voice_server.avatar.training.compare import SAMPLE_PAIRS, CompareCancelled, compare
from voice_server.avatar.training.pairs import ChatLine, PairBuilder, TooLittleDataError, TrainingData
from voice_server.background import OwnedTask
from voice_server.live_calls import LiveCalls
from voice_server.security import fields
from voice_server.security.keys import Keyring, UserKey
from voice_server.stores.postgres import Database

log = logging.getLogger(__name__)

QUEUE_MAX = 8
CLOSE_TIMEOUT_S = TERM_WAIT_S + 10.0  # shutdown waits this long for the child to checkpoint and exit
PROGRESS_WRITE_S = 5.0
FETCH = 2000
EVAL_PAIRS = 200  # held-out pairs scored for perplexity (more only costs time)


class QueueFullError(RuntimeError):
    """Too many training jobs wait already."""


@dataclass(frozen=True, slots=True)
class TrainingSettings:
    """How jobs run.

    Attributes:
        base_dir: The base model's CTranslate2 directory (with ``base-weights/``: `models.finetune.base_available`).
        base_name: Its catalog name (stored with each tuned model).
        models_root: ``<data dir>/tuned``: the sealed model files.
        threads: Torch threads of the child (2 on the 2-core target; it is paused during calls anyway).
        default_minutes, default_steps: A job's budgets when the request names none.
        compare_pairs: Held-out contexts each system answers in the comparison (`compare.compare`).
    """

    base_dir: Path
    base_name: str
    models_root: Path
    threads: int = 2
    default_minutes: float = 60.0
    default_steps: int = 250
    compare_pairs: int = SAMPLE_PAIRS


@dataclass(slots=True)
class Progress:
    """A running job's live state (what `GET /v1/training/jobs/{id}` and its SSE stream show)."""

    stage: str = "queued"
    step: int = 0
    total_steps: int = 0
    loss: float | None = None
    tokens_per_s: float | None = None
    eta_s: float | None = None
    curve: list[tuple[int, float]] = field(default_factory=list)
    changed: asyncio.Event = field(default_factory=asyncio.Event)

    def as_json(self) -> dict[str, Any]:
        """The live fields (``curve`` as ``[[step, loss], ...]``)."""
        return {"stage": self.stage, "step": self.step, "total_steps": self.total_steps, "loss": self.loss,
                "tokens_per_s": self.tokens_per_s, "eta_s": self.eta_s, "curve": [list(p) for p in self.curve]}

    def touch(self) -> None:
        """Wake whoever waits for a change (then a new event for the next one)."""
        self.changed.set()
        self.changed = asyncio.Event()


async def training_data(db: Database, key: UserKey, *, mask: bool = True) -> TrainingData:
    """The user's training pairs from their imported chats (`PairBuilder`), split by time."""
    builder = PairBuilder(mask=mask)

    def feed(rows: list[ChatRow]) -> None:
        for row in rows:
            builder.offer(ChatLine(row.conversation, row.sender, row.text, row.at, row.is_user, row.attachment))

    await stream_chat_rows(db, key, feed, fetch=FETCH)
    return await asyncio.to_thread(builder.finish)


def _thin(curve: list[tuple[int, float]]) -> None:
    if len(curve) > store.MAX_CURVE_POINTS:
        del curve[1::2]


class TrainingRunner:
    """Queues and runs training jobs (see the module doc).

    Args:
        db, keys: The stores.
        settings: Where the base model and the tuned models are, and the budgets.
        live: Live conversations (training pauses while any is).
        base_llm: Returns the loaded base model (the one calls use) for the comparison.
        load_tuned: Loads a CTranslate2 model directory (with the tokenizer files) as a `models.llm.CT2Llm`.
        persona_prompt: The persona prompt exactly as served to a user (user id, username): the training
            examples' system message, so the tuned model learns under the prompt it will answer with.
        worker: This data dir's worker id.
        on_replaced: Called with the id of the tuned model that answered before a job switched a new one on.
    """

    def __init__(
        self,
        db: Database,
        keys: Keyring,
        settings: TrainingSettings,
        live: LiveCalls,
        base_llm: Callable[[], Any],
        load_tuned: Callable[[Path], Any],
        persona_prompt: Callable[[uuid.UUID, str], Awaitable[str]],
        worker: str,
        on_replaced: Callable[[uuid.UUID], None],
    ) -> None:
        self._db = db
        self._keys = keys
        self.settings = settings
        self._live = live
        self._base_llm = base_llm
        self._load_tuned = load_tuned
        self._persona_prompt = persona_prompt
        self._worker = worker
        self._on_replaced = on_replaced
        self._queue: asyncio.Queue[tuple[uuid.UUID, uuid.UUID, str, bool]] = asyncio.Queue(QUEUE_MAX)
        self._task = OwnedTask("training")
        self._cancels: dict[uuid.UUID, asyncio.Event] = {}
        self._owners: dict[uuid.UUID, uuid.UUID] = {}
        self._progress: dict[uuid.UUID, Progress] = {}

    async def start(self) -> None:
        """Fail the jobs a stopped server left behind, then start the worker."""
        async with self._db.pool.connection() as conn:
            failed = await store.fail_interrupted(conn, self._worker)
            for user_id, job_id in failed:
                key = await self._keys.for_user(conn, user_id)
                await conn.execute(
                    "UPDATE training_jobs SET error = %s WHERE id = %s",
                    (key.seal("the server stopped during training; start it again",
                              fields.training_job("error", job_id)), job_id),
                )
        if failed:
            log.info("training: %d job(s) interrupted by the last stop were marked failed", len(failed))
        self._task.start(self._work())

    async def aclose(self) -> None:
        """Stop the job in progress (its child checkpoints and exits) and the worker."""
        for event in self._cancels.values():
            event.set()
        await self._task.close(timeout=CLOSE_TIMEOUT_S)

    def progress(self, job_id: uuid.UUID) -> Progress | None:
        """A queued or running job's live progress; ``None`` when it is not running on this server."""
        return self._progress.get(job_id)

    async def submit(self, user_id: uuid.UUID, username: str, *, minutes: float | None = None,
                     max_steps: int | None = None, mask: bool = True) -> dict[str, Any] | None:
        """Queue a job; its row, or ``None`` when the user has one queued or running. The caller checked the data
        (`training_data`, `pairs.require_enough`) first, so nothing starts without enough of it. ``mask``: mask
        e-mail, phone numbers and street addresses in the pairs (`pairs.mask_personal`).

        Raises:
            QueueFullError: `QUEUE_MAX` jobs wait already.
        """
        if self._queue.full():
            raise QueueFullError("too many training jobs are waiting; try again later")
        minutes = self.settings.default_minutes if minutes is None else minutes
        steps = self.settings.default_steps if max_steps is None else max_steps
        async with self._db.pool.connection() as conn, conn.transaction():
            job = await store.create_job(conn, user_id, minutes=minutes, max_steps=steps, worker=self._worker)
        if job is None:
            return None
        try:
            self._queue.put_nowait((user_id, job["id"], username, mask))
        except asyncio.QueueFull:
            async with self._db.pool.connection() as conn:
                key = await self._keys.for_user(conn, user_id)
                await store.set_job(conn, key, job["id"], state="failed", error="too many jobs were waiting")
            raise QueueFullError("too many training jobs are waiting; try again later") from None
        self._cancels[job["id"]] = asyncio.Event()
        self._owners[job["id"]] = user_id
        self._progress[job["id"]] = Progress()
        return job

    def cancel_user(self, user_id: uuid.UUID) -> None:
        """Stop every queued or running job of the user (erasure)."""
        for job_id, owner in list(self._owners.items()):
            if owner == user_id:
                self._cancels[job_id].set()

    async def cancel(self, user_id: uuid.UUID, job_id: uuid.UUID) -> dict[str, Any] | None:
        """Cancel the user's job (a finished one stays as it ended); its row, or ``None`` if not theirs."""
        async with self._db.pool.connection() as conn:
            key = await self._keys.for_user(conn, user_id)
            if await store.get_job(conn, key, job_id) is None:
                return None
            if (event := self._cancels.get(job_id)) is not None:
                event.set()
            await store.set_job(conn, key, job_id, state="cancelled")
            return await store.get_job(conn, key, job_id)

    async def _work(self) -> None:
        while True:
            user_id, job_id, username, mask = await self._queue.get()
            try:
                await self._run(user_id, job_id, username, mask)
            except asyncio.CancelledError:
                raise
            except (ChildCancelled, CompareCancelled):
                await self._finish(user_id, job_id, state="cancelled")
            except (ChildFailed, TooLittleDataError, ValueError) as exc:
                await self._finish(user_id, job_id, state="failed", error=str(exc))
            except Exception:
                log.exception("training failed")
                await self._finish(user_id, job_id, state="failed", error="training failed; see the server log")
            finally:
                self._cancels.pop(job_id, None)
                self._owners.pop(job_id, None)
                if (progress := self._progress.pop(job_id, None)) is not None:
                    progress.stage = "ended"
                    progress.touch()

    async def _finish(self, user_id: uuid.UUID, job_id: uuid.UUID, **changes: Any) -> None:
        async with self._db.pool.connection() as conn:
            key = await self._keys.for_user(conn, user_id)
            await store.set_job(conn, key, job_id, **changes)

    async def _stage(self, key: UserKey, job_id: uuid.UUID, stage: str, **changes: Any) -> None:
        progress = self._progress[job_id]
        progress.stage = stage
        progress.touch()
        async with self._db.pool.connection() as conn:
            await store.set_job(conn, key, job_id, stage=stage, **changes)

    async def _run(self, user_id: uuid.UUID, job_id: uuid.UUID, username: str, mask: bool) -> None:
        cancelled = self._cancels.get(job_id) or asyncio.Event()
        if cancelled.is_set():
            raise ChildCancelled("cancelled")
        async with self._db.pool.connection() as conn:
            key = await self._keys.for_user(conn, user_id)
            job = await store.get_job(conn, key, job_id)
        assert job is not None
        await self._stage(key, job_id, "preparing", state="running")
        system = await self._persona_prompt(user_id, username)
        data = await training_data(self._db, key, mask=mask)
        if data.replies < 1 or not data.heldout:
            raise TooLittleDataError(data.replies)
        work = store.ram_dir(f"soma-train-{job_id.hex[:8]}-")
        try:
            await self._train_in(work, key, job, data, system, cancelled)
        finally:
            await asyncio.to_thread(shutil.rmtree, work, True)

    async def _train_in(
        self, work: Path, key: UserKey, job: dict[str, Any], data: TrainingData, system: str,
        cancelled: asyncio.Event,
    ) -> None:
        job_id = job["id"]
        progress = self._progress[job_id]
        await asyncio.to_thread(_write_pairs, work, data, system)
        s = self.settings
        env = finetune.child_env(s.threads)
        last_write = 0.0

        def on_train(event: dict[str, Any]) -> None:
            nonlocal last_write
            if event.get("event") == "start":
                progress.total_steps = int(event.get("total_steps", 0))
            elif event.get("event") == "progress":
                progress.step = int(event["step"])
                progress.total_steps = int(event.get("total_steps", progress.total_steps))
                progress.loss = float(event["loss"])
                progress.tokens_per_s = event.get("tokens_per_s")
                progress.eta_s = event.get("eta_s")
                progress.curve.append((progress.step, round(progress.loss, 4)))
                _thin(progress.curve)
                progress.touch()
                if time.monotonic() - last_write >= PROGRESS_WRITE_S:
                    last_write = time.monotonic()
                    asyncio.get_running_loop().create_task(self._write_progress(job_id, progress))

        await self._stage(key, job_id, "training")
        trained = await run_child(
            finetune.command("train", model_dir=s.base_dir, data=work / "train.jsonl", work=work / "run",
                             minutes=job["minutes"], max_steps=job["max_steps"], threads=s.threads),
            env, live=self._live, cancelled=cancelled, on_event=on_train, final="done", restartable=True,
        )
        await self._write_progress(job_id, progress)
        await self._stage(key, job_id, "evaluating")
        evaluated = await run_child(
            finetune.command("evaluate", model_dir=s.base_dir, adapter=work / "run" / "adapter",
                             data=work / "heldout.jsonl", threads=s.threads),
            env, live=self._live, cancelled=cancelled, on_event=lambda _: None, final="evaluated",
        )
        await self._stage(key, job_id, "exporting")
        out = work / "model"
        exported = await run_child(
            finetune.command("export", model_dir=s.base_dir, adapter=work / "run" / "adapter", out=out),
            env, live=self._live, cancelled=cancelled, on_event=lambda _: None, final="exported",
        )
        store.copy_side_files(s.base_dir, out)
        await self._stage(key, job_id, "sampling")
        tuned = await asyncio.to_thread(self._load_tuned, out)
        try:
            comparison = await compare(self._base_llm(), tuned, data.heldout, system, live=self._live,
                                       cancelled=cancelled, pairs=s.compare_pairs)
        finally:
            await asyncio.to_thread(tuned.close, 10.0)
        await self._stage(key, job_id, "deciding")
        ppl_base, ppl_tuned = float(evaluated["ppl_base"]), float(evaluated["ppl_tuned"])
        distances = comparison.distances
        passed, reason = decide(ppl_base, ppl_tuned, distances)
        evaluation = {
            "perplexity": {"base": round(ppl_base, 3), "tuned": round(ppl_tuned, 3), "pairs": evaluated.get("pairs")},
            **comparison.as_json(),
            "style_distance_reduction": round(1 - distances["tuned"] / distances["prompt_only"], 4)
            if distances["prompt_only"] > 0 else None,
            "training": {k: trained.get(k) for k in ("steps", "first_loss", "last_loss", "stopped", "tokens",
                                                    "seconds", "peak_rss_mb")},
            "export": {k: exported.get(k) for k in ("seconds", "bytes", "peak_rss_mb")},
            "data": data.summary(),
            "passed": passed,
            "reason": reason,
        }
        model_id = uuid.uuid4()
        target = store.model_dir(s.models_root, key.user_id, model_id)
        size = await asyncio.to_thread(store.seal_model_files, out, target, key, model_id, store.WEIGHT_FILES)
        adapter = work / "run" / "adapter"
        await asyncio.to_thread(store.seal_model_files, adapter, target, key, model_id,
                                [n for n in store.ADAPTER_FILES if (adapter / n).is_file()])
        try:
            async with self._db.pool.connection() as conn, conn.transaction():
                await store.add_model(conn, key, model_id, job_id, s.base_name, passed,
                                      {k: v for k, v in evaluation.items() if k != "samples"}, size)
                before, _ = await store.choice(conn, key.user_id)
                if passed:
                    await store.choose(conn, key.user_id, model_id)
                await store.set_job(conn, key, job_id, state="done", stage="done", result=evaluation,
                                    model_id=model_id)
        except BaseException:
            store.remove_model_files(s.models_root, key.user_id, model_id)
            raise
        if passed and before is not None:
            self._on_replaced(before)

    async def _write_progress(self, job_id: uuid.UUID, progress: Progress) -> None:
        try:
            async with self._db.pool.connection() as conn:
                await store.set_progress(conn, job_id, progress.step, progress.total_steps, progress.curve)
        except Exception:  # progress is best effort: the job goes on
            log.exception("training: progress not recorded")


def decide(ppl_base: float, ppl_tuned: float, distances: dict[str, float]) -> tuple[bool, str]:
    """The gate: whether a tuned model is switched on, and why in words. It must predict the held-out replies
    better than the base model (lower perplexity) *and* reply closer to the person's style than today's avatar
    (lower `style_distance` than ``prompt_only``)."""
    if not ppl_tuned < ppl_base:
        return False, "it does not predict your held-out replies better than the base model"
    if not distances["tuned"] < distances["prompt_only"]:
        return False, "its replies are not closer to your style than the prompt-only avatar's"
    return True, "it predicts your held-out replies better and writes more like you than the prompt-only avatar"


def _write_pairs(work: Path, data: TrainingData, system: str) -> None:
    for name, pairs in (("train.jsonl", data.train), ("heldout.jsonl", data.heldout[:EVAL_PAIRS])):
        with (work / name).open("w", encoding="utf-8") as out:
            for pair in pairs:
                out.write(json.dumps({"messages": pair.messages(system)}, ensure_ascii=False) + "\n")

