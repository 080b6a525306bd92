"""``/v1/voice``: the person's voice profile, their avatar's voices, its chosen voice, and the voice search.

Every route needs the ``voice`` scope and acts on the caller's own data only: another user's clip, job or voice
id answers 404, as an unknown one does. Bodies: an enrollment clip is the raw recording (``POST /v1/voice/clips
?sentence=N``, WAV from the page or any audio FFmpeg reads, at most `MAX_CLIP_BYTES`); a brought Piper voice is
``multipart/form-data`` with its ``onnx`` and ``config`` files (at most `MAX_PIPER_BYTES` in all). See
`voice_server.avatar.voice.service` for what each does.
"""

from __future__ import annotations

import json
import uuid
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request, Response
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field
from starlette.datastructures import UploadFile

from voice_server.accounts import Principal
from voice_server.api.deps import ResourcesDep, require_scope
from voice_server.avatar.importers import ImportFormatError
from voice_server.avatar.voice import enroll
from voice_server.avatar.voice.job import QueueFullError
from voice_server.avatar.voice.service import MAX_PIPER_BYTES, MAX_SAMPLE_CHARS, VoiceNotFoundError, VoiceService
from voice_server.errors import ApiError, error_response, not_found
from voice_server.resources import Resources

router = APIRouter(tags=["voice"])
VoiceUser = Annotated[Principal, Depends(require_scope("voice"))]
MAX_CLIP_BYTES = enroll.MAX_CLIP_BYTES
UPLOAD_LIMITS = {"/v1/voice/clips": MAX_CLIP_BYTES, "/v1/voice/voices/piper": MAX_PIPER_BYTES + 1024 * 1024}
"""Paths whose bodies are not JSON and have their own cap (`voice_server.http_limits.BodyLimitMiddleware`)."""


def _service(res: Resources) -> VoiceService:
    if res.voices is None:
        raise ApiError(503, "models_unavailable", "this server was started without models")
    return res.voices


def _uuid(value: str, what: str) -> uuid.UUID:
    try:
        return uuid.UUID(value)
    except ValueError:
        raise not_found(what) from None


@router.get("/v1/voice/sentences", summary="The sentences the enrollment asks the person to read")
async def sentences(user: VoiceUser) -> dict[str, Any]:
    return {"sentences": list(enroll.SENTENCES)}


@router.post("/v1/voice/clips", status_code=201, summary="Add one enrollment sentence to the voice profile")
async def add_clip(
    request: Request,
    user: VoiceUser,
    res: ResourcesDep,
    sentence: Annotated[int, Query(ge=0, lt=len(enroll.SENTENCES), description="which sentence was read")],
) -> Any:
    """The raw body is the recording. A clip too quiet, clipped, noisy or without enough speech answers 422
    ``clip_unusable`` with its ``quality`` next to the error, so the page can say what to change."""
    service = _service(res)
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > MAX_CLIP_BYTES:
            raise ApiError(413, "request_too_large", f"a clip is limited to {MAX_CLIP_BYTES // (1024 * 1024)} MB")
    if not body:
        raise ApiError(400, "invalid_audio", "the request has no recording in its body")
    try:
        clip, profile = await service.add_clip(user.user_id, bytes(body), sentence=sentence)
    except enroll.ClipUnusableError as exc:
        refused = error_response(422, "clip_unusable", f"the recording cannot be used: {exc}")
        content = json.loads(bytes(refused.body))  # the standard error envelope, plus what was measured
        content["quality"] = enroll.quality_json(exc.quality)
        return JSONResponse(content, status_code=422)
    except ImportFormatError as exc:
        raise ApiError(400, "invalid_audio", str(exc)) from None
    return {"clip": clip, "profile": profile}


@router.get("/v1/voice/profile", summary="The caller's voice profile")
async def get_profile(user: VoiceUser, res: ResourcesDep) -> dict[str, Any]:
    return {"profile": await _service(res).profile(user.user_id)}


@router.delete("/v1/voice/profile", status_code=204, summary="Delete the voice profile (every clip)")
async def delete_profile(user: VoiceUser, res: ResourcesDep) -> Response:
    await _service(res).delete_profile(user.user_id)
    return Response(status_code=204)


@router.delete("/v1/voice/clips/{clip_id}", status_code=204, summary="Delete one clip of the profile")
async def delete_clip(clip_id: str, user: VoiceUser, res: ResourcesDep) -> Response:
    if not await _service(res).delete_clip(user.user_id, _uuid(clip_id, "clip")):
        raise not_found("clip")
    return Response(status_code=204)


@router.post("/v1/voice/profile/imports", summary="Add the caller's own imported recordings to the profile")
async def add_imports(user: VoiceUser, res: ResourcesDep) -> dict[str, Any]:
    added, profile = await _service(res).add_imported(user.user_id)
    return {"added": added, "profile": profile}


@router.get("/v1/voice/voices", summary="The voices the caller's avatar can speak with, and the chosen one")
async def list_voices(user: VoiceUser, res: ResourcesDep) -> dict[str, Any]:
    return await _service(res).voices(user.user_id)


@router.get("/v1/voice/voices/{voice_id}/sample", summary="A sentence spoken with a voice (WAV)",
            response_class=Response, responses={200: {"content": {"audio/wav": {}}}})
async def sample(
    voice_id: str,
    user: VoiceUser,
    res: ResourcesDep,
    text: Annotated[str | None, Query(max_length=MAX_SAMPLE_CHARS)] = None,
) -> Response:
    try:
        wav = await _service(res).sample(user.user_id, voice_id[:80], text)
    except VoiceNotFoundError:
        raise not_found("voice") from None
    except ValueError as exc:
        raise ApiError(400, "invalid_text", str(exc), param="text") from None
    return Response(wav, media_type="audio/wav", headers={"Cache-Control": "private, no-store"})


@router.delete("/v1/voice/voices/{voice_id}", status_code=204, summary="Delete a matched or brought voice")
async def delete_voice(voice_id: str, user: VoiceUser, res: ResourcesDep) -> Response:
    if not await _service(res).delete_voice(user.user_id, voice_id[:80]):
        raise not_found("voice")
    return Response(status_code=204)


class Choice(BaseModel):
    """The voice the avatar speaks with on every channel."""

    model_config = ConfigDict(extra="forbid")
    voice_id: str = Field(min_length=1, max_length=80)


@router.put("/v1/voice/choice", summary="Choose the avatar's voice (every channel, from the next call on)")
async def choose(body: Choice, user: VoiceUser, res: ResourcesDep) -> dict[str, Any]:
    try:
        return {"chosen": await _service(res).choose(user.user_id, body.voice_id)}
    except VoiceNotFoundError:
        raise ApiError(404, "voice_not_found", "no such voice for your avatar", param="voice_id") from None


@router.post("/v1/voice/voices/piper", status_code=201, summary="Bring a Piper voice (.onnx and .onnx.json)")
async def add_piper(
    request: Request,
    user: VoiceUser,
    res: ResourcesDep,
    name: Annotated[str, Query(min_length=1, max_length=80, description="what to call the voice")],
) -> dict[str, Any]:
    service = _service(res)
    async with request.form(max_files=2, max_fields=2, max_part_size=MAX_PIPER_BYTES) as form:
        onnx, config = form.get("onnx"), form.get("config")
        if not isinstance(onnx, UploadFile) or not isinstance(config, UploadFile):
            raise ApiError(400, "missing_required_parameter", "send the voice as the files 'onnx' and 'config'")
        onnx_bytes = await onnx.read(MAX_PIPER_BYTES + 1)
        config_bytes = await config.read(1024 * 1024 + 1)
    if len(onnx_bytes) > MAX_PIPER_BYTES or len(config_bytes) > 1024 * 1024:
        raise ApiError(413, "request_too_large", "the voice or its config is too large")
    try:
        voice = await service.add_piper(user.user_id, name.strip(), onnx_bytes, config_bytes)
    except ValueError as exc:
        raise ApiError(400, "invalid_voice", str(exc)) from None
    return {"voice": voice}


@router.post("/v1/voice/match", status_code=202, summary="Search for the stock-voice mix nearest the profile")
async def start_match(user: VoiceUser, res: ResourcesDep) -> dict[str, Any]:
    """Runs in the background (minutes; calls first): poll ``GET /v1/voice/match/{id}``."""
    try:
        job = await _service(res).start_match(user.user_id)
    except VoiceNotFoundError:
        raise ApiError(503, "models_unavailable", "this server has no Kokoro voice to match with") from None
    except LookupError:
        raise ApiError(409, "profile_not_ready",
                       f"record at least {enroll.READY_SPEECH_S:.0f} s of speech first") from None
    except QueueFullError as exc:
        raise ApiError(429, "too_many_searches", str(exc)) from None
    if job is None:
        raise ApiError(409, "match_running", "a voice search is already running for you")
    return {"job": job}


@router.get("/v1/voice/match/{job_id}", summary="A voice search's progress and result")
async def get_match(job_id: str, user: VoiceUser, res: ResourcesDep) -> dict[str, Any]:
    job = await _service(res).job_json(user.user_id, _uuid(job_id, "job"))
    if job is None:
        raise not_found("job")
    return {"job": job}


@router.delete("/v1/voice/match/{job_id}", summary="Cancel a voice search")
async def cancel_match(job_id: str, user: VoiceUser, res: ResourcesDep) -> dict[str, Any]:
    job = await _service(res).cancel_match(user.user_id, _uuid(job_id, "job"))
    if job is None:
        raise not_found("job")
    return {"job": job}
