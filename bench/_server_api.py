"""HTTP helpers the benchmarks share for driving a real ``soma serve``: an authorised request, and a chat
export imported through ``POST /v1/imports`` and waited for."""

from __future__ import annotations

import time
from typing import Any

import httpx

from tests.conftest import ServerProcess


def api(srv: ServerProcess, method: str, path: str, token: str, **kw: Any) -> httpx.Response:
    """``method path`` as the user of ``token`` (generous read timeout: model work runs behind some routes)."""
    return httpx.request(method, srv.base_url + path, headers={"Authorization": f"Bearer {token}"},
                         timeout=httpx.Timeout(900, connect=10), **kw)


def upload(srv: ServerProcess, token: str, me: str, name: str, content: bytes) -> float:
    """Import one chat export (``me``: the user's name in it) and wait for its job; the seconds it took.

    Raises:
        RuntimeError: The import job failed.
    """
    started = time.perf_counter()
    r = api(srv, "POST", "/v1/imports", token, params={"me": me, "name": name}, content=content)
    r.raise_for_status()
    import_id = r.json()["id"]
    while (row := api(srv, "GET", f"/v1/imports/{import_id}", token).json())["status"] not in ("done", "failed"):
        time.sleep(0.5)
    if row["status"] != "done":
        raise RuntimeError(f"import of {name} failed: {row}")
    return time.perf_counter() - started
