"""Privacy rights and the audit trail: ``GET /v1/me/export``, ``DELETE /v1/me``, ``GET /v1/me/audit`` and
``GET /v1/admin/audit``.

Erasure removes the account's rows (every user table cascades from ``users``), its encrypted files, its Redis
session state and its data key — so anything sealed with that key, wherever a copy survives, is unreadable.
The audit log keeps one pseudonymous ``account.erase`` row (the bare user id, no address).
"""

from __future__ import annotations

import asyncio
import logging
from datetime import UTC, datetime
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request, Response
from fastapi.responses import StreamingResponse

from voice_server import accounts, conversations
from voice_server.accounts import Principal
from voice_server.api.deps import AppStateDep, ResourcesDep, UserDep, require_scope
from voice_server.api.media_routes import media_store
from voice_server.errors import ApiError
from voice_server.live_sessions import session_id_for
from voice_server.privacy.export import export_archive
from voice_server.security.audit import AuditEvent

log = logging.getLogger(__name__)
router = APIRouter(prefix="/v1", tags=["privacy"])
AdminUser = Annotated[Principal, Depends(require_scope("admin"))]
MAX_SEQ = 2**63 - 1  # audit_log.seq is a bigint: a larger cursor is a 400, not a database error


@router.get("/me/export", summary="Download everything stored about the caller (ZIP)", response_class=Response)
async def export_me(user: UserDep, res: ResourcesDep) -> StreamingResponse:
    """A ZIP of the caller's account, conversations, memories, files, share links and audit trail, decrypted.
    Needs a full-access token (``*``): the archive holds everything every other scope guards."""
    if "*" not in user.scopes:
        raise ApiError(403, "insufficient_scope", "exporting everything needs a full-access token")
    stamp = datetime.now(UTC).strftime("%Y%m%d-%H%M%S")
    return StreamingResponse(
        export_archive(res.db, res.keys, media_store(res), res.audit, user.user_id,
                       res.training.settings.models_root if res.training is not None else None),
        media_type="application/zip",
        headers={"Content-Disposition": f'attachment; filename="soma-export-{user.username}-{stamp}.zip"'},
    )


@router.delete("/me", status_code=204, summary="Erase the caller's account and all their data, for good")
async def erase_me(
    request: Request,
    user: UserDep,
    res: ResourcesDep,
    state: AppStateDep,
    confirm: Annotated[str, Query(description="the account's username, to confirm")],
) -> Response:
    """Irreversible. Needs a full-access token and ``?confirm=<username>``.

    Raises:
        ApiError: 400 ``confirmation_required`` when ``confirm`` is not the username; 403 without ``*``.
    """
    if "*" not in user.scopes:
        raise ApiError(403, "insufficient_scope", "erasing the account needs a full-access token")
    if confirm != user.username:
        raise ApiError(400, "confirmation_required", "pass ?confirm=<your username> to erase the account")
    await state.calls.hang_up_user(user.user_id)
    await state.imports.cancel_user(user.user_id)
    await res.persona.cancel_user(user.user_id)
    if res.voices is not None:
        res.voices.cancel_user(user.user_id)  # a search must not write a voice for an erased account
    if res.training is not None:
        res.training.cancel_user(user.user_id)  # nor a training job a model
    state.proactive.hub.drop_user(user.user_id)  # open event streams end with the account
    if state.sip is not None:
        state.sip.hang_up_user(user.user_id)
    async with res.db.pool.connection() as conn, conn.transaction():
        sessions = [session_id_for(c) for c in await conversations.conversation_ids(conn, user.user_id)]
        await accounts.delete_user(conn, user.user_id)
        # In the same transaction: the erasure and its record commit together. No source address: the row
        # must not identify the person it is about.
        await res.audit.append(conn, AuditEvent("account.erase", "ok", user_id=user.user_id, status=204))
    res.keys.forget(user.user_id)
    if res.voices is not None:
        res.voices.forget(user.user_id)
    if res.training is not None:
        await res.training.erase_files(user.user_id)
    await asyncio.to_thread(media_store(res).erase_files, user.user_id)
    await asyncio.to_thread(state.imports.erase_files, user.user_id)
    # The login counters are keyed by username (`auth_routes.login`): rate window, failure count, lockout.
    login = f"login:{user.username}"
    await res.sessions.delete_keys([f"session:{s}" for s in sessions] + [f"rl:{login}", f"fails:{login}",
                                                                         f"lockout:{login}"])
    request.state.principal = None  # the request's own audit row must not re-identify the erased account
    request.state.audit_user = None
    request.state.audit_subject = None
    log.info("an account was erased")
    return Response(status_code=204)


def _trail_out(rows: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "object": "list",
        "data": [{"object": "audit_event", **r} for r in rows],
        "next_before": rows[-1]["seq"] if rows else None,
    }


@router.get("/me/audit", summary="The caller's audit trail: every access to their data, newest first")
async def my_audit(
    user: UserDep,
    res: ResourcesDep,
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
    before: Annotated[int | None, Query(ge=1, le=MAX_SEQ, description="next_before of the previous page")] = None,
) -> dict[str, Any]:
    return _trail_out(await res.audit.trail(user_id=user.user_id, limit=limit, before=before))


@router.get("/admin/audit", summary="The whole audit log (admins)")
async def admin_audit(
    user: AdminUser,
    res: ResourcesDep,
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
    before: Annotated[int | None, Query(ge=1, le=MAX_SEQ)] = None,
) -> dict[str, Any]:
    """Admins only: ``403`` for everyone else, whatever their token's scopes."""
    if not user.is_admin:
        raise ApiError(403, "admin_only", "only administrators can read the whole audit log")
    return _trail_out(await res.audit.trail(user_id=None, limit=limit, before=before))
