"""``/v1/training`` (train the avatar's own model on the person's replies) and ``/v1/persona/model`` (which model
answers them: the base model with the persona prompt, or a tuned one; rollback).

Training routes need the ``training`` scope, the model choice the ``persona`` scope; both act on the caller's own
data only (another user's job or model id answers 404, as an unknown one does). See
`voice_server.avatar.training` for what a job does and when a tuned model is switched on.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends
from fastapi.responses import StreamingResponse
from pydantic import BaseModel, ConfigDict, Field

from voice_server.accounts import Principal
from voice_server.api import sse
from voice_server.api.deps import ResourcesDep, require_scope
from voice_server.avatar.training.pairs import TooLittleDataError
from voice_server.avatar.training.service import QueueFullError, TrainingService, TrainingUnavailableError
from voice_server.errors import ApiError, not_found
from voice_server.resources import Resources

router = APIRouter(tags=["training"])
Trainer = Annotated[Principal, Depends(require_scope("training"))]
PersonaUser = Annotated[Principal, Depends(require_scope("persona"))]
FINAL_STATES = ("done", "failed", "cancelled")


class JobRequest(BaseModel):
    """``POST /v1/training/jobs``: the budgets (the server's defaults when absent)."""

    model_config = ConfigDict(extra="forbid")
    minutes: float | None = Field(None, gt=0, le=24 * 60, description="time budget of the training stage")
    max_steps: int | None = Field(None, ge=1, le=100_000, description="step budget (batches of 4 replies)")
    mask_personal: bool = Field(True, description="mask e-mail, phone numbers and street addresses in what it "
                                "learns from (a model must not learn to recite them)")


class ModelChoice(BaseModel):
    """``PUT /v1/persona/model``: ``base`` (the persona prompt on the base model), ``tuned`` (a model of theirs:
    ``tuned_model_id``, or the newest one), or ``previous`` (rollback to what answered before the last switch)."""

    model_config = ConfigDict(extra="forbid")
    use: Literal["base", "tuned", "previous"]
    tuned_model_id: uuid.UUID | None = None


def _service(res: Resources) -> TrainingService:
    if res.training is None:
        raise ApiError(503, "models_unavailable", "this server was started without models")
    return res.training


def job_out(row: dict[str, Any]) -> dict[str, Any]:
    """The public form of a job (`TrainingService.job`)."""
    return {
        "id": str(row["id"]), "state": row["state"], "stage": row["stage"], "minutes": row["minutes"],
        "max_steps": row["max_steps"], "step": row["step"], "total_steps": row["total_steps"],
        "losses": row["losses"], "result": row["result"], "error": row["error"],
        "tuned_model_id": str(row["model_id"]) if row["model_id"] else None,
        "created_at": row["created_at"].isoformat(),
        "finished_at": row["finished_at"].isoformat() if row["finished_at"] else None,
        "live": row.get("live"),
    }


def _model_out(state: dict[str, Any]) -> dict[str, Any]:
    def one(model: dict[str, Any]) -> dict[str, Any]:
        return {"id": str(model["id"]), "job_id": str(model["job_id"]) if model["job_id"] else None,
                "base": model["base"], "passed": model["passed"], "evaluation": model["evaluation"],
                "bytes": model["bytes"], "created_at": model["created_at"].isoformat()}

    return {**state, "tuned_model_id": str(state["tuned_model_id"]) if state["tuned_model_id"] else None,
            "previous_tuned_model_id": str(state["previous_tuned_model_id"]) if state["previous_tuned_model_id"]
            else None,
            "models": [one(m) for m in state["models"]]}


@router.get("/v1/training/data", summary="What the imported chats give to train on")
async def training_data(user: Trainer, res: ResourcesDep) -> dict[str, Any]:
    """Replies usable as training targets (train / held-out split by time), their span, and what was dropped."""
    return await _service(res).data(user.user_id)


@router.post("/v1/training/jobs", status_code=202, summary="Start training the avatar's own model")
async def start_job(body: JobRequest, user: Trainer, res: ResourcesDep) -> dict[str, Any]:
    """422 ``too_little_data`` (with ``replies`` and ``needed``) when there are too few replies, 409 when a job of
    theirs is queued or running, 503 when this server cannot train; nothing is started in any of these cases."""
    service = _service(res)
    try:
        row = await service.submit(user.user_id, user.username, minutes=body.minutes, max_steps=body.max_steps,
                                   mask=body.mask_personal)
    except TooLittleDataError as exc:
        raise ApiError(422, "too_little_data", str(exc), param="replies") from None
    except TrainingUnavailableError as exc:
        raise ApiError(503, "training_unavailable", str(exc)) from None
    except QueueFullError as exc:
        raise ApiError(503, "queue_full", str(exc)) from None
    if row is None:
        raise ApiError(409, "job_running", "a training job of yours is already queued or running")
    job = await service.job(user.user_id, row["id"])
    assert job is not None
    return job_out(job)


@router.get("/v1/training/jobs", summary="The person's training jobs, newest first")
async def list_jobs(user: Trainer, res: ResourcesDep) -> dict[str, Any]:
    return {"jobs": [job_out(j) for j in await _service(res).jobs(user.user_id)]}


@router.get("/v1/training/jobs/{training_job_id}", summary="One training job: live progress, evaluation")
async def get_job(training_job_id: uuid.UUID, user: Trainer, res: ResourcesDep) -> dict[str, Any]:
    job = await _service(res).job(user.user_id, training_job_id)
    if job is None:
        raise not_found("training job")
    return job_out(job)


@router.post("/v1/training/jobs/{training_job_id}/cancel", summary="Stop a training job")
async def cancel_job(training_job_id: uuid.UUID, user: Trainer, res: ResourcesDep) -> dict[str, Any]:
    """The trainer checkpoints and stops; a finished job stays as it ended."""
    service = _service(res)
    if await service.cancel(user.user_id, training_job_id) is None:
        raise not_found("training job")
    job = await service.job(user.user_id, training_job_id)
    assert job is not None
    return job_out(job)


@router.get("/v1/training/jobs/{training_job_id}/events", summary="Progress of a training job (SSE)")
async def job_events(training_job_id: uuid.UUID, user: Trainer, res: ResourcesDep) -> StreamingResponse:
    """``progress`` events (stage, step, loss, tokens/s, ETA, the loss curve) while it runs, then one ``done``,
    ``failed`` or ``cancelled`` event with the job (its evaluation in ``result``)."""
    service = _service(res)
    if await service.job(user.user_id, training_job_id) is None:
        raise not_found("training job")

    async def stream() -> AsyncIterator[bytes]:
        yield sse.retry(3000)
        while True:
            progress = service.progress(training_job_id)
            if progress is None:
                job = await service.job(user.user_id, training_job_id)
                if job is None:
                    yield sse.event("failed", {"error": "erased"})
                    return
                if job["state"] in FINAL_STATES:
                    yield sse.event(job["state"], job_out(job))
                    return
                await asyncio.sleep(1.0)  # between the row's final write and the runner forgetting it
                continue
            changed = progress.changed
            yield sse.event("progress", {"id": str(training_job_id), **progress.as_json()})
            try:
                async with asyncio.timeout(sse.HEARTBEAT_S):
                    await changed.wait()
            except TimeoutError:
                yield sse.KEEP_ALIVE

    return StreamingResponse(stream(), media_type="text/event-stream", headers=sse.HEADERS)


@router.get("/v1/persona/model", summary="Which model answers: the base model or the person's tuned model")
async def get_model(user: PersonaUser, res: ResourcesDep) -> dict[str, Any]:
    return _model_out(await _service(res).model_state(user.user_id))


@router.put("/v1/persona/model", summary="Switch the tuned model on or off, or roll back")
async def put_model(body: ModelChoice, user: PersonaUser, res: ResourcesDep) -> dict[str, Any]:
    """404 for a ``tuned_model_id`` that is not theirs; 409 ``no_tuned_model`` for ``tuned`` without any model."""
    service = _service(res)
    if body.use == "previous":
        return _model_out(await service.rollback(user.user_id))
    if body.use == "base":
        state = await service.choose(user.user_id, None)
    else:
        model_id = body.tuned_model_id
        if model_id is None:
            models = (await service.model_state(user.user_id))["models"]
            if not models:
                raise ApiError(409, "no_tuned_model", "there is no tuned model yet: train one first")
            model_id = models[0]["id"]
        state = await service.choose(user.user_id, model_id)
    if state is None:
        raise not_found("model")
    return _model_out(state)
