"""Talking to a test server (`tests.conftest.ServerProcess`) as a user, a WebSocket client or a scraper would.

One copy of what many test files had each written for themselves: the bearer header, a one-shot request as a
user, a client bound to a user, the realtime WebSocket's URL and a Prometheus metric's current value. The
product's own client (`soma_client`) stays the way to sign up and log in (`tests.conftest.new_user`); these are
for requests a test shapes by hand (odd headers, forged tokens, raw bodies).
"""

from __future__ import annotations

from typing import Any

import httpx

from tests.conftest import ServerProcess


def auth(token: str) -> dict[str, str]:
    """The header that makes a request ``token``'s user's."""
    return {"Authorization": f"Bearer {token}"}


def api(server: ServerProcess, method: str, path: str, token: str | None, **kwargs: Any) -> httpx.Response:
    """One request as ``token``'s user (none: anonymous); extra ``headers`` are merged in. The timeout allows
    a chat completion with the ci models."""
    headers = {**(auth(token) if token else {}), **kwargs.pop("headers", {})}
    return httpx.request(method, server.base_url + path, headers=headers, timeout=120, **kwargs)


def user_client(base_url: str, token: str, *, timeout: float = 30) -> httpx.Client:
    """A client for ``base_url`` whose every request is ``token``'s user's; close it (``with``) when done."""
    return httpx.Client(base_url=base_url, headers=auth(token), timeout=timeout)


def ws_url(server: ServerProcess) -> str:
    """The realtime WebSocket's URL on ``server`` (``ws:`` or ``wss:`` after the server's scheme)."""
    return server.base_url.replace("http", "ws") + "/v1/realtime"


def metric(server: ServerProcess, name: str) -> float:
    """The sum of ``server``'s /metrics samples whose line starts with ``name``: a bare name sums every label
    set, ``'name{channel="webrtc"}'`` only that one."""
    text = httpx.get(server.base_url + "/metrics", timeout=10).text
    return sum(float(line.split()[-1]) for line in text.splitlines() if line.startswith(name))
