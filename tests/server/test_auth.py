"""Accounts and auth against a real `soma serve` with embedded Postgres, via the Python SDK and raw HTTP."""

from __future__ import annotations

import asyncio
import secrets
import uuid
from collections.abc import Iterator

import httpx
import psycopg
import pytest
from pgserver.utils import PostmasterInfo
from soma_client import SomaClient, SomaError

from tests.conftest import ServerProcess
from tests.server_api import auth

PASSWORD_A = "alpha-" + secrets.token_hex(8)
PASSWORD_B = "bravo-" + secrets.token_hex(8)


_OPEN: list[SomaClient] = []


def _client(server: ServerProcess, token: str | None = None) -> SomaClient:
    """A client closed at the end of the module (unclosed sockets are errors under filterwarnings)."""
    client = SomaClient(server.base_url, token)
    _OPEN.append(client)
    return client


@pytest.fixture(scope="module", autouse=True)
def _close_clients() -> Iterator[None]:
    yield
    while _OPEN:
        _OPEN.pop().close()


def _signup(server: ServerProcess, name: str, password: str) -> SomaClient:
    client = _client(server)
    client.signup(name, password, display_name=name.title())
    return client


@pytest.fixture(scope="module")
def alice(server: ServerProcess) -> SomaClient:
    return _signup(server, "alice" + secrets.token_hex(3), PASSWORD_A)


@pytest.fixture(scope="module")
def bob(server: ServerProcess) -> SomaClient:
    return _signup(server, "bob" + secrets.token_hex(3), PASSWORD_B)


def _db_uri(server: ServerProcess) -> str:
    info = PostmasterInfo.read_from_pgdata(server.data_dir / "pg")
    assert info is not None
    return str(info.get_uri())


def test_health_and_docs_need_no_token(server: ServerProcess) -> None:
    """/healthz, /metrics and the OpenAPI docs are public; health reports both stores up."""
    health = httpx.get(server.base_url + "/healthz").json()
    assert health["status"] == "ok" and health["database"] == "ok" and health["session_store"] == "ok"
    assert "soma_http_requests_total" in httpx.get(server.base_url + "/metrics").text
    assert httpx.get(server.base_url + "/docs").status_code == 200
    spec = httpx.get(server.base_url + "/openapi.json").json()
    assert "/v1/auth/token" in spec["paths"]


def test_no_token_is_401_json(server: ServerProcess) -> None:
    """A protected endpoint without a token answers 401 with a JSON error and a Bearer challenge."""
    r = httpx.get(server.base_url + "/v1/me")
    assert r.status_code == 401
    assert r.headers["www-authenticate"] == "Bearer"
    assert r.json()["error"]["code"] == "missing_token"


@pytest.mark.parametrize("token", ["garbage", "soma_" + "x" * 43, "Bearer", "soma_" + "é" * 10, "a" * 5000])
def test_garbled_token_is_401_json(server: ServerProcess, token: str) -> None:
    """Unknown, malformed or oversized tokens answer 401 with a JSON error, never 500."""
    r = httpx.get(server.base_url + "/v1/me", headers={"Authorization": f"Bearer {token}".encode()})
    assert r.status_code == 401, r.text
    assert r.json()["error"]["type"] == "authentication_error"


def test_login_me_logout(server: ServerProcess, alice: SomaClient) -> None:
    """Password login issues a working token; logout revokes it."""
    me = alice.me()
    client = _client(server)
    token = client.login(me["username"], PASSWORD_A)
    assert token.startswith("soma_")
    assert client.me()["id"] == me["id"]
    client.logout()
    with pytest.raises(SomaError) as err:
        _client(server, token).me()
    assert err.value.status == 401


def test_wrong_password_and_unknown_user_look_the_same(server: ServerProcess, alice: SomaClient) -> None:
    """Bad credentials get one 401 whether or not the user exists (no username probing)."""
    name = alice.me()["username"]
    for user, pw in ((name, "wrong-password"), ("nobody-" + secrets.token_hex(3), "whatever-pw")):
        r = httpx.post(server.base_url + "/v1/auth/token", json={"username": user, "password": pw})
        assert r.status_code == 401 and r.json()["error"]["code"] == "invalid_credentials"


def test_expired_token_is_401(server: ServerProcess, alice: SomaClient) -> None:
    """A token past its expiry is rejected with 401 invalid_token."""
    created = alice.create_token("short", expires_in=60)
    assert _client(server, created["token"]).me()["id"] == alice.me()["id"]

    async def expire() -> None:
        async with await psycopg.AsyncConnection.connect(_db_uri(server), autocommit=True) as conn:
            await conn.execute(
                "UPDATE api_tokens SET expires_at = now() - interval '1 second' WHERE id = %s", (created["id"],)
            )

    asyncio.run(expire())
    r = httpx.get(server.base_url + "/v1/me", headers=auth(created['token']))
    assert r.status_code == 401 and r.json()["error"]["code"] == "invalid_token"


def test_user_cannot_read_another_users_token(alice: SomaClient, bob: SomaClient) -> None:
    """Bob gets 404 for Alice's token id — the same answer as for an id that does not exist."""
    token_id = alice.create_token("alice-private")["id"]
    assert alice.token_info(token_id)["name"] == "alice-private"
    for action in (lambda: bob.token_info(token_id), lambda: bob.revoke_token(token_id)):
        with pytest.raises(SomaError) as err:
            action()
        assert err.value.status == 404
    with pytest.raises(SomaError) as err:
        bob.token_info(str(uuid.uuid4()))
    assert err.value.status == 404
    assert token_id not in {t["id"] for t in bob.tokens()}
    assert alice.token_info(token_id)["revoked_at"] is None


def test_scoped_token_cannot_mint_tokens(server: ServerProcess, alice: SomaClient) -> None:
    """A token limited to 'chat' cannot create tokens (403); unknown scopes are rejected (400)."""
    narrow = alice.create_token("chat-only", scopes=["chat"])
    with pytest.raises(SomaError) as err:
        _client(server, narrow["token"]).create_token("escalate")
    assert err.value.status == 403 and err.value.code == "insufficient_scope"
    with pytest.raises(SomaError) as err:
        alice.create_token("bad", scopes=["root"])
    assert err.value.status == 400


def test_signup_validation(server: ServerProcess) -> None:
    """Invalid usernames, short passwords, a body that is not JSON and duplicate names get 400 JSON errors."""
    for body in (
        {"username": "NO SPACES", "password": "long-enough-pw"},
        {"username": "shortpw" + secrets.token_hex(2), "password": "short"},
    ):
        r = httpx.post(server.base_url + "/v1/auth/signup", json=body)
        assert r.status_code == 400 and r.json()["error"]["type"] == "invalid_request_error"
    r = httpx.post(
        server.base_url + "/v1/auth/signup", content=b"{not json", headers={"content-type": "application/json"}
    )
    assert r.status_code == 400 and r.json()["error"]["code"] == "invalid_json"
    name = "dup" + secrets.token_hex(3)
    _signup(server, name, "long-enough-pw")
    r = httpx.post(server.base_url + "/v1/auth/signup", json={"username": name, "password": "long-enough-pw"})
    assert r.status_code == 400 and "taken" in r.json()["error"]["message"]


def test_validation_error_does_not_echo_password(server: ServerProcess) -> None:
    """A 400 about a bad field never echoes the submitted password back, and names the field."""
    secret = "echo-me-not-" + secrets.token_hex(8)
    r = httpx.post(server.base_url + "/v1/auth/token", json={"username": ["x"], "password": secret})
    assert r.status_code == 400 and r.json()["error"]["param"] == "username"
    assert secret not in r.text


def test_passwords_and_tokens_never_logged(server: ServerProcess, alice: SomaClient, bob: SomaClient) -> None:
    """After logins, token use and failures at debug level, no password or token appears in the server log."""
    alice.me()
    bob.me()
    extra = alice.create_token("log-check")
    _client(server, extra["token"]).me()
    httpx.get(server.base_url + f"/v1/me?access_token={extra['token']}")
    log = server.log_text()
    assert "POST /v1/auth/token" in log or "/v1/auth/token" in log  # the access log is really there
    for secret in (PASSWORD_A, PASSWORD_B, alice.token, bob.token, extra["token"]):
        assert secret and secret not in log
