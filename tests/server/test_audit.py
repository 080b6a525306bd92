"""The audit log and encrypted media on a real server: every access leaves a hash-chained row the app's role
cannot change, `soma audit verify` names the first row a superuser tampered with, users see their own trail and
only admins the whole log; files are sealed on disk, streamed back, shared by expiring revocable links."""

from __future__ import annotations

import hashlib
import os
import subprocess
import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import psycopg
import pytest
from psycopg.rows import dict_row

from tests.conftest import SOMA, ServerProcess, new_user, soma_env, start_server
from tests.server_api import api
from voice_server.security.audit import chain_hash

pytestmark = pytest.mark.timeout(300)
MEDIA_LIMIT = 2_000_000


@pytest.fixture(scope="module")
def srv(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    server = start_server(
        tmp_path_factory.mktemp("audit"), SOMA_SIGNUP="open", SOMA_MEDIA_MAX_BYTES=str(MEDIA_LIMIT)
    )
    yield server
    server.stop()


def db_as(server: ServerProcess, user: str) -> psycopg.Connection[dict[str, Any]]:
    """A connection to the server's embedded Postgres as database role ``user`` (trusted Unix socket)."""
    url = f"postgresql://{user}@/postgres?host={server.data_dir / 'pg'}"
    return psycopg.connect(url, autocommit=True, row_factory=dict_row)


def verify(server: ServerProcess) -> subprocess.CompletedProcess[str]:
    """`soma audit verify` next to the running server, as an operator would run it."""
    return subprocess.run(
        [*SOMA, "audit", "verify"], env=soma_env(server.data_dir), capture_output=True, text=True, timeout=120
    )


def test_accesses_are_audited_and_users_see_their_own_trail(srv: ServerProcess) -> None:
    """Reads, writes, logins and token changes leave rows naming the action, resource, outcome and source
    address; a user's trail holds only their own rows."""
    name, token = new_user(srv, "trail")
    _, other = new_user(srv, "other")
    memory = api(srv, "POST", "/v1/media", token, params={"name": "a.txt"}, content=b"hello",
                 headers={"Content-Type": "text/plain"}).json()
    assert api(srv, "GET", f"/v1/media/{memory['id']}", token).status_code == 200
    assert api(srv, "GET", f"/v1/media/{memory['id']}", other).status_code == 404
    created = api(srv, "POST", "/v1/auth/tokens", token, json={"name": "t", "scopes": ["chat"]}).json()
    assert api(srv, "DELETE", f"/v1/auth/tokens/{created['id']}", token).status_code == 204
    login = httpx.post(srv.base_url + "/v1/auth/token", json={"username": name, "password": "wrong-password"})
    assert login.status_code == 401

    trail = api(srv, "GET", "/v1/me/audit", token).json()["data"]
    actions = [(e["action"], e["outcome"], e["resource"]) for e in trail]
    assert ("GET /v1/media/{media_id}", "ok", f"media_id={memory['id']}") in actions
    assert ("POST /v1/auth/tokens", "ok", "") in actions
    assert ("DELETE /v1/auth/tokens/{token_id}", "ok", f"token_id={created['id']}") in actions
    assert ("POST /v1/auth/signup", "ok", "") in actions
    assert all(e["source"] == "127.0.0.1" for e in trail)
    seqs = [e["seq"] for e in trail]
    assert seqs == sorted(seqs, reverse=True)
    # The other user's probe of this file is in *their* trail, not this one.
    theirs = api(srv, "GET", "/v1/me/audit", other).json()["data"]
    assert any(e["action"] == "GET /v1/media/{media_id}" and e["outcome"] == "not_found" for e in theirs)
    me = api(srv, "GET", "/v1/me", token).json()["id"]
    assert not [e for e in theirs if me in (e["user_id"], e["actor_id"])]


def test_only_admins_read_the_whole_log(srv: ServerProcess) -> None:
    """The first account (admin) reads /v1/admin/audit; anyone else gets 403 whatever their token's scopes."""
    with db_as(srv, "postgres") as db:
        row = db.execute("SELECT username FROM users WHERE is_admin ORDER BY created_at LIMIT 1").fetchone()
    assert row is not None
    _, user_token = new_user(srv, "notadmin")
    assert api(srv, "GET", "/v1/admin/audit", user_token).status_code == 403
    admin_token = subprocess.run(
        [*SOMA, "users", "create", f"adm{uuid.uuid4().hex[:6]}", "--admin", "--password-stdin", "--token"],
        env=soma_env(srv.data_dir), input="admin-password-1\n", capture_output=True, text=True, timeout=120,
    ).stdout.strip().splitlines()[-1]
    r = api(srv, "GET", "/v1/admin/audit", admin_token, params={"limit": 500})
    assert r.status_code == 200, r.text
    log = r.json()["data"]
    assert len({e["user_id"] for e in log}) > 2
    assert any(e["action"] == "cli.users.create" and e["resource"] == "role=admin" for e in log)
    assert any(e["action"] == "GET /v1/admin/audit" and e["outcome"] == "denied" for e in log)


def test_the_app_role_cannot_change_audit_rows(srv: ServerProcess) -> None:
    """The role the server's pool uses may insert and read audit rows but not update, delete or truncate them."""
    new_user(srv, "role")
    with db_as(srv, "soma_app") as db:
        assert db.execute("SELECT count(*) AS n FROM audit_log").fetchone()["n"] > 0  # type: ignore[index]
        refused = ("UPDATE audit_log SET outcome = 'ok'", "DELETE FROM audit_log", "TRUNCATE audit_log",
                   "ALTER TABLE audit_log DISABLE TRIGGER ALL", "UPDATE server_keys SET wrapped = ''")
        for statement in refused:
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                db.execute(statement)
    with db_as(srv, "postgres") as db:  # triggers refuse even the owner (short of disabling them)
        with pytest.raises(psycopg.errors.RaiseException, match="append-only"):
            db.execute("DELETE FROM audit_log WHERE seq = 1")


def _tampered(srv: ServerProcess, sql: list[str], undo: list[str]) -> str:
    """Apply ``sql`` as a superuser with triggers off, run `soma audit verify`, undo; return its output."""
    with db_as(srv, "postgres") as db:
        db.execute("SET session_replication_role = replica")  # what a superuser does to get past triggers
        for statement in sql:
            db.execute(statement)
        try:
            result = verify(srv)
        finally:
            for statement in undo:
                db.execute(statement)
    assert result.returncode == 1, result.stdout + result.stderr
    return result.stdout


def test_audit_verify_names_the_first_tampered_row(srv: ServerProcess) -> None:
    """Editing, deleting, reordering rows or rewriting the chain without the key each fail verification at the
    right row; the untouched log verifies."""
    for _ in range(3):
        new_user(srv, "chain")
    ok = verify(srv)
    assert ok.returncode == 0 and "audit log intact" in ok.stdout, ok.stdout + ok.stderr
    with db_as(srv, "postgres") as db:
        rows = db.execute("SELECT * FROM audit_log ORDER BY seq LIMIT 12").fetchall()
    k = rows[5]
    out = _tampered(srv, [f"UPDATE audit_log SET outcome = 'denied' WHERE seq = {k['seq']}"],
                    [f"UPDATE audit_log SET outcome = '{k['outcome']}' WHERE seq = {k['seq']}"])
    assert f"row {k['seq']}:" in out and "edited" in out

    with db_as(srv, "postgres") as db:
        db.execute("SET session_replication_role = replica")
        db.execute("CREATE TEMP TABLE saved AS SELECT * FROM audit_log WHERE seq = %s", (k["seq"],))
        out = _tampered(srv, [f"DELETE FROM audit_log WHERE seq = {k['seq']}"], [])
        db.execute("INSERT INTO audit_log SELECT * FROM saved")
    assert f"row {k['seq']}:" in out and "missing" in out

    a, b = rows[7]["seq"], rows[8]["seq"]
    swap = [f"UPDATE audit_log SET seq = -1 WHERE seq = {a}", f"UPDATE audit_log SET seq = {a} WHERE seq = {b}",
            f"UPDATE audit_log SET seq = {b} WHERE seq = -1"]
    out = _tampered(srv, swap, swap)
    assert f"row {a}:" in out

    # An attacker who recomputes every hash after an edit still lacks the MAC key.
    edited = {**rows[9], "outcome": "denied"}
    forged = chain_hash(bytes(rows[9]["prev_hash"]), edited)
    out = _tampered(
        srv,
        [f"UPDATE audit_log SET outcome = 'denied', hash = '\\x{forged.hex()}' WHERE seq = {rows[9]['seq']}",
         f"UPDATE audit_log SET prev_hash = '\\x{forged.hex()}' WHERE seq = {rows[10]['seq']}"],
        [f"UPDATE audit_log SET outcome = '{rows[9]['outcome']}', hash = '\\x{bytes(rows[9]['hash']).hex()}'"
         f" WHERE seq = {rows[9]['seq']}",
         f"UPDATE audit_log SET prev_hash = '\\x{bytes(rows[10]['prev_hash']).hex()}' WHERE seq = {rows[10]['seq']}"],
    )
    assert f"row {rows[9]['seq']}:" in out and "MAC" in out
    assert verify(srv).returncode == 0


def test_media_is_sealed_on_disk_streamed_back_and_limited(srv: ServerProcess) -> None:
    """A multi-chunk upload is stored sealed (no plaintext on disk), downloads byte-identical, a flipped byte
    on disk makes the download fail instead of returning altered data, and oversized uploads get 413."""
    _, token = new_user(srv, "media")
    data = os.urandom(700_000) + b"ZqMediaPlaintextMarker" * 1000
    r = api(srv, "POST", "/v1/media", token, params={"name": "holiday video.mp4"}, content=data,
            headers={"Content-Type": "video/mp4"})
    assert r.status_code == 201, r.text
    media = r.json()
    assert media["size"] == len(data) and media["name"] == "holiday video.mp4"
    (path,) = (srv.data_dir / "media").rglob(f"{media['id']}.sealed")
    assert b"ZqMediaPlaintextMarker" not in path.read_bytes() and oct(path.stat().st_mode)[-3:] == "600"
    got = api(srv, "GET", f"/v1/media/{media['id']}/content", token)
    assert got.status_code == 200 and hashlib.sha256(got.content).digest() == hashlib.sha256(data).digest()
    assert got.headers["content-type"] == "video/mp4" and "holiday%20video.mp4" in got.headers["content-disposition"]

    sealed = bytearray(path.read_bytes())
    sealed[len(sealed) // 2] ^= 0x01
    path.write_bytes(bytes(sealed))
    try:
        got = api(srv, "GET", f"/v1/media/{media['id']}/content", token)
        delivered = got.status_code == 200 and got.content == bytes(data)
    except httpx.HTTPError:  # the stream is cut at the chunk that fails to open
        delivered = False
    assert not delivered
    assert "integrity" in srv.log_text() or "does not authenticate" in srv.log_text()

    too_big = api(srv, "POST", "/v1/media", token, params={"name": "big.bin"}, content=os.urandom(MEDIA_LIMIT + 1))
    assert too_big.status_code == 413
    assert len(api(srv, "GET", "/v1/media", token).json()["data"]) == 1  # nothing of the refused upload kept
    assert not list((srv.data_dir / "media").rglob("*.part"))
    bad_type = api(srv, "POST", "/v1/media", token, params={"name": "x"}, content=b"x", headers={"Content-Type": "??"})
    assert bad_type.status_code == 400


def test_share_links_open_without_an_account_until_revoked(srv: ServerProcess) -> None:
    """A share link streams the file to anyone holding it; a forged or revoked one is a 404; another user
    cannot share or revoke someone else's file or link."""
    _, token = new_user(srv, "share")
    _, other = new_user(srv, "nosy")
    media = api(srv, "POST", "/v1/media", token, params={"name": "p.txt"}, content=b"shared words",
                headers={"Content-Type": "text/plain"}).json()
    assert api(srv, "POST", "/v1/share-links", other, json={"media_id": media["id"]}).status_code == 404
    link = api(srv, "POST", "/v1/share-links", token, json={"media_id": media["id"], "expires_in": 3600}).json()
    opened = httpx.get(srv.base_url + link["url"])
    assert opened.status_code == 200 and opened.content == b"shared words"
    forged = link["token"][:-3] + ("AAA" if not link["token"].endswith("AAA") else "BBB")
    assert httpx.get(srv.base_url + f"/v1/shared/{forged}").status_code == 404
    assert api(srv, "DELETE", f"/v1/share-links/{link['id']}", other).status_code == 404
    assert api(srv, "DELETE", f"/v1/share-links/{link['id']}", token).status_code == 204
    assert httpx.get(srv.base_url + link["url"]).status_code == 404
    listed = api(srv, "GET", "/v1/share-links", token).json()["data"]
    assert listed[0]["revoked_at"] is not None
    # The owner's trail shows the link being opened, by link id; no token is written to the log or the trail.
    trail = api(srv, "GET", "/v1/me/audit", token).json()["data"]
    opened = [e for e in trail if e["action"] == "GET /v1/shared/{token}"]
    assert opened and opened[-1]["resource"] == f"share_link={link['id']}" and opened[-1]["actor_id"] is None
    with db_as(srv, "postgres") as db:
        assert not db.execute("SELECT 1 FROM audit_log WHERE resource LIKE %s", (f"%{link['token']}%",)).fetchall()
    assert link["token"] not in srv.log_text() and forged not in srv.log_text()


def test_nothing_is_served_when_the_audit_row_cannot_be_written(srv: ServerProcess) -> None:
    """With audit inserts failing, a data request gets 503 audit_unavailable and none of the data; once the
    log is writable again, the same request is served."""
    _, token = new_user(srv, "failclosed")
    media = api(srv, "POST", "/v1/media", token, params={"name": "s.txt"}, content=b"ZqUnauditedSecret",
                headers={"Content-Type": "text/plain"}).json()
    with db_as(srv, "postgres") as db:
        db.execute("REVOKE INSERT ON audit_log FROM soma_app")
        try:
            r = api(srv, "GET", f"/v1/media/{media['id']}/content", token)
            assert r.status_code == 503 and r.json()["error"]["code"] == "audit_unavailable"
            assert b"ZqUnauditedSecret" not in r.content
        finally:
            db.execute("GRANT INSERT ON audit_log TO soma_app")
    assert api(srv, "GET", f"/v1/media/{media['id']}/content", token).content == b"ZqUnauditedSecret"
