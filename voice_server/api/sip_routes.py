"""``/v1/sip/line``: the caller's phone line — numeric extension and caller-ID allow-list.

An INVITE to ``sip:<username>@soma`` or ``sip:<extension>@soma`` reaches the user's avatar; with a non-empty
``allowed_callers`` only those caller IDs (From, or P-Asserted-Identity from a configured trunk) get through,
everyone else is answered 403.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends
from pydantic import BaseModel, ConfigDict, Field

from voice_server.accounts import Principal
from voice_server.api.deps import ResourcesDep, require_scope
from voice_server.errors import ApiError
from voice_server.sip.routing import LineDirectory

router = APIRouter(prefix="/v1/sip", tags=["sip"])
CallUser = Annotated[Principal, Depends(require_scope("calls"))]


class LineIn(BaseModel):
    """A user's SIP line settings."""

    model_config = ConfigDict(extra="forbid")
    extension: str | None = Field(default=None, pattern=r"^[0-9]{2,15}$", description="numeric extension")
    allowed_callers: list[Annotated[str, Field(min_length=1, max_length=64)]] = Field(default_factory=list,
                                                                                      max_length=100)  # fmt: skip


@router.get("/line", summary="The caller's SIP line: extension and caller-ID allow-list")
async def get_line(user: CallUser, res: ResourcesDep) -> dict[str, Any]:
    line = await LineDirectory(res.db).get(user.user_id)
    return {"username": user.username, "extension": line.extension if line else None,
            "allowed_callers": list(line.allowed_callers) if line else []}  # fmt: skip


@router.put("/line", summary="Set the caller's SIP extension and caller-ID allow-list")
async def put_line(body: LineIn, user: CallUser, res: ResourcesDep) -> dict[str, Any]:
    """Raises: ApiError 409 ``extension_taken`` when another user has that extension."""
    if not await LineDirectory(res.db).put(user.user_id, body.extension, body.allowed_callers):
        raise ApiError(409, "extension_taken", "another user already has this extension")
    return {"username": user.username, "extension": body.extension, "allowed_callers": body.allowed_callers}
