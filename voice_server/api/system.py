"""``/healthz`` and ``/metrics``: the only unauthenticated endpoints besides static files."""

from __future__ import annotations

import asyncio
import time
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Response
from fastapi.responses import JSONResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from voice_server.api.deps import ResourcesDep, authenticate_token
from voice_server.resources import model_names

router = APIRouter(tags=["system"])
_optional_bearer = HTTPBearer(auto_error=False)


@router.get("/healthz", summary="Liveness and readiness")
async def healthz(res: ResourcesDep) -> JSONResponse:
    """200 when the database and session store answer, else 503. Reveals no user data."""
    db_ok, redis_ok = await asyncio.gather(res.db.ping(), res.sessions.ping())
    body: dict[str, Any] = {
        "status": "ok" if db_ok and redis_ok else "degraded",
        "database": "ok" if db_ok else "down",
        "session_store": "ok" if redis_ok else "down",
        "models": model_names(res.models),
        "uptime_s": round(time.monotonic() - res.started_at, 1),
    }
    return JSONResponse(body, status_code=200 if db_ok and redis_ok else 503)


@router.get("/metrics", summary="Prometheus metrics", response_class=Response)
async def metrics(
    res: ResourcesDep, creds: Annotated[HTTPAuthorizationCredentials | None, Depends(_optional_bearer)]
) -> Response:
    """Prometheus text format; needs a token unless ``metrics_public`` is set."""
    if not res.settings.metrics_public:
        await authenticate_token(res.db, creds.credentials if creds is not None else None)
    return Response(res.metrics.render(), media_type="text/plain; version=0.0.4; charset=utf-8")
