"""Audit every ``/v1/`` HTTP request: who, what route, which resource, from where, and how it ended.

A pure ASGI middleware. The row is written when the response starts, before any byte of it is sent, so a
client never receives data whose access was not recorded: if the audit write fails, the client gets a 503
instead of the response (logged). Routes name the caller by storing the `Principal` (``require_user`` does)
or, for logins, the user id (``audit_user``) in the request state.
"""

from __future__ import annotations

import logging
import uuid
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from voice_server.app_state import app_state
from voice_server.errors import error_response
from voice_server.security.audit import AuditEvent

log = logging.getLogger(__name__)


def outcome_of(status: int) -> str:
    """A short word for an HTTP status, for reading the trail."""
    if status < 400:
        return "ok"
    if status in (401, 403):
        return "denied"
    if status == 404:
        return "not_found"
    if status == 429:
        return "limited"
    return "rejected" if status < 500 else "error"


def event_for(scope: Scope, status: int) -> AuditEvent:
    """The audit event of a finished request (see the module docstring for where the caller comes from)."""
    state: dict[str, Any] = scope.get("state") or {}
    principal = state.get("principal")
    actor: uuid.UUID | None = principal.user_id if principal is not None else state.get("audit_user")
    subject: uuid.UUID | None = state.get("audit_subject", actor)
    route = scope.get("route")
    template = getattr(route, "path", None) or "(no route)"
    params = scope.get("path_params") or {}
    client = scope.get("client")
    # A path parameter named "token" is a capability (a share link): never written down; the route may name
    # what it opened instead (``audit_resource``). Path values are the client's text: a NUL (``%00``) cannot
    # go into a Postgres text column.
    resource = state.get("audit_resource") or ",".join(
        f"{k}={'[REDACTED]' if k == 'token' else v}" for k, v in sorted(params.items())
    ).replace("\x00", "\\x00")
    return AuditEvent(
        action=f"{scope['method']} {template}",
        outcome=outcome_of(status),
        actor_id=actor,
        user_id=subject,
        resource=resource,
        status=status,
        source=client[0] if client else None,
    )


class AuditMiddleware:
    """Records one audit row per ``/v1/`` HTTP request (not health, metrics or static files)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not scope["path"].startswith("/v1/"):
            await self.app(scope, receive, send)
            return
        recorded = False
        withheld = False

        async def audited_send(message: Message) -> None:
            nonlocal recorded, withheld
            if message["type"] == "http.response.start" and not recorded:
                # By the time a response starts, routing and authentication are done: record it now, before
                # its first byte leaves (a streamed body may be complete for the client before it ends here).
                recorded = True
                if not await self._record(scope, int(message["status"])):
                    withheld = True
                    unavailable = error_response(503, "audit_unavailable", "the server cannot record this request")
                    await unavailable(scope, receive, send)
                    return
            if not withheld:
                await send(message)

        try:
            await self.app(scope, receive, audited_send)
        finally:
            if not recorded:  # the app failed before starting a response (the error handler answers 500)
                await self._record(scope, 500)

    async def _record(self, scope: Scope, status: int) -> bool:
        """Write the row; ``False`` (logged) when it could not be written."""
        audit = app_state(scope["app"]).resources.audit
        try:
            await audit.record(event_for(scope, status))
        except Exception:
            log.error("audit row not written: the response is withheld", exc_info=True)
            return False
        return True
