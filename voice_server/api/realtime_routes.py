"""``GET /v1/realtime``: the OpenAI Realtime protocol over a WebSocket, for text or voice.

A browser handshake whose ``Origin`` is neither this server's own nor one of ``SOMA_CORS_ORIGINS`` is
refused first (403 ``origin_not_allowed``): browsers send any site's WebSocket to any server, so this stops
a page elsewhere from using a token it got hold of through the visitor's browser. Clients that send no
``Origin`` (the OpenAI SDK, scripts) are not browsers and are not affected.

The handshake is refused (HTTP 401/403/404/503 with a JSON error, before any model work) unless the bearer
token is valid — from the ``Authorization`` header, or for browsers, which cannot set headers, from an
``openai-insecure-api-key.<token>`` subprotocol — and ``?model=`` names one of the caller's avatars.

Per connection: messages over `MAX_MESSAGE_BYTES` get an ``error`` event (the server closes with 1009 above
uvicorn's frame limit, twice that); more than `RATE_PER_S` messages a second (burst `BURST`) get
``rate_limit_exceeded`` errors and, past `MAX_VIOLATIONS`, a 1008 close. Outgoing events wait in a queue of
`OUT_QUEUE`; a client that stops reading until it fills is closed with 1008 rather than growing memory.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from fastapi import APIRouter, WebSocket
from starlette.websockets import WebSocketDisconnect, WebSocketState

from voice_server.accounts import Principal
from voice_server.api.audit_http import outcome_of
from voice_server.api.deps import authenticate_token
from voice_server.app_state import app_state
from voice_server.avatar.directory import Avatar, resolve_avatar
from voice_server.avatar.proactive.service import ProactiveService
from voice_server.errors import ApiError, error_response
from voice_server.live_sessions import LiveState
from voice_server.realtime import protocol as p
from voice_server.realtime.connection import RealtimeConnection, new_connection
from voice_server.resources import Resources
from voice_server.security.audit import AuditEvent, AuditLog
from voice_server.session_factory import find_session, open_conversation
from voice_server.session_lifetime import SessionLifetime
from voice_server.stores.postgres import Database

if TYPE_CHECKING:  # types only: the model runtimes are imported when the models load
    from models.registry import ModelSet

log = logging.getLogger(__name__)
router = APIRouter(tags=["realtime"])

MAX_MESSAGE_BYTES = 1024 * 1024
WS_FRAME_LIMIT = 2 * MAX_MESSAGE_BYTES  # uvicorn's ws_max_size: beyond it the connection is closed (1009)
RATE_PER_S = 200.0  # messages; 20 ms audio chunks are 50/s
BURST = 400.0
MAX_VIOLATIONS = 1000  # rate-limited messages before the connection is closed
OUT_QUEUE = 1024  # server events waiting for a slow client (~20 s of audio deltas)
KEY_PROTOCOL = "openai-insecure-api-key."
CLOSE_POLICY = 1008


@router.websocket("/v1/realtime")
async def realtime(ws: WebSocket, model: str | None = None, session_id: str | None = None) -> None:
    """Authenticate, then run the realtime conversation until either side closes.

    ``session_id`` (from an earlier ``session.created``) resumes that session: the same conversation with its
    heard history, from Redis or, if Redis lost it, from Postgres. An unknown, expired or foreign id is
    refused at the handshake (404 ``session_not_found``).
    """
    state = app_state(ws.app)
    res = state.resources
    origin = ws.headers.get("origin")
    if not origin_allowed(origin, ws.url.scheme, ws.headers.get("host"), res.settings.cors_origin_list):
        # One line per refused handshake; the origin names the foreign page, it is not a secret.
        log.warning("websocket refused: origin not allowed", extra={"origin": (origin or "")[:200]})
        await _deny(ws, ApiError(403, "origin_not_allowed", "this page's origin may not open Soma WebSockets"))
        return
    token, subprotocol = _credentials(ws)
    user: Principal | None = None
    try:
        user = await _authenticate(res.db, token)
        avatar = await resolve_avatar(user, model, res.persona)
        models = res.models
        if models is None or models.llm is None:
            raise ApiError(503, "models_unavailable", "this server was started without models")
        resume = await find_session(res, user, session_id, "realtime", avatar)
        await _audit(res.audit, ws, user, 101, session_id)  # before accepting: no session runs unaudited
    except ApiError as exc:
        with contextlib.suppress(Exception):  # the refusal itself is logged by the audit's own failure
            await _audit(res.audit, ws, user, exc.status, session_id)
        await _deny(ws, exc)
        return
    await ws.accept(subprotocol=subprotocol)
    await _Endpoint(ws, res, models, state.proactive, user, avatar, resume).run()


_DEFAULT_PORTS = {"http": 80, "https": 443, "ws": 80, "wss": 443}


def _origin_key(scheme: str, netloc: str) -> tuple[str, str, int] | None:
    """``(http|https, host, port)`` with the default port filled in; ``None`` when unparseable."""
    scheme = {"ws": "http", "wss": "https"}.get(scheme.lower(), scheme.lower())
    try:
        parts = urlsplit(f"//{netloc}")
        port = parts.port or _DEFAULT_PORTS.get(scheme)
    except ValueError:
        return None
    if scheme not in ("http", "https") or not parts.hostname or port is None:
        return None
    return scheme, parts.hostname, port


def origin_allowed(origin: str | None, scheme: str, host: str | None, allowed: list[str]) -> bool:
    """Whether a WebSocket handshake's ``Origin`` may connect.

    Args:
        origin: The ``Origin`` header; ``None`` (not a browser) is allowed — such clients authenticate with a
            bearer token no other site can make them send.
        scheme: The connection's scheme (``ws``/``wss``, as uvicorn saw it, proxy headers applied).
        host: The ``Host`` header the client addressed this server by.
        allowed: Extra origins (``SOMA_CORS_ORIGINS``).
    """
    if origin is None:
        return True
    scheme_part, sep, netloc = origin.strip().partition("://")
    key = _origin_key(scheme_part, netloc) if sep and "/" not in netloc else None
    if key is None:  # "null" (sandboxed frames, file://) and garbage are never allowed
        return False
    if host is not None and key == _origin_key(scheme, host):
        return True
    return any(key == _origin_key(*a.partition("://")[::2]) for a in allowed)


def _credentials(ws: WebSocket) -> tuple[str | None, str | None]:
    """The bearer token and the subprotocol to accept (``realtime`` when offered)."""
    offered = [s.strip() for s in ws.headers.get("sec-websocket-protocol", "").split(",") if s.strip()]
    token = None
    header = ws.headers.get("authorization", "")
    if header.lower().startswith("bearer "):
        token = header[7:].strip()
    keys = [s for s in offered if s.startswith(KEY_PROTOCOL)]
    if token is None and keys:
        token = keys[0][len(KEY_PROTOCOL) :]
    others = [s for s in offered if not s.startswith(KEY_PROTOCOL)]
    chosen = "realtime" if "realtime" in others else (others[0] if others else (keys[0] if keys else None))
    return token, chosen


async def _authenticate(db: Database, token: str | None) -> Principal:
    user = await authenticate_token(db, token)
    if not (user.allows("calls") or user.allows("chat")):
        raise ApiError(403, "insufficient_scope", "this token lacks the 'calls' or 'chat' scope")
    return user


async def _audit(audit: AuditLog, ws: WebSocket, user: Principal | None, status: int, session_id: str | None) -> None:
    """One audit row for a handshake: accepted (101) or refused with ``status``.

    Raises:
        ApiError: 503 when the row cannot be written (the session is then refused, not run unaudited).
    """
    actor = user.user_id if user is not None else None
    event = AuditEvent(
        "WS /v1/realtime", outcome_of(status), actor, actor,
        f"session_id={session_id}" if session_id else "", status, ws.client.host if ws.client else None,
    )
    try:
        await audit.record(event)
    except Exception:
        log.error("audit row not written: websocket refused", exc_info=True)
        raise ApiError(503, "audit_unavailable", "the server cannot record this session right now") from None


async def _deny(ws: WebSocket, exc: ApiError) -> None:
    try:
        await ws.send_denial_response(error_response(exc.status, exc.code, exc.message))
    except RuntimeError:  # the server lacks the denial extension: a plain refusal (HTTP 403)
        await ws.close(code=CLOSE_POLICY, reason=exc.code)


class _TokenBucket:
    def __init__(self, rate: float, burst: float) -> None:
        self.rate, self.burst, self.tokens, self.t = rate, burst, burst, time.monotonic()

    def take(self) -> bool:
        now = time.monotonic()
        self.tokens = min(self.burst, self.tokens + (now - self.t) * self.rate)
        self.t = now
        if self.tokens >= 1.0:
            self.tokens -= 1.0
            return True
        return False


class _Endpoint:
    """One accepted connection: its tasks, its queues and how it closes."""

    def __init__(
        self,
        ws: WebSocket,
        res: Resources,
        models: ModelSet,
        proactive: ProactiveService,
        user: Principal,
        avatar: Avatar,
        resume: LiveState | None,
    ) -> None:
        self.ws = ws
        self.resume = resume
        self.res = res
        self.models = models
        self.proactive = proactive
        self.user = user
        self.avatar = avatar
        self.out: asyncio.Queue[dict[str, Any]] = asyncio.Queue(OUT_QUEUE)
        self.too_slow = asyncio.Event()
        self.close_code = 1000
        self.close_reason = ""

    def emit(self, event: dict[str, Any]) -> None:
        try:
            self.out.put_nowait(event)
        except asyncio.QueueFull:
            self.too_slow.set()

    async def run(self) -> None:
        conn = new_connection(self.models, self.avatar.id, self.avatar.persona, self.emit)
        try:
            conversation = await open_conversation(
                self.res, self.user, self.avatar, "realtime", conn.transport, resume=self.resume
            )
        except ApiError as exc:
            await self.ws.close(code=1011, reason=exc.code)
            return
        conn.session_id = conversation.session_id
        conn.attach(conversation.session, conversation.context)
        # The connection's item edits write history: they stop before the conversation is marked ended.
        lifetime = SessionLifetime(conversation, conn.transport, name="realtime", on_stopped=conn.aclose)
        try:
            async with lifetime:
                lifetime.start("realtime-session")
                lifetime.watch(self._write(), "realtime-writer")
                lifetime.watch(self._read(conn), "realtime-reader")
                lifetime.watch(self.too_slow.wait(), "realtime-slow-watch")
                lifetime.spawn(conn.transport.pump_output(conn.on_audio), "realtime-audio-out")
                # Not among the tasks whose end ends the session: it only ever adds events.
                lifetime.spawn(self._notifications(conn), "realtime-notifications")
                await lifetime.wait()
                if self.too_slow.is_set():
                    self.close_code, self.close_reason = CLOSE_POLICY, "client is not reading events fast enough"
        finally:
            await self._close()

    async def _read(self, conn: RealtimeConnection) -> None:
        bucket = _TokenBucket(RATE_PER_S, BURST)
        violations = 0
        while True:
            try:
                message = await self.ws.receive()
            except (WebSocketDisconnect, RuntimeError):
                return
            if message["type"] == "websocket.disconnect":
                return
            text = message.get("text")
            if text is None:
                conn.error(p.ProtocolError("binary_not_supported", "send events as JSON text messages"))
                continue
            if len(text) > MAX_MESSAGE_BYTES:
                conn.error(p.ProtocolError("message_too_large", f"a message may be at most {MAX_MESSAGE_BYTES} "
                                           "bytes; split audio into smaller appends"))
                continue
            if not bucket.take():
                violations += 1
                if violations > MAX_VIOLATIONS:
                    self.close_code, self.close_reason = CLOSE_POLICY, "rate limit exceeded"
                    return
                conn.error(p.ProtocolError("rate_limit_exceeded", f"more than {RATE_PER_S:.0f} messages per second; "
                                           "this message was ignored"))
                continue
            await conn.handle(text)

    async def _notifications(self, conn: RealtimeConnection) -> None:
        """Forward the avatar's own messages while the socket is open (live only: ``/v1/events`` replays).
        A dropped subscription (this client fell behind) is renewed; it never ends the session."""
        service = self.proactive
        if not self.user.allows("events"):
            return  # the token may not read them (scope ``events``)
        while True:
            with service.hub.subscribe(self.user.user_id) as subscription:
                while (notification := await subscription.get()) is not None:
                    conn.notify(notification)
                    with contextlib.suppress(Exception):
                        await service.store.mark_delivered(self.user.user_id, [notification["id"]], service.clock())
            await asyncio.sleep(1.0)  # dropped: resubscribe, without spinning if the hub is shutting down

    async def _write(self) -> None:
        while True:
            event = await self.out.get()
            try:
                await self.ws.send_text(p.serialize_event(event))
            except (WebSocketDisconnect, RuntimeError, OSError):
                return

    async def _close(self) -> None:
        if self.ws.application_state != WebSocketState.DISCONNECTED:
            # Bounded: a client that stopped reading may never take the close frame either.
            with contextlib.suppress(Exception):
                async with asyncio.timeout(2.0):
                    await self.ws.close(code=self.close_code, reason=self.close_reason)
