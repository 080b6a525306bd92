"""Request dependencies: the app state and its resources, the authenticated principal and scopes.

Every route except ``/healthz``, ``/metrics`` (configurable) and static files depends on `require_user`, so
authentication is enforced in one place. A user-owned row is loaded by id through its table's owner (e.g.
`voice_server.accounts.get_token`, `voice_server.conversations.get_conversation`), whose query filters by the
caller's user id; the route answers `voice_server.errors.not_found` (404) when it finds nothing, so someone
else's id looks exactly like one that never existed and cannot be probed.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from voice_server import accounts
from voice_server.accounts import Principal
from voice_server.app_state import AppState, app_state
from voice_server.avatar.imports.service import ImportService
from voice_server.avatar.proactive.service import ProactiveService
from voice_server.errors import ApiError
from voice_server.resources import Resources
from voice_server.sip.calls import SipCallManager
from voice_server.stores.postgres import Database
from voice_server.webrtc.calls import CallManager

_bearer = HTTPBearer(auto_error=False, description="A token from POST /v1/auth/token or an API token")


def get_app_state(request: Request) -> AppState:
    """The serving app's state: its resources and the services started over them."""
    return app_state(request.app)


AppStateDep = Annotated[AppState, Depends(get_app_state)]


def get_resources(state: AppStateDep) -> Resources:
    """The server's long-lived resources."""
    return state.resources


ResourcesDep = Annotated[Resources, Depends(get_resources)]


def get_calls(state: AppStateDep) -> CallManager:
    """The browser (WebRTC) calls."""
    return state.calls


def get_sip(state: AppStateDep) -> SipCallManager | None:
    """The phone calls, or ``None`` when SIP is off."""
    return state.sip


def get_imports(state: AppStateDep) -> ImportService:
    """The import jobs."""
    return state.imports


def get_proactive(state: AppStateDep) -> ProactiveService:
    """The avatar's own messages."""
    return state.proactive


CallsDep = Annotated[CallManager, Depends(get_calls)]
SipDep = Annotated[SipCallManager | None, Depends(get_sip)]
ImportsDep = Annotated[ImportService, Depends(get_imports)]
ProactiveDep = Annotated[ProactiveService, Depends(get_proactive)]


async def require_user(
    request: Request,
    res: ResourcesDep,
    creds: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> Principal:
    """Resolve the bearer token, or answer 401 with a JSON error (see `authenticate_token`). The principal is
    kept in the request state for the audit log (`voice_server.api.audit_http`)."""
    principal = await authenticate_token(res.db, creds.credentials if creds is not None else None)
    request.state.principal = principal
    return principal


async def authenticate_token(db: Database, token: str | None) -> Principal:
    """The principal behind ``token``; the one token check for HTTP routes and WebSocket handshakes.

    Raises:
        ApiError: 401 ``missing_token`` without a token, ``invalid_token`` when it is unknown, revoked or
            expired.
    """
    if not token:
        raise ApiError(401, "missing_token", "authentication required: send 'Authorization: Bearer <token>'")
    async with db.pool.connection() as conn:
        principal = await accounts.authenticate(conn, token)
    if principal is None:
        raise ApiError(401, "invalid_token", "the token is invalid, expired or revoked")
    return principal


UserDep = Annotated[Principal, Depends(require_user)]


def require_scope(scope: str) -> Callable[[Principal], Awaitable[Principal]]:
    """Dependency factory: the caller's token must carry ``scope`` (or ``*``), else 403."""
    if scope not in accounts.SCOPES:
        raise ValueError(f"unknown scope {scope!r}")

    async def check(user: UserDep) -> Principal:
        if not user.allows(scope):
            raise ApiError(403, "insufficient_scope", f"this token lacks the '{scope}' scope")
        return user

    return check
