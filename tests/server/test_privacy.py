"""Encryption at rest, export and erasure, on a real server (ci models, embedded Postgres+pgvector, Redis).

Canary strings told to the avatar, written as memories, uploaded as a file and held in a live session never
appear in plaintext in any file of the data directory (Postgres tables and WAL after a CHECKPOINT, Redis's dump,
the media directory) or in the debug log, while their owner still reads them through the API. A ciphertext
moved to another row fails loudly; the export holds everything; erasure leaves nothing readable behind.
"""

from __future__ import annotations

import asyncio
import io
import json
import uuid
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
import redis

from tests.conftest import ServerProcess, new_user, start_server
from tests.eventually import eventually
from tests.server.test_audit import db_as
from tests.server.test_live_sessions import text_turns
from tests.server_api import api
from voice_server.privacy.export import EXPORTED_TABLES, NOT_EXPORTED

pytestmark = pytest.mark.timeout(600)


@pytest.fixture(scope="module")
def srv(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """A server of its own (its data dir is scanned byte by byte), debug logging, ci models."""
    server = start_server(
        tmp_path_factory.mktemp("privacy"), models=True, SOMA_SIGNUP="open", SOMA_LOG_LEVEL="debug", timeout=180
    )
    yield server
    server.stop()


def admin_db(server: ServerProcess) -> psycopg.Connection[dict[str, Any]]:
    """The database owner (a superuser), as an operator or an attacker with the data files would be."""
    return db_as(server, "postgres")


def chat(server: ServerProcess, token: str, text: str) -> None:
    body = {"model": "soma", "messages": [{"role": "user", "content": text}], "max_tokens": 12}
    assert api(server, "POST", "/v1/chat/completions", token, json=body).status_code == 200


def wait_memories(server: ServerProcess, token: str, at_least: int) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = eventually(
        lambda: api(server, "GET", "/v1/memories", token).json()["data"], until=lambda ms: len(ms) >= at_least,
        timeout_s=60, interval=0.3, what=f"{at_least} memories")
    return found


def plant(server: ServerProcess, token: str, tag: str) -> dict[str, str]:
    """Put one canary in each place private data goes; return them by place (with the media bytes' id)."""
    canaries = {
        "turn": f"Zq{tag}TurnAlpha",
        "memory": f"Zq{tag}MemoryBravo",
        "subject": f"zq{tag}subject",
        "media": f"Zq{tag}MediaEcho",
        "media_name": f"Zq{tag}NameDelta",
        "live": f"Zq{tag}LiveFoxtrot",
    }
    chat(server, token, f"My sister is called {canaries['turn']}.")
    r = api(server, "POST", "/v1/memories", token,
            json={"text": f"I hide a {canaries['memory']} under my bed.", "subject": canaries["subject"]})
    assert r.status_code == 201, r.text
    payload = (canaries["media"] + " ").encode() * 40_000  # ~600 kB: several sealed chunks
    r = api(server, "POST", "/v1/media", token, params={"name": f"{canaries['media_name']}.txt"}, content=payload,
            headers={"Content-Type": "text/plain"})
    assert r.status_code == 201, r.text
    canaries["media_id"] = r.json()["id"]
    asyncio.run(text_turns(server, token, [f"The code word is {canaries['live']}."]))
    wait_memories(server, token, at_least=2)  # the hand-written one and one learned from the chat turn
    return canaries


def flush_to_disk(server: ServerProcess) -> None:
    """Make Postgres and Redis write what they hold in memory to their files."""
    with admin_db(server) as db:
        db.execute("CHECKPOINT")
    redis.Redis.from_url(server.redis_url).save()


def files_containing(root: Path, needles: list[bytes]) -> dict[str, list[str]]:
    """Every file under ``root`` that contains any needle, as {needle: [paths]}."""
    hits: dict[str, list[str]] = {}
    for path in root.rglob("*"):
        if not path.is_file() or path.is_symlink():
            continue
        try:
            data = path.read_bytes()
        except OSError:
            continue
        for needle in needles:
            if needle in data:
                hits.setdefault(needle.decode(), []).append(str(path.relative_to(root)))
    return hits


def test_canaries_never_reach_disk_or_logs_in_clear(srv: ServerProcess) -> None:
    """No canary is found in any data file (tables, WAL, Redis dump, media) or the log; the owner reads them all."""
    _, token = new_user(srv, "canary")
    canaries = plant(srv, token, "A")
    flush_to_disk(srv)
    secrets_ = [v for k, v in canaries.items() if k != "media_id"]
    needles = [s.encode() for s in secrets_] + [s.lower().encode() for s in secrets_]
    assert files_containing(srv.data_dir, needles) == {}
    log = srv.log_text().lower()
    assert not [s for s in secrets_ if s.lower() in log]
    assert token not in srv.log_text()

    conversations = api(srv, "GET", "/v1/conversations", token).json()["data"]
    turns = [t for c in conversations for t in api(srv, "GET", f"/v1/conversations/{c['id']}", token).json()["turns"]]
    assert any(canaries["turn"] in t["user_text"] for t in turns)
    assert any(canaries["live"] in t["user_text"] for t in turns)
    assert any(canaries["turn"] in c["preview"] for c in conversations)
    mems = api(srv, "GET", "/v1/memories", token).json()["data"]
    assert any(canaries["memory"] in m["text"] and m["subject"] == canaries["subject"] for m in mems)
    assert any(canaries["turn"] in m["text"] for m in mems)  # learned from the conversation, sealed too
    media = api(srv, "GET", f"/v1/media/{canaries['media_id']}", token).json()
    assert media["name"] == f"{canaries['media_name']}.txt"
    content = api(srv, "GET", f"/v1/media/{canaries['media_id']}/content", token)
    assert content.status_code == 200 and content.content == (canaries["media"] + " ").encode() * 40_000


def test_a_ciphertext_moved_to_another_row_fails_loudly(srv: ServerProcess) -> None:
    """Copying a sealed memory into another user's row (or another row of the same user) yields a 500 with no
    data, never the other row's plaintext; the untouched rows still read."""
    _, alice = new_user(srv, "alice")
    _, bob = new_user(srv, "bob")
    ids = {}
    for who, token, text in [("alice", alice, "Alice's secret is ZqSwapKilo."), ("bob", bob, "Bob likes tea."),
                             ("alice2", alice, "Alice also likes maps.")]:
        r = api(srv, "POST", "/v1/memories", token, json={"text": text})
        assert r.status_code == 201, r.text
        ids[who] = r.json()["id"]
    with admin_db(srv) as db:
        for target in ("bob", "alice2"):
            db.execute("UPDATE memories SET text = (SELECT text FROM memories WHERE id = %s) WHERE id = %s",
                       (ids["alice"], ids[target]))
    for target, token in (("bob", bob), ("alice2", alice)):
        r = api(srv, "GET", f"/v1/memories/{ids[target]}", token)
        assert r.status_code == 500 and r.json()["error"]["code"] == "data_integrity"
        assert "ZqSwapKilo" not in r.text
        listing = api(srv, "GET", "/v1/memories", token)
        assert listing.status_code == 500 and "ZqSwapKilo" not in listing.text
    assert "ZqSwapKilo" in api(srv, "GET", f"/v1/memories/{ids['alice']}", alice).json()["text"]
    assert "integrity check" in srv.log_text()


def jsonl(archive: zipfile.ZipFile, name: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in archive.read(name).decode().splitlines()]


def _user_tables(db: psycopg.Connection[dict[str, Any]]) -> set[str]:
    cur = db.execute(
        "SELECT table_name FROM information_schema.columns WHERE table_schema = 'public' AND column_name = 'user_id'"
    )
    return {row["table_name"] for row in cur.fetchall()} | {"users"}


def test_export_holds_everything_stored_about_the_user(srv: ServerProcess) -> None:
    """The archive's counts match the database table by table, its texts are decrypted, its file is
    byte-identical, and every table with user data is covered (a new table must join the export)."""
    _, token = new_user(srv, "export")
    canaries = plant(srv, token, "X")
    r = api(srv, "POST", "/v1/share-links", token, json={"media_id": canaries["media_id"]})
    assert r.status_code == 201
    line = {"extension": "4711", "allowed_callers": ["+4930999888"]}
    assert api(srv, "PUT", "/v1/sip/line", token, json=line).status_code == 200
    settings = {"timezone": "Europe/Lisbon", "morning_time": "07:30"}
    assert api(srv, "PUT", "/v1/proactive/settings", token, json=settings).status_code == 200
    archive_bytes = api(srv, "GET", "/v1/me/export", token)
    assert archive_bytes.status_code == 200, archive_bytes.text
    assert archive_bytes.headers["content-type"] == "application/zip"
    archive = zipfile.ZipFile(io.BytesIO(archive_bytes.content))
    manifest = json.loads(archive.read("manifest.json"))
    user_id = uuid.UUID(manifest["user_id"])
    with admin_db(srv) as db:
        tables = _user_tables(db)
        assert tables == set(EXPORTED_TABLES) | set(NOT_EXPORTED), "a table with user data is not in the export"
        for table in EXPORTED_TABLES:
            if table == "users":
                continue
            where = "user_id = %s OR actor_id = %s" if table == "audit_log" else "user_id = %s"
            params = (user_id, user_id) if table == "audit_log" else (user_id,)
            count = db.execute(f"SELECT count(*) AS n FROM {table} WHERE {where}", params).fetchone()  # noqa: S608
            assert count is not None
            # The export's own request is audited as its response starts, before the archive is built.
            assert manifest["tables"][table] == count["n"], table
    conversations = json.loads(archive.read("conversations.json"))
    turns = jsonl(archive, "turns.jsonl")
    assert {t["conversation_id"] for t in turns} <= {c["id"] for c in conversations}
    texts = [t["user_text"] for t in turns]
    assert any(canaries["turn"] in t for t in texts) and any(canaries["live"] in t for t in texts)
    memories = jsonl(archive, "memories.jsonl")
    assert any(canaries["memory"] in m["text"] for m in memories) and len(memories[0]["embedding"]) == 384
    account = json.loads(archive.read("account.json"))
    assert "password_hash" not in json.dumps(account) and "token_hash" not in json.dumps(account)
    assert account["sip_line"] == line
    assert account["user"]["timezone"] == "Europe/Lisbon" and manifest["format"] == 3  # the account's, since 0010
    (proactive,) = jsonl(archive, "proactive_settings.jsonl")
    assert proactive["morning_time"] == "07:30:00" and "timezone" not in proactive
    with admin_db(srv) as db:  # the caller allow-list (people's phone numbers) is sealed at rest
        row = db.execute("SELECT allowed_callers FROM sip_lines WHERE user_id = %s", (user_id,)).fetchone()
        assert row is not None and b"4930999888" not in bytes(row["allowed_callers"])
    (media,) = json.loads(archive.read("media.json"))
    assert archive.read(media["path"]) == (canaries["media"] + " ").encode() * 40_000
    assert len(json.loads(archive.read("share_links.json"))) == 1
    trail = jsonl(archive, "audit.jsonl")
    assert all(e["source"] == "127.0.0.1" for e in trail if e["action"].startswith(("GET", "POST")))
    assert any(e["action"] == "POST /v1/media" for e in trail)
    assert any(e["action"] == "WS /v1/realtime" and e["status"] == 101 for e in trail)  # the live session


def test_a_scoped_token_cannot_export_or_erase(srv: ServerProcess) -> None:
    """Export and erasure need a full-access token (erasure also the username as confirmation); a
    ``memories:read`` token reads memories and conversations but changes nothing and sees no files."""
    name, token = new_user(srv, "scoped")
    r = api(srv, "POST", "/v1/auth/tokens", token, json={"name": "chat only", "scopes": ["chat"]})
    assert r.status_code == 201, r.text
    chat_token = r.json()["token"]
    assert api(srv, "GET", "/v1/me/export", chat_token).status_code == 403
    assert api(srv, "DELETE", "/v1/me", chat_token, params={"confirm": name}).status_code == 403
    r = api(srv, "DELETE", "/v1/me", token, params={"confirm": name + "x"})
    assert r.status_code == 400 and r.json()["error"]["code"] == "confirmation_required"
    assert api(srv, "GET", "/v1/me", token).status_code == 200
    r = api(srv, "POST", "/v1/auth/tokens", token, json={"name": "reader", "scopes": ["memories:read"]})
    reader = r.json()["token"]
    assert api(srv, "GET", "/v1/memories", reader).status_code == 200
    assert api(srv, "GET", "/v1/conversations", reader).status_code == 200
    assert api(srv, "POST", "/v1/memories", reader, json={"text": "I like tea."}).status_code == 403
    assert api(srv, "GET", "/v1/media", reader).status_code == 403


def test_erasure_leaves_nothing_readable_and_spares_others(srv: ServerProcess) -> None:
    """After DELETE /v1/me: no row, file, Redis key or data key of the user remains; the audit log keeps one
    pseudonymous erasure record; another user's data is untouched and readable."""
    name, token = new_user(srv, "erase")
    _, other = new_user(srv, "keep")
    canaries = plant(srv, token, "E")
    kept = plant(srv, other, "K")
    user_id = uuid.UUID(api(srv, "GET", "/v1/me", token).json()["id"])
    wrong = api(srv, "POST", "/v1/auth/token", None, json={"username": name, "password": "not-the-password"})
    assert wrong.status_code == 401  # leaves login counters keyed by the username in Redis
    conversation_ids = [c["id"] for c in api(srv, "GET", "/v1/conversations", token).json()["data"]]

    assert api(srv, "DELETE", "/v1/me", token, params={"confirm": name}).status_code == 204
    assert api(srv, "GET", "/v1/me", token).status_code == 401
    with admin_db(srv) as db:
        for table in _user_tables(db) - {"audit_log"}:
            column = "id" if table == "users" else "user_id"
            row = db.execute(f"SELECT count(*) AS n FROM {table} WHERE {column} = %s", (user_id,)).fetchone()  # noqa: S608
            assert row is not None and row["n"] == 0, table
        audit = db.execute("SELECT action, source FROM audit_log WHERE user_id = %s", (user_id,)).fetchall()
        erasures = [a for a in audit if a["action"] == "account.erase"]
        assert len(erasures) == 1 and erasures[0]["source"] is None
    assert not (srv.data_dir / "media" / str(user_id)).exists()
    store = redis.Redis.from_url(srv.redis_url)
    assert not [c for c in conversation_ids if store.exists(f"session:sess_{uuid.UUID(c).hex}")]
    assert store.keys(f"*{name}*") == []  # no rate-limit, failure or lockout key names the erased account
    flush_to_disk(srv)
    needles = [v.encode() for k, v in canaries.items() if k != "media_id"]
    assert files_containing(srv.data_dir, needles) == {}

    mems = api(srv, "GET", "/v1/memories", other).json()["data"]
    assert any(kept["memory"] in m["text"] for m in mems)
    content = api(srv, "GET", f"/v1/media/{kept['media_id']}/content", other)
    assert content.status_code == 200 and kept["media"].encode() in content.content
    other_id = api(srv, "GET", "/v1/me", other).json()["id"]
    trail = api(srv, "GET", "/v1/me/audit", other).json()["data"]
    assert trail and all(str(user_id) not in (e["user_id"], e["actor_id"]) for e in trail)
    assert all(other_id in (e["user_id"], e["actor_id"]) for e in trail)
