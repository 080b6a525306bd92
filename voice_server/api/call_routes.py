"""``/v1/realtime/calls``: WebRTC calls in the OpenAI Realtime WebRTC shape.

``POST /v1/realtime/calls?model=soma`` with the browser's SDP offer answers ``201`` with the SDP answer and
``Location: /v1/realtime/calls/{call_id}``; ``DELETE`` on that location hangs up. Events travel on the
``oai-events`` data channel the browser opens (`voice_server.webrtc.calls`).

The offer comes in either of OpenAI's two forms: the SDP as the body (``Content-Type: application/sdp``), or
a ``multipart/form-data`` form with the SDP in field ``sdp`` and a Realtime session config (JSON) in field
``session``, which is what the ``openai`` SDK's ``realtime.calls.create(sdp=…, session=…)`` sends. The form
is bounded (`MAX_FORM_BYTES`, each field to its own bound), holds text fields only, and its session config is
validated like a ``session.update`` before anything else happens (`voice_server.webrtc.session_config`).
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Request, Response
from starlette.exceptions import HTTPException

from voice_server.accounts import Principal
from voice_server.api.deps import CallsDep, ResourcesDep, require_scope
from voice_server.avatar.directory import resolve_avatar
from voice_server.errors import ApiError, not_found
from voice_server.session_factory import find_session
from voice_server.webrtc.offer import MAX_OFFER_BYTES
from voice_server.webrtc.session_config import MAX_SESSION_BYTES, CallSessionConfig

router = APIRouter(prefix="/v1/realtime/calls", tags=["calls"])
CallUser = Annotated[Principal, Depends(require_scope("calls"))]
OFFERS_PER_S = 5  # per user: a page places one call; a loop of offers is a bug or an attack
SDP_TYPE = "application/sdp"
FORM_TYPE = "multipart/form-data"
FORM_FIELDS = ("sdp", "session")
# Both fields at their bounds, plus boundaries and part headers (a few hundred bytes in practice).
MAX_FORM_BYTES = MAX_OFFER_BYTES + MAX_SESSION_BYTES + 4096


@router.post("", status_code=201, summary="Place a WebRTC call: SDP offer in, SDP answer out")
async def place_call(
    request: Request,
    user: CallUser,
    res: ResourcesDep,
    calls: CallsDep,
    model: str | None = None,
    session_id: str | None = None,
) -> Response:
    """``session_id`` (from an earlier call's ``session.created``) continues that call's conversation with its
    heard history, as after a dropped connection.

    Raises:
        ApiError: 415 neither ``application/sdp`` nor ``multipart/form-data``; 413 an offer, session config or
            form over its bound; 400 unusable offer, malformed form, invalid session config; 404 unknown model
            or session; 429 too many offers or calls; 503 no models or no room.
    """
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if content_type == SDP_TYPE:
        offer, session = await _read_sdp(request), None
    elif content_type == FORM_TYPE:
        offer, session = await _read_form(request)
    else:
        raise ApiError(415, "unsupported_media_type", f"send the SDP offer as the body ({SDP_TYPE}), or as field "
                       f"'sdp' of a {FORM_TYPE} form with the session config (JSON) in field 'session'")
    avatar = await resolve_avatar(user, model, res.persona)
    if not await res.sessions.hit(f"offers:{user.user_id}", OFFERS_PER_S, 1):
        raise ApiError(429, "rate_limited", f"at most {OFFERS_PER_S} call offers per second")
    resume = await find_session(res, user, session_id, "webrtc", avatar)
    call_id, answer = await calls.start(user, avatar, offer, resume=resume, session=session)
    return Response(answer, status_code=201, media_type="application/sdp",
                    headers={"Location": f"/v1/realtime/calls/{call_id}"})


async def _read_sdp(request: Request) -> str:
    """The offer sent as the whole body.

    Raises:
        ApiError: 413 over `MAX_OFFER_BYTES`; 400 ``invalid_sdp`` not UTF-8.
    """
    body = await request.body()
    if len(body) > MAX_OFFER_BYTES:
        raise ApiError(413, "request_too_large", f"an SDP offer may be at most {MAX_OFFER_BYTES} bytes")
    try:
        return body.decode("utf-8")
    except UnicodeDecodeError:
        raise ApiError(400, "invalid_sdp", "the SDP offer is not UTF-8 text") from None


async def _read_form(request: Request) -> tuple[str, CallSessionConfig | None]:
    """The offer and session config sent as a form (fields ``sdp``, required, and ``session``, optional).

    Raises:
        ApiError: 413 the form, the offer or the session config over its bound; 400 ``invalid_multipart`` for a
            form that does not parse, holds a file part, an unknown or repeated field, or is not UTF-8;
            400 ``missing_sdp``; 400 from `CallSessionConfig.parse`.
    """
    # Read whole first (the server-wide body cap already bounds it): the form's bound is then checked before
    # any parsing, and Starlette parses the form from this copy.
    body = await request.body()
    if len(body) > MAX_FORM_BYTES:
        raise ApiError(413, "request_too_large", f"a call form may be at most {MAX_FORM_BYTES} bytes")
    try:
        # Text fields only, so the whole body is text. Checked here because Starlette decodes a field that is
        # not UTF-8 as Latin-1 instead of failing.
        body.decode("utf-8")
    except UnicodeDecodeError:
        raise ApiError(400, "invalid_multipart", "the form is not UTF-8 text") from None
    try:
        # No file parts; one more field than the form has, so that an unknown one is named below rather than
        # refused as "too many". No part can exceed the whole body, so Starlette's own part limit never fires
        # and each field gets its own bound (and its own 413) below.
        form = await request.form(max_files=0, max_fields=len(FORM_FIELDS) + 1, max_part_size=MAX_FORM_BYTES)
    except HTTPException as exc:  # Starlette's answer to a form it cannot parse
        raise ApiError(400, "invalid_multipart", f"the multipart form could not be parsed: {exc.detail}") from None
    for name in form:
        if name not in FORM_FIELDS:
            raise ApiError(400, "invalid_multipart", f"unknown form field {name[:64]!r}; the fields are 'sdp' and "
                           "'session'")
        if len(form.getlist(name)) > 1:
            raise ApiError(400, "invalid_multipart", f"form field {name!r} appears more than once")
    sdp, session = form.get("sdp"), form.get("session")
    if sdp is None:
        raise ApiError(400, "missing_sdp", "the form has no 'sdp' field with the SDP offer", param="sdp")
    # max_files=0 leaves only text fields; the asserts tell the type checker so.
    assert isinstance(sdp, str) and (session is None or isinstance(session, str))
    if len(sdp.encode("utf-8")) > MAX_OFFER_BYTES:
        raise ApiError(413, "request_too_large", f"an SDP offer may be at most {MAX_OFFER_BYTES} bytes")
    if session is None:
        return sdp, None
    if len(session.encode("utf-8")) > MAX_SESSION_BYTES:
        raise ApiError(413, "request_too_large", f"a session config may be at most {MAX_SESSION_BYTES} bytes",
                       param="session")
    return sdp, CallSessionConfig.parse(session)


@router.post("/{call_id}", summary="Renegotiation (not supported)")
async def renegotiate(call_id: str, user: CallUser, calls: CallsDep) -> Response:
    """A second offer on a live call: 409 (calls are negotiated once; hang up and call again)."""
    call = calls.calls.get(call_id)
    if call is None or call.user_id != user.user_id:
        raise not_found("call")
    raise ApiError(409, "renegotiation_unsupported", "this call is already negotiated; hang up and place a new one")


@router.delete("/{call_id}", status_code=204, summary="Hang up")
async def hang_up(call_id: str, user: CallUser, calls: CallsDep) -> Response:
    if not await calls.hang_up(call_id, user):
        raise not_found("call")
    return Response(status_code=204)
