"""``/v1/sip/line``: the caller's phone line — numeric extension and caller-ID allow-list.

An INVITE to ``sip:<username>@soma`` or ``sip:<extension>@soma`` reaches the user's avatar; with a non-empty
``allowed_callers`` only those caller IDs (From, or P-Asserted-Identity from a configured trunk) get through,
everyone else is answered 403.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Response
from pydantic import BaseModel, ConfigDict, Field

from voice_server.accounts import Principal
from voice_server.api.deps import ResourcesDep, SipDep, require_scope
from voice_server.errors import ApiError, not_found
from voice_server.sip.calls import SipCallManager
from voice_server.sip.routing import LineDirectory

router = APIRouter(prefix="/v1/sip", tags=["sip"])
CallUser = Annotated[Principal, Depends(require_scope("calls"))]


class LineIn(BaseModel):
    """A user's SIP line settings."""

    model_config = ConfigDict(extra="forbid")
    extension: str | None = Field(default=None, pattern=r"^[0-9]{2,15}$", description="numeric extension")
    allowed_callers: list[Annotated[str, Field(min_length=1, max_length=64)]] = Field(default_factory=list,
                                                                                      max_length=100)


@router.get("/line", summary="The caller's SIP line: extension and caller-ID allow-list")
async def get_line(user: CallUser, res: ResourcesDep) -> dict[str, Any]:
    line = await LineDirectory(res.db, res.keys).get(user.user_id)
    return {"username": user.username, "extension": line.extension if line else None,
            "allowed_callers": list(line.allowed_callers) if line else []}


@router.put("/line", summary="Set the caller's SIP extension and caller-ID allow-list")
async def put_line(body: LineIn, user: CallUser, res: ResourcesDep) -> dict[str, Any]:
    """Raises: ApiError 409 ``extension_taken`` when another user has that extension."""
    if not await LineDirectory(res.db, res.keys).put(user.user_id, body.extension, body.allowed_callers):
        raise ApiError(409, "extension_taken", "another user already has this extension")
    return {"username": user.username, "extension": body.extension, "allowed_callers": body.allowed_callers}


outbound = APIRouter(prefix="/v1/calls/outbound", tags=["sip"])


class OutboundIn(BaseModel):
    """An outbound call request."""

    model_config = ConfigDict(extra="forbid")
    to: str = Field(min_length=5, max_length=256, description="sip: or tel: URI to call, e.g. sip:+4930123@pbx")
    trunk: str | None = Field(default=None, max_length=64, description="configured trunk to use (default: first)")
    reason: str = Field(default="", max_length=200, description="why the avatar calls (it says so when answered)")


def _running(sip: SipCallManager | None) -> SipCallManager:
    """The SIP bridge, or 503 ``sip_disabled`` when it is not running (checked in the handler: a bad request
    is still a 422 first)."""
    if sip is None:
        raise ApiError(503, "sip_disabled", "the SIP bridge is not running on this server (see sip_bind)")
    return sip


@outbound.post("", status_code=202, summary="Have the avatar phone someone through a configured SIP trunk")
async def place_outbound(body: OutboundIn, user: CallUser, sip: SipDep) -> dict[str, Any]:
    """Returns at once with ``state: calling``; poll ``GET /v1/calls/outbound/{id}`` (``ringing``, ``answered``,
    ``ended``, ``failed`` with the SIP ``status``). When answered, the avatar speaks first.

    Raises:
        ApiError: 400 bad URI, 409 no outbound trunk, 429 this user already dials 4 calls, 503 SIP off or too
            many calls being placed server-wide.
    """
    call = _running(sip).dialer.dial(user, body.to, trunk_name=body.trunk, reason=body.reason)
    return call.public()


@outbound.get("/{outbound_call_id}", summary="An outbound call's state")
async def get_outbound(outbound_call_id: str, user: CallUser, sip: SipDep) -> dict[str, Any]:
    call = _running(sip).dialer.calls.get(outbound_call_id)
    if call is None or call.user.user_id != user.user_id:
        raise not_found("call")
    return call.public()


@outbound.delete("/{outbound_call_id}", status_code=204, summary="Hang up (or stop ringing) an outbound call")
async def hang_up_outbound(outbound_call_id: str, user: CallUser, sip: SipDep) -> Response:
    manager = _running(sip)
    call = manager.dialer.calls.get(outbound_call_id)
    if call is None or call.user.user_id != user.user_id:
        raise not_found("call")
    call.hang_up.set()  # while ringing: CANCEL
    manager.hang_up(outbound_call_id)  # when answered: BYE
    return Response(status_code=204)
