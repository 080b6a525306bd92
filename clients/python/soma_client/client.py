"""A small synchronous client over httpx for Soma's HTTP API."""

from __future__ import annotations

from types import TracebackType
from typing import Any

import httpx


class SomaError(RuntimeError):
    """An error answer from the server, with its HTTP status and Soma error code."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(f"{status} {code}: {message}")
        self.status = status
        self.code = code
        self.message = message


class SomaClient:
    """Talks to one Soma server as one user.

    Args:
        base_url: e.g. ``https://localhost:8443``.
        token: A bearer token, if you already have one (else call `login` or `signup`).
        verify: TLS verification: ``True``, ``False`` (self-signed dev cert), or a CA bundle path such as the
            server's ``<data_dir>/tls/cert.pem``.
        timeout: Seconds per request.
    """

    def __init__(
        self, base_url: str, token: str | None = None, *, verify: bool | str = True, timeout: float = 30.0
    ) -> None:
        self.token = token
        self._http = httpx.Client(base_url=base_url.rstrip("/"), verify=verify, timeout=timeout)

    def __enter__(self) -> SomaClient:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def close(self) -> None:
        """Close the connection pool."""
        self._http.close()

    def _request(self, method: str, path: str, **kwargs: Any) -> Any:
        headers = {"Authorization": f"Bearer {self.token}"} if self.token else {}
        response = self._http.request(method, path, headers=headers, **kwargs)
        if response.status_code >= 400:
            try:
                err = response.json()["error"]
                raise SomaError(response.status_code, str(err.get("code")), str(err.get("message")))
            except (ValueError, KeyError, TypeError):
                raise SomaError(response.status_code, "http_error", response.text[:200]) from None
        if response.status_code == 204 or not response.content:
            return None
        return response.json()

    def health(self) -> dict[str, Any]:
        """``GET /healthz`` (no token needed)."""
        result: dict[str, Any] = self._request("GET", "/healthz")
        return result

    def signup(self, username: str, password: str, display_name: str = "") -> dict[str, Any]:
        """Create an account (when the server allows sign-up) and keep its token."""
        body = {"username": username, "password": password, "display_name": display_name}
        result: dict[str, Any] = self._request("POST", "/v1/auth/signup", json=body)
        self.token = result["token"]["access_token"]
        return result

    def login(self, username: str, password: str, expires_in: int | None = None) -> str:
        """Exchange credentials for a bearer token, keep it, and return it."""
        body: dict[str, Any] = {"username": username, "password": password}
        if expires_in is not None:
            body["expires_in"] = expires_in
        self.token = str(self._request("POST", "/v1/auth/token", json=body)["access_token"])
        return self.token

    def logout(self) -> None:
        """Revoke the current token."""
        self._request("POST", "/v1/auth/logout")
        self.token = None

    def me(self) -> dict[str, Any]:
        """The logged-in user."""
        result: dict[str, Any] = self._request("GET", "/v1/me")
        return result

    def create_token(
        self, name: str, scopes: list[str] | None = None, expires_in: int | None = None
    ) -> dict[str, Any]:
        """Create an API token; the response's ``token`` field is the secret, shown only once."""
        body: dict[str, Any] = {"name": name, "scopes": scopes or ["*"]}
        if expires_in is not None:
            body["expires_in"] = expires_in
        result: dict[str, Any] = self._request("POST", "/v1/auth/tokens", json=body)
        return result

    def tokens(self) -> list[dict[str, Any]]:
        """The user's tokens (metadata only)."""
        result: list[dict[str, Any]] = self._request("GET", "/v1/auth/tokens")
        return result

    def token_info(self, token_id: str) -> dict[str, Any]:
        """One of the user's tokens by id."""
        result: dict[str, Any] = self._request("GET", f"/v1/auth/tokens/{token_id}")
        return result

    def revoke_token(self, token_id: str) -> None:
        """Revoke one of the user's tokens."""
        self._request("DELETE", f"/v1/auth/tokens/{token_id}")

    # ------------------------------------------------------------------------------------------- memories

    def memories(
        self, *, limit: int = 50, kind: str | None = None, include_superseded: bool = False
    ) -> list[dict[str, Any]]:
        """What the avatar remembers about the user, newest first (one page of ``limit``)."""
        params: dict[str, Any] = {"limit": limit, "include_superseded": include_superseded}
        if kind is not None:
            params["kind"] = kind
        result: list[dict[str, Any]] = self._request("GET", "/v1/memories", params=params)["data"]
        return result

    def search_memories(self, query: str, limit: int = 10) -> list[dict[str, Any]]:
        """Memories nearest in meaning to ``query``, best first, each with its ``similarity``."""
        result: list[dict[str, Any]] = self._request(
            "GET", "/v1/memories/search", params={"q": query, "limit": limit}
        )["data"]
        return result

    def remember(self, text: str, kind: str = "fact", importance: float = 0.7, **fields: Any) -> dict[str, Any]:
        """Tell the avatar something to remember; returns the new memory."""
        body = {"text": text, "kind": kind, "importance": importance, **fields}
        result: dict[str, Any] = self._request("POST", "/v1/memories", json=body)
        return result

    def correct_memory(self, memory_id: str, **fields: Any) -> dict[str, Any]:
        """Change a memory's ``text``, ``kind``, ``importance``, ``subject`` or ``event_date``."""
        result: dict[str, Any] = self._request("PATCH", f"/v1/memories/{memory_id}", json=fields)
        return result

    def forget(self, memory_id: str) -> None:
        """Delete a memory (and the older versions it replaced)."""
        self._request("DELETE", f"/v1/memories/{memory_id}")
