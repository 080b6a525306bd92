"""``/v1/realtime/calls``: WebRTC calls in the OpenAI Realtime WebRTC shape.

``POST /v1/realtime/calls?model=soma`` with the browser's SDP offer (``Content-Type: application/sdp``) answers
``201`` with the SDP answer and ``Location: /v1/realtime/calls/{call_id}``; ``DELETE`` on that location hangs
up. Events travel on the ``oai-events`` data channel the browser opens (`voice_server.webrtc.calls`).
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Request, Response

from voice_server.accounts import Principal
from voice_server.api.deps import ResourcesDep, require_scope
from voice_server.avatars import resolve_avatar
from voice_server.errors import ApiError, not_found
from voice_server.session_factory import find_session
from voice_server.webrtc.calls import CallManager
from voice_server.webrtc.offer import MAX_OFFER_BYTES

router = APIRouter(prefix="/v1/realtime/calls", tags=["calls"])
CallUser = Annotated[Principal, Depends(require_scope("calls"))]
OFFERS_PER_S = 5  # per user: a page places one call; a loop of offers is a bug or an attack


def _calls(request: Request) -> CallManager:
    manager: CallManager = request.app.state.calls
    return manager


@router.post("", status_code=201, summary="Place a WebRTC call: SDP offer in, SDP answer out")
async def place_call(
    request: Request, user: CallUser, res: ResourcesDep, model: str | None = None, session_id: str | None = None
) -> Response:
    """``session_id`` (from an earlier call's ``session.created``) continues that call's conversation with its
    heard history, as after a dropped connection.

    Raises:
        ApiError: 415 not ``application/sdp``; 400 unusable offer; 404 unknown model or session; 429 too many
            offers or calls; 503 no models or no room.
    """
    if request.headers.get("content-type", "").split(";")[0].strip().lower() != "application/sdp":
        raise ApiError(415, "unsupported_media_type", "send the SDP offer as the body, Content-Type: application/sdp")
    body = await request.body()
    if len(body) > MAX_OFFER_BYTES:
        raise ApiError(413, "request_too_large", f"an SDP offer may be at most {MAX_OFFER_BYTES} bytes")
    try:
        offer = body.decode("utf-8")
    except UnicodeDecodeError:
        raise ApiError(400, "invalid_sdp", "the SDP offer is not UTF-8 text") from None
    avatar = await resolve_avatar(user, model, res.persona)
    if not await res.sessions.hit(f"offers:{user.user_id}", OFFERS_PER_S, 1):
        raise ApiError(429, "rate_limited", f"at most {OFFERS_PER_S} call offers per second")
    resume = await find_session(res, user, session_id, "webrtc", avatar)
    call_id, answer = await _calls(request).start(user, avatar, offer, resume=resume)
    return Response(answer, status_code=201, media_type="application/sdp",
                    headers={"Location": f"/v1/realtime/calls/{call_id}"})  # fmt: skip


@router.post("/{call_id}", summary="Renegotiation (not supported)")
async def renegotiate(call_id: str, request: Request, user: CallUser) -> Response:
    """A second offer on a live call: 409 (calls are negotiated once; hang up and call again)."""
    call = _calls(request).calls.get(call_id)
    if call is None or call.user_id != user.user_id:
        raise not_found("call")
    raise ApiError(409, "renegotiation_unsupported", "this call is already negotiated; hang up and place a new one")


@router.delete("/{call_id}", status_code=204, summary="Hang up")
async def hang_up(call_id: str, request: Request, user: CallUser) -> Response:
    if not await _calls(request).hang_up(call_id, user):
        raise not_found("call")
    return Response(status_code=204)
