"""``/v1/auth/*`` and ``/v1/me``: sign-up, login, API tokens, logout."""

from __future__ import annotations

import logging
import uuid
from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, Depends, Request, Response
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field

from voice_server import accounts
from voice_server.accounts import AccountError, Principal
from voice_server.api.deps import ResourcesDep, UserDep, require_scope
from voice_server.errors import ApiError, error_response, not_found

log = logging.getLogger(__name__)
router = APIRouter(prefix="/v1", tags=["auth"])

# Postgres text cannot hold NUL: such a string is refused here (400) rather than failing its query (500).
NO_NUL = r"^[^\x00]*$"
MAX_API_TOKEN_TTL_S = 100 * 365 * 24 * 3600  # beyond this the expiry date would overflow


class SignupRequest(BaseModel):
    username: str = Field(min_length=2, max_length=32)
    password: str = Field(min_length=1, max_length=accounts.MAX_PASSWORD_LEN)
    display_name: str = Field(default="", max_length=100, pattern=NO_NUL)


class LoginRequest(BaseModel):
    username: str = Field(min_length=1, max_length=64, pattern=NO_NUL)
    password: str = Field(min_length=1, max_length=accounts.MAX_PASSWORD_LEN)
    expires_in: int | None = Field(default=None, ge=60, le=365 * 24 * 3600, description="Token lifetime, seconds")


class TokenResponse(BaseModel):
    access_token: str
    token_type: str = "bearer"
    expires_at: datetime | None
    scopes: list[str]


class UserOut(BaseModel):
    id: uuid.UUID
    username: str
    display_name: str
    is_admin: bool
    created_at: datetime


class SignupResponse(BaseModel):
    user: UserOut
    token: TokenResponse


class ApiTokenCreate(BaseModel):
    name: str = Field(min_length=1, max_length=100, pattern=NO_NUL)
    scopes: list[str] = Field(default_factory=lambda: ["*"], min_length=1, max_length=len(accounts.SCOPES))
    expires_in: int | None = Field(
        default=None, ge=60, le=MAX_API_TOKEN_TTL_S, description="Seconds; omit for a token that never expires"
    )


class ApiTokenOut(BaseModel):
    id: uuid.UUID
    name: str
    scopes: list[str]
    created_at: datetime
    expires_at: datetime | None
    last_used_at: datetime | None
    revoked_at: datetime | None


class ApiTokenCreated(ApiTokenOut):
    token: str = Field(description="The secret; shown only in this response")


class SignupStatus(BaseModel):
    signup_open: bool


async def _signup_open(res: ResourcesDep) -> bool:
    policy = res.settings.signup
    if policy == "open":
        return True
    if policy == "closed":
        return False
    async with res.db.pool.connection() as conn:
        return await accounts.count_users(conn) == 0


@router.get("/auth/signup", response_model=SignupStatus, summary="Whether the sign-up form is available")
async def signup_status(res: ResourcesDep) -> SignupStatus:
    """Public: lets the web page show the first-run "create your account" form."""
    return SignupStatus(signup_open=await _signup_open(res))


@router.post("/auth/signup", response_model=SignupResponse, status_code=201, summary="Create an account")
async def signup(body: SignupRequest, request: Request, res: ResourcesDep) -> SignupResponse:
    """Create an account (allowed per the ``signup`` setting: by default only the very first one)."""
    if not await _signup_open(res):
        raise ApiError(403, "signup_closed", "sign-up is closed; ask the owner to run 'soma users create'")
    async with res.db.pool.connection() as conn:
        async with conn.transaction():
            first = await accounts.count_users(conn) == 0
            try:
                user = await accounts.create_user(
                    conn, body.username, body.password, display_name=body.display_name, is_admin=first
                )
            except AccountError as exc:
                raise ApiError(400, "invalid_account", str(exc)) from None
            token = await accounts.issue_token(conn, user["id"], name="web login", ttl_s=res.settings.login_token_ttl_s)
    request.state.audit_user = user["id"]  # the audit row names the new account
    return SignupResponse(user=UserOut(**user), token=_token_response(token))


LOGIN_ATTEMPTS = 20
LOGIN_WINDOW_S = 300
LOGIN_SOURCE_ATTEMPTS = 30  # per source address and window, across all usernames (password spraying)


@router.post(
    "/auth/token",
    response_model=TokenResponse,
    summary="Log in: password → bearer token",
    responses={429: {"description": "Rate limited or account locked; see the Retry-After header"}},
)
async def login(body: LoginRequest, request: Request, res: ResourcesDep) -> TokenResponse | JSONResponse:
    """Exchange username and password for a bearer token that expires (default: the server's login TTL).

    Guessing is bounded three ways, each answered with 429 and ``Retry-After`` before any password is
    checked: `LOGIN_SOURCE_ATTEMPTS` attempts per source address and `LOGIN_ATTEMPTS` per username in
    `LOGIN_WINDOW_S`; and after ``login_max_failures`` consecutive wrong passwords the account is locked for
    ``login_lockout_s`` — the right password is refused too until it ends. A success clears the failure
    count. Unknown usernames are counted and locked exactly like real ones and cost the same argon2 check,
    so neither the answers nor their timing reveal which accounts exist.
    """
    settings = res.settings
    name = body.username.strip().lower()
    source = request.client.host if request.client is not None else "unknown"
    if not await res.sessions.hit(f"login-src:{source}", LOGIN_SOURCE_ATTEMPTS, LOGIN_WINDOW_S):
        wait = await res.sessions.window_remaining(f"login-src:{source}")
        return _too_many("rate_limited", "too many login attempts from this address", wait)
    if not await res.sessions.hit(f"login:{name}", LOGIN_ATTEMPTS, LOGIN_WINDOW_S):
        wait = await res.sessions.window_remaining(f"login:{name}")
        return _too_many("rate_limited", "too many login attempts for this account", wait)
    if locked := await res.sessions.lockout_remaining(f"login:{name}"):
        return _too_many("account_locked", "this account is locked after repeated failed logins", locked)
    async with res.db.pool.connection() as conn:
        user = await accounts.check_login(conn, body.username, body.password)
        if user is None:
            started = await res.sessions.record_failure(
                f"login:{name}", settings.login_max_failures, settings.login_lockout_s
            )
            if started:
                # Once per lockout; the username only (never the password), to spot an attack in the logs.
                log.warning(
                    "login locked for %d s after %d failed attempts",
                    started,
                    settings.login_max_failures,
                    extra={"username": name[:64], "source": source},
                )
            raise ApiError(401, "invalid_credentials", "wrong username or password")
        await res.sessions.clear_failures(f"login:{name}")
        request.state.audit_user = user["id"]
        token = await accounts.issue_token(
            conn, user["id"], name="login", ttl_s=body.expires_in or settings.login_token_ttl_s
        )
    return _token_response(token)


def _too_many(code: str, message: str, retry_after_s: int) -> JSONResponse:
    """429 in the usual error shape, with ``Retry-After`` (seconds) and the wait in the message."""
    minutes = max(1, -(-retry_after_s // 60))
    return error_response(
        429, code, f"{message}; try again in {minutes} minute{'s' if minutes > 1 else ''}",
        headers={"Retry-After": str(retry_after_s)},
    )


@router.post("/auth/logout", status_code=204, summary="Revoke the token used for this request")
async def logout(user: UserDep, res: ResourcesDep) -> Response:
    async with res.db.pool.connection() as conn:
        await accounts.revoke_token(conn, user.user_id, user.token_id)
    return Response(status_code=204)


@router.get("/me", response_model=UserOut, summary="The calling user")
async def me(user: UserDep, res: ResourcesDep) -> UserOut:
    async with res.db.pool.connection() as conn:
        row = await accounts.get_user(conn, user.user_id)
    if row is None:  # deleted while the token was in flight
        raise not_found("user")
    return UserOut(**row)


@router.get("/auth/tokens", response_model=list[ApiTokenOut], summary="The caller's tokens")
async def list_tokens(user: UserDep, res: ResourcesDep) -> list[ApiTokenOut]:
    async with res.db.pool.connection() as conn:
        return [ApiTokenOut(**row) for row in await accounts.list_tokens(conn, user.user_id)]


@router.post("/auth/tokens", response_model=ApiTokenCreated, status_code=201, summary="Create an API token")
async def create_token(
    body: ApiTokenCreate, user: Annotated[Principal, Depends(require_scope("admin"))], res: ResourcesDep
) -> ApiTokenCreated:
    """Create a named, scoped API token. Needs a token with the ``admin`` (or ``*``) scope, so a narrow
    token cannot mint itself a broader one."""
    try:
        scopes = accounts.validate_scopes(body.scopes)
    except AccountError as exc:
        raise ApiError(400, "invalid_scope", str(exc)) from None
    async with res.db.pool.connection() as conn:
        issued = await accounts.issue_token(conn, user.user_id, name=body.name, scopes=scopes, ttl_s=body.expires_in)
        row = await accounts.get_token(conn, user.user_id, issued.id)
    if row is None:  # the account was erased in between
        raise not_found("token")
    return ApiTokenCreated(**row, token=issued.secret)


@router.get("/auth/tokens/{token_id}", response_model=ApiTokenOut, summary="One of the caller's tokens")
async def get_token(token_id: uuid.UUID, user: UserDep, res: ResourcesDep) -> ApiTokenOut:
    async with res.db.pool.connection() as conn:
        row = await accounts.get_token(conn, user.user_id, token_id)
    if row is None:
        raise not_found("token")
    return ApiTokenOut(**row)


@router.delete("/auth/tokens/{token_id}", status_code=204, summary="Revoke one of the caller's tokens")
async def delete_token(token_id: uuid.UUID, user: UserDep, res: ResourcesDep) -> Response:
    async with res.db.pool.connection() as conn:
        if await accounts.get_token(conn, user.user_id, token_id) is None:
            raise not_found("token")
        await accounts.revoke_token(conn, user.user_id, token_id)
    return Response(status_code=204)


def _token_response(token: accounts.IssuedToken) -> TokenResponse:
    return TokenResponse(access_token=token.secret, expires_at=token.expires_at, scopes=list(token.scopes))
