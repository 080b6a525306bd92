"""Imports on a real server (ci models, embedded Postgres+pgvector): upload and CLI, sealed at rest,
idempotent, transactional, with progress events, memories, export and erasure."""

from __future__ import annotations

import io
import json
import subprocess
import time
import uuid
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.avatar import import_fixtures as fx
from tests.conftest import REPO, SOMA, ServerProcess, new_user, soma_env, start_server
from tests.eventually import eventually
from tests.server.test_privacy import admin_db, files_containing, flush_to_disk
from tests.server_api import api, auth

pytestmark = [pytest.mark.timeout(600), pytest.mark.models]
ME = "Me Myself"
NAME = "WhatsApp Chat with Ana Souza.txt"


@pytest.fixture(scope="module")
def srv(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """A server of its own (its data dir is scanned for canaries), ci models."""
    server = start_server(tmp_path_factory.mktemp("imports"), models=True, SOMA_SIGNUP="open", timeout=180)
    yield server
    server.stop()


def export_file(tmp: Path, canary: str, messages: int = 3000) -> bytes:
    """A WhatsApp Android export: ``messages`` generated lines, then the user's own fact naming ``canary``."""
    path = tmp / f"chat-{uuid.uuid4().hex}.txt"
    fx.whatsapp_android_stream(path, messages)
    with path.open("a", encoding="utf-8") as out:
        out.write(f"03/03/2030, 10:00 - {ME}: My sister {canary} lives in Porto.\n")
        out.write(f"03/03/2030, 10:02 - Ana Souza: Say hi to {canary} from me 😊\n")
    return path.read_bytes()


def upload(srv: ServerProcess, token: str, body: bytes) -> dict[str, Any]:
    r = api(srv, "POST", "/v1/imports", token, params={"me": ME, "name": NAME}, content=body)
    assert r.status_code == 202, r.text
    row: dict[str, Any] = r.json()
    assert row["status"] in ("queued", "running", "done")
    return row


def follow(srv: ServerProcess, token: str, import_id: str) -> tuple[list[dict[str, Any]], str, dict[str, Any]]:
    """Read the SSE stream to its end: (progress events, final event name, final import)."""
    progress: list[dict[str, Any]] = []
    kind = ""
    url = f"{srv.base_url}/v1/imports/{import_id}/events"
    with httpx.stream("GET", url, headers=auth(token), timeout=120) as r:
        assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
        for line in r.iter_lines():
            if line.startswith("event: "):
                kind = line[len("event: ") :]
            elif line.startswith("data: "):
                data = json.loads(line[len("data: ") :])
                if kind == "progress":
                    progress.append(data)
                else:
                    return progress, kind, data
    raise AssertionError("the event stream ended without a final event")


def user_id_of(srv: ServerProcess, token: str) -> uuid.UUID:
    return uuid.UUID(api(srv, "GET", "/v1/me", token).json()["id"])


def stored(srv: ServerProcess, user_id: uuid.UUID) -> int:
    with admin_db(srv) as db:
        row = db.execute("SELECT count(*) AS n FROM imported_messages WHERE user_id = %s", (user_id,)).fetchone()
    assert row is not None
    return int(row["n"])


def test_an_old_imported_fact_never_replaces_a_newer_one(srv: ServerProcess) -> None:
    """Issue 20: a memory carries the time it was said; a 2023 chat saying where the sister lived is kept as the
    history of what the user has said since, not put over it."""
    _, token = new_user(srv, "old-news")
    r = api(srv, "POST", "/v1/memories", token, json={"text": "My sister Ana lives in Lisbon.", "subject": "ana"})
    assert r.status_code == 201, r.text
    lisbon = r.json()
    chat = (f"12/05/2023, 18:04 - Ana Souza: How are you?\n"
            f"12/05/2023, 18:05 - {ME}: My sister Ana lives in Porto.\n").encode()
    _, kind, final = follow(srv, token, upload(srv, token, chat)["id"])
    assert kind == "done" and final["memories"] == 1, final
    everything = api(srv, "GET", "/v1/memories", token, params={"include_superseded": "true"}).json()["data"]
    porto = next(m for m in everything if "Porto" in m["text"])
    assert porto["said_at"].startswith("2023-05-12T18:05") and porto["superseded_by"] == lisbon["id"], porto
    assert [m["text"] for m in api(srv, "GET", "/v1/memories", token).json()["data"]] == [lisbon["text"]]


def test_upload_is_sealed_reported_idempotent_remembered_and_exported(srv: ServerProcess, tmp_path: Path) -> None:
    """An uploaded export is stored sealed (no canary on disk), reports progress and counts, makes the
    user's own fact a searchable memory, adds nothing when uploaded again, and is all in the export."""
    _, token = new_user(srv, "imp")
    canary = "Zqimportcanary"
    body = export_file(tmp_path, canary)
    row = upload(srv, token, body)
    progress, kind, final = follow(srv, token, row["id"])
    assert kind == "done", final
    assert progress and all(p["read"] <= final["read"] for p in progress)
    assert final["read"] == 3002 and final["created"] == 3002 and final["memories"] >= 1
    assert final["format"] == "whatsapp" and final["name"] == NAME and final["bytes_total"] == len(body)
    user_id = user_id_of(srv, token)
    assert stored(srv, user_id) == 3002

    found = api(srv, "GET", "/v1/memories/search", token, params={"q": "where does my sister live"}).json()["data"]
    assert any(canary in m["text"] for m in found[:3]), found
    assert all(m["source"] == "import" for m in found if canary in m["text"])
    # Dated by the message it came from, not by the import (issue 20).
    assert all(m["said_at"].startswith("2030-03-03T10:00") for m in found if canary in m["text"]), found

    again = upload(srv, token, body)
    _, kind, final2 = follow(srv, token, again["id"])
    assert kind == "done" and final2["read"] == 3002 and final2["created"] == 0 and final2["memories"] == 0
    assert stored(srv, user_id) == 3002
    listed = api(srv, "GET", "/v1/imports", token).json()["data"]
    assert [i["id"] for i in listed] == [again["id"], row["id"]]

    flush_to_disk(srv)
    assert files_containing(srv.data_dir, [canary.encode(), canary.lower().encode(), NAME.encode()]) == {}
    assert not list((srv.data_dir / "imports").rglob("*.sealed"))  # uploads are deleted after their job

    archive = zipfile.ZipFile(io.BytesIO(api(srv, "GET", "/v1/me/export", token).content))
    manifest = json.loads(archive.read("manifest.json"))
    assert manifest["tables"]["imported_messages"] == 3002 and manifest["tables"]["imports"] == 2
    messages = [json.loads(line) for line in archive.read("imported_messages.jsonl").splitlines()]
    assert any(m["text"] == f"My sister {canary} lives in Porto." and m["is_user"] for m in messages)
    assert {i["name"] for i in (json.loads(x) for x in archive.read("imports.jsonl").splitlines())} == {NAME}


def test_a_file_corrupt_mid_way_keeps_nothing_and_says_why(srv: ServerProcess, tmp_path: Path) -> None:
    """Binary junk after thousands of good lines: the import fails with a clear error and stores nothing."""
    _, token = new_user(srv, "bad")
    body = export_file(tmp_path, "Zqcorrupt", 4000)
    cut = len(body) // 2
    body = body[:cut] + b"\n\xff\xfe\x00\x81 junk\n" + body[cut:]
    row = upload(srv, token, body)
    _, kind, final = follow(srv, token, row["id"])
    assert kind == "failed" and final["status"] == "failed"
    assert "line" in final["error"] and final["created"] == 0
    assert stored(srv, user_id_of(srv, token)) == 0
    assert api(srv, "GET", "/v1/memories", token).json()["data"] == []
    with admin_db(srv) as db:  # the reason may quote the file: sealed like the rest
        sealed = db.execute("SELECT error FROM imports WHERE id = %s", (row["id"],)).fetchone()
    assert sealed is not None and bytes(sealed["error"])[:1] == b"\x01"


def test_a_name_that_is_nobody_in_the_chat_keeps_nothing_and_lists_the_participants(
    srv: ServerProcess, tmp_path: Path
) -> None:
    """``me`` must be one of the chat's senders: otherwise nothing would be the user's own (no memories, no
    persona), so the import fails, keeps nothing, and names the participants the user can choose from."""
    _, token = new_user(srv, "who")
    r = api(srv, "POST", "/v1/imports", token, params={"me": "Somebody Else", "name": NAME},
            content=export_file(tmp_path, "Zqnobody", 50))
    assert r.status_code == 202, r.text
    _, kind, final = follow(srv, token, r.json()["id"])
    assert kind == "failed" and final["created"] == 0, final
    assert "somebody else" in final["error"] and f"{ME} (" in final["error"] and "Ana Souza (" in final["error"]
    assert stored(srv, user_id_of(srv, token)) == 0


def test_the_avatar_answers_from_an_imported_fact(srv: ServerProcess, tmp_path: Path) -> None:
    """End to end: import a chat export, then ask the avatar in text about a fact in it. The fact became a
    memory and that memory is recalled into the reply's context (recall stamps it)."""
    _, token = new_user(srv, "ask")
    row = upload(srv, token, export_file(tmp_path, "Zqmira", 200))
    _, kind, final = follow(srv, token, row["id"])
    assert kind == "done" and final["memories"] >= 1, final
    (fact,) = [m for m in api(srv, "GET", "/v1/memories", token).json()["data"] if "Zqmira" in m["text"]]
    assert fact["recall_count"] == 0
    body = {"model": "soma", "messages": [{"role": "user", "content": "Where does my sister Zqmira live?"}],
            "max_tokens": 24}
    r = api(srv, "POST", "/v1/chat/completions", token, json=body)
    assert r.status_code == 200, r.text
    # Recall stamps are written in the background, off the reply's path.
    got = eventually(lambda: api(srv, "GET", f"/v1/memories/{fact['id']}", token).json(),
                     until=lambda m: m["recall_count"] >= 1, timeout_s=30, what="the recall stamp")
    assert got["last_recalled_at"], got


def test_what_the_other_person_said_is_evidence_with_its_speaker_and_date(srv: ServerProcess) -> None:
    """Issue 20 over HTTP: every imported message of both speakers is searchable evidence once indexed
    (``GET /v1/memories/index``), with who said it and when; the best messages bring their neighbours; a name
    never mentioned is listed as unknown; bad queries are 400s, anonymous ones 401, another user sees none."""
    _, token = new_user(srv, "evidence")
    chat = (f"01/03/2023, 10:00 - {ME}: any news?\n"
            "01/03/2023, 10:01 - Ana Souza: Guess what, my brother Tomas got the job in Berlin!\n"
            f"01/03/2023, 10:02 - {ME}: amazing, tell him congrats\n").encode()
    _, kind, _ = follow(srv, token, upload(srv, token, chat)["id"])
    assert kind == "done"
    index = eventually(lambda: api(srv, "GET", "/v1/memories/index", token).json(),
                       until=lambda i: i["pending"] == 0, timeout_s=60, what="the messages indexed")
    assert index["indexed"] == 3
    r = api(srv, "GET", "/v1/memories/evidence", token, params={"q": "Where did Tomas get a job?", "limit": 5})
    assert r.status_code == 200, r.text
    assert "search;dur=" in r.headers["Server-Timing"]
    best = r.json()["data"][0]
    assert best["object"] == "message" and "Berlin" in best["text"] and best["relevant"] is True
    assert best["speaker"] == "Ana Souza" and best["is_user"] is False and best["source"] == "import"
    assert best["said_at"].startswith("2023-03-01T10:01")
    assert [c["text"] for c in best["context"]] == ["any news?", "amazing, tell him congrats"]
    # (The unknown-name note needs a history of some length: three messages are too few to be sure.)
    _, other = new_user(srv, "evidence-other")
    assert api(srv, "GET", "/v1/memories/evidence", other, params={"q": "Where did Tomas get a job?"}).json()[
        "data"] == []
    for params in ({"q": ""}, {"q": "x" * 2001}, {"q": "x", "limit": 0}, {"q": "x", "limit": 51}, {}):
        assert api(srv, "GET", "/v1/memories/evidence", token, params=params).status_code == 400, params
    assert httpx.get(srv.base_url + "/v1/memories/evidence", params={"q": "x"}).status_code == 401
    assert httpx.get(srv.base_url + "/v1/memories/index").status_code == 401


def test_unknown_format_and_scopes_are_refused(srv: ServerProcess) -> None:
    """A bad ``format`` is a 400; a read-only token cannot import; another user's import is a 404."""
    _, token = new_user(srv, "scope")
    r = api(srv, "POST", "/v1/imports", token, params={"me": ME, "name": "x.txt", "format": "fax"}, content=b"x")
    assert r.status_code == 400
    reader = api(srv, "POST", "/v1/auth/tokens", token, json={"name": "r", "scopes": ["memories:read"]}).json()
    r = api(srv, "POST", "/v1/imports", reader["token"], params={"me": ME, "name": "x.txt"}, content=b"x")
    assert r.status_code == 403
    row = upload(srv, token, b"01/01/2024, 10:00 - Me Myself: hello there\n")
    _, other = new_user(srv, "other")
    assert api(srv, "GET", f"/v1/imports/{row['id']}", other).status_code == 404
    assert api(srv, "GET", f"/v1/imports/{row['id']}/events", other).status_code == 404


def test_cli_imports_with_a_report_and_again_adds_nothing(srv: ServerProcess, tmp_path: Path) -> None:
    """``soma import FILE --me NAME --user U`` next to the running server stores the file (progress on
    stderr), and a second run reports 0 new."""
    name, token = new_user(srv, "cli")
    path = tmp_path / NAME
    path.write_bytes(export_file(tmp_path, "Zqclicanary", 1500))
    env = soma_env(srv.data_dir, **srv.env)
    args = [*SOMA, "import", str(path), "--me", ME, "--user", name]
    first = subprocess.run(args, env=env, cwd=REPO, capture_output=True, text=True, timeout=300)
    assert first.returncode == 0, first.stderr
    assert "1502 messages read, 1502 new" in first.stderr and "100%" in first.stderr
    second = subprocess.run(args, env=env, cwd=REPO, capture_output=True, text=True, timeout=300)
    assert second.returncode == 0 and "1502 messages read, 0 new" in second.stderr, second.stderr
    assert stored(srv, user_id_of(srv, token)) == 1502
    assert [i["status"] for i in api(srv, "GET", "/v1/imports", token).json()["data"]] == ["done", "done"]
    bad = tmp_path / "junk.json"
    bad.write_bytes(b'{"messages": [')
    args = [*SOMA, "import", str(bad), "--me", ME, "--user", name]
    third = subprocess.run(args, env=env, cwd=REPO, capture_output=True, text=True, timeout=300)
    assert third.returncode == 1 and "nothing imported" in third.stderr


def test_erasure_removes_imports_and_stops_a_running_one(srv: ServerProcess, tmp_path: Path) -> None:
    """Erasing the account removes its imports and imported messages, and stops its import in progress
    (rolled back) instead of waiting for it."""
    name, token = new_user(srv, "gone")
    row = upload(srv, token, export_file(tmp_path, "Zqerased", 200))
    assert follow(srv, token, row["id"])[1] == "done"
    user_id = user_id_of(srv, token)
    running = upload(srv, token, export_file(tmp_path, "Zqerasedtoo", 100_000))
    with httpx.stream("GET", f"{srv.base_url}/v1/imports/{running['id']}/events", headers=auth(token),
                      timeout=120) as r:
        next(line for line in r.iter_lines() if line.startswith("data: ") and json.loads(line[6:])["read"] > 0)
    started = time.monotonic()
    assert api(srv, "DELETE", "/v1/me", token, params={"confirm": name}).status_code == 204
    assert time.monotonic() - started < 3, "the erasure waited for the import"
    with admin_db(srv) as db:
        for table in ("imports", "imported_messages"):
            n = db.execute(f"SELECT count(*) AS n FROM {table} WHERE user_id = %s", (user_id,)).fetchone()  # noqa: S608
            assert n is not None and n["n"] == 0


def test_the_owner_can_stop_a_running_or_waiting_import(srv: ServerProcess, tmp_path: Path) -> None:
    """``POST /v1/imports/{id}/cancel`` stops a running import (rolled back) and drops a waiting one: both end
    ``failed`` with the owner's reason and keep nothing; an ended import is a 409, another user's a 404."""
    _, token = new_user(srv, "stop")
    _, other = new_user(srv, "nosy")
    running = upload(srv, token, export_file(tmp_path, "Zqstopped", 100_000))
    waiting = upload(srv, token, export_file(tmp_path, "Zqwaiting", 100_000))
    with httpx.stream("GET", f"{srv.base_url}/v1/imports/{running['id']}/events", headers=auth(token),
                      timeout=120) as r:
        next(line for line in r.iter_lines() if line.startswith("data: ") and json.loads(line[6:])["read"] > 0)
    assert api(srv, "POST", f"/v1/imports/{running['id']}/cancel", other).status_code == 404
    for row in (waiting, running):  # the waiting one first: it must not start when the running one ends
        r = api(srv, "POST", f"/v1/imports/{row['id']}/cancel", token)
        assert r.status_code == 200, r.text
        assert r.json()["status"] == "failed" and r.json()["error"].startswith("cancelled: you stopped"), r.json()
    for row in (running, waiting):
        _, kind, final = follow(srv, token, row["id"])
        assert kind == "failed" and final["error"].startswith("cancelled: you stopped") and final["created"] == 0
    assert stored(srv, user_id_of(srv, token)) == 0
    again = api(srv, "POST", f"/v1/imports/{running['id']}/cancel", token)
    assert again.status_code == 409 and again.json()["error"]["code"] == "import_finished"
    after = upload(srv, token, export_file(tmp_path, "Zqafter", 100))  # the worker is free for the next one
    assert follow(srv, token, after["id"])[1] == "done"


@pytest.mark.parametrize("how", ["stop", "kill"])
def test_a_server_stopped_mid_import_keeps_nothing_and_reports_it(tmp_path: Path, how: str) -> None:
    """Stopping the server (SIGTERM: the job is cancelled) or killing it (SIGKILL: the next start fails what
    was left running) while a 100 k-message import runs: afterwards the import is failed and nothing is kept."""
    first = start_server(tmp_path, SOMA_SIGNUP="open")
    try:
        _, token = new_user(first, "stop")
        path = tmp_path / NAME
        fx.whatsapp_android_stream(path, 100_000)
        row = upload(first, token, path.read_bytes())
        url = f"{first.base_url}/v1/imports/{row['id']}/events"
        with httpx.stream("GET", url, headers=auth(token), timeout=120) as r:
            for line in r.iter_lines():
                if line.startswith("data: ") and json.loads(line[6:]).get("read", 0) > 0:
                    break  # it is running and has stored a batch or more (uncommitted)
        if how == "kill":
            first.proc.kill()
            first.proc.wait()
        else:
            assert first.stop() == 0
    finally:
        first.stop()
    second = start_server(tmp_path)
    try:
        final = api(second, "GET", f"/v1/imports/{row['id']}", token).json()
        assert final["status"] == "failed" and final["error"].startswith(("cancelled", "interrupted")), final
        assert stored(second, user_id_of(second, token)) == 0
        assert not list((second.data_dir / "imports").rglob("*.sealed"))
    finally:
        second.stop()
