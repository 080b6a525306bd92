"""``/v1/persona`` on a real server (ci models, embedded Postgres+pgvector): built by itself after an import,
edits reach the prompt, rebuild, scopes, bad input, another user's persona, sealed at rest, export, erasure."""

from __future__ import annotations

import io
import json
import uuid
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from pipeline.session import DEFAULT_PERSONA
from tests.avatar import persona_fixtures as fx
from tests.conftest import ServerProcess, new_user, start_server
from tests.eventually import eventually
from tests.server.test_privacy import admin_db, files_containing, flush_to_disk
from tests.server_api import api, auth

pytestmark = [pytest.mark.timeout(600), pytest.mark.models]
NAME = "WhatsApp Chat with Ana Souza.txt"


@pytest.fixture(scope="module")
def srv(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """A server of its own (its data dir is scanned for canaries), ci models."""
    server = start_server(tmp_path_factory.mktemp("persona"), models=True, SOMA_SIGNUP="open", timeout=180)
    yield server
    server.stop()


def wait_ready(srv: ServerProcess, token: str, *, after: str | None = None) -> dict[str, Any]:
    """Poll until the persona is ``ready`` (and built after ``after``, when given)."""
    persona: dict[str, Any] = eventually(
        lambda: api(srv, "GET", "/v1/persona", token).json(),
        until=lambda p: p["status"] == "ready" and (after is None or p["built_at"] > after),
        timeout_s=120, interval=0.3, what="the persona to be ready")
    return persona


def import_sam(srv: ServerProcess, token: str, body: bytes | None = None) -> None:
    """Upload the generated chat and wait for its import's final event: ``done``."""
    r = api(srv, "POST", "/v1/imports", token, params={"me": fx.ME, "name": NAME}, content=body or fx.whatsapp_export())
    assert r.status_code == 202, r.text
    url = f"{srv.base_url}/v1/imports/{r.json()['id']}/events"
    with httpx.stream("GET", url, headers=auth(token), timeout=120) as events:
        finals = (line for line in events.iter_lines() if line in ("event: done", "event: failed"))
        assert next(finals) == "event: done"


def test_a_finished_import_builds_the_persona_and_edits_reach_the_prompt(srv: ServerProcess) -> None:
    """Empty at first (the default prompt); after an import it is rebuilt by itself and reflects the writer;
    PATCH edits show in the prompt, ``null`` removes one; a rebuild keeps the edits."""
    _, token = new_user(srv, "sam")
    empty = api(srv, "GET", "/v1/persona", token).json()
    assert empty["status"] == "empty" and empty["built_at"] is None and empty["prompt"] == DEFAULT_PERSONA
    assert empty["sources"] == {"messages": 0, "imports": 0} and empty["edits"] == {}
    assert set(empty["profile"]) == {"style", "interests", "people", "places", "self_description"}

    import_sam(srv, token)
    persona = wait_ready(srv, token)
    assert persona["sources"] == {"messages": 150, "imports": 1}
    style = persona["profile"]["style"]
    assert style["capitalisation"]["no_capitals"] == 1.0 and style["sign_offs"] == ["cheers"]
    assert "😂" in style["emoji"]["top"] and [lang["code"] for lang in style["languages"]] == ["en", "pt"]
    assert persona["profile"]["people"][:2] == ["Ana Souza", "Bob"]
    assert persona["profile"]["places"] == ["Porto", "Lisbon"]
    assert persona["profile"]["interests"][:2] == ["hiking", "football"]
    assert "never uses capital letters" in persona["prompt"] and 'signs off with "cheers"' in persona["prompt"]

    edits = {"name": "Sammy", "self_description": "I fix bikes in Porto.", "style_notes": "say mate a lot",
             "instructions": "Never talk about work."}
    edited = api(srv, "PATCH", "/v1/persona", token, json=edits).json()
    assert edited["edits"] == edits and edited["status"] == "ready"
    prompt = edited["prompt"]
    assert prompt.startswith("You are Sammy.") and '"I fix bikes in Porto."' in prompt
    assert "Also: say mate a lot" in prompt and prompt.endswith("Never talk about work.")
    assert api(srv, "GET", "/v1/persona", token).json()["prompt"] == prompt
    removed = api(srv, "PATCH", "/v1/persona", token, json={"name": None, "style_notes": None}).json()
    assert removed["edits"] == {"self_description": "I fix bikes in Porto.", "instructions": "Never talk about work."}
    assert removed["prompt"].startswith("You are Sam Rivers.")

    r = api(srv, "POST", "/v1/persona/rebuild", token)
    assert r.status_code == 202 and r.json() == {"status": "building"}
    rebuilt = wait_ready(srv, token, after=persona["built_at"])
    assert rebuilt["edits"] == removed["edits"] and rebuilt["prompt"] == removed["prompt"]

    # The chat uses it: the avatar's answer is generated from this prompt (checked in test_persona_context).
    chat = {"model": "soma", "messages": [{"role": "user", "content": "any hiking plans?"}], "max_tokens": 8}
    reply = api(srv, "POST", "/v1/chat/completions", token, json=chat)
    assert reply.status_code == 200 and reply.json()["usage"]["prompt_tokens"] > 150


def test_scopes_bad_input_and_another_users_persona(srv: ServerProcess) -> None:
    """No token: 401; a token without ``persona``: 403; unknown or malformed fields: 400 and nothing changes;
    another user sees only their own (empty) persona."""
    _, token = new_user(srv, "owner")
    canary = f"Zq{uuid.uuid4().hex[:6]}PersonaCanary"
    assert api(srv, "PATCH", "/v1/persona", token, json={"self_description": canary}).status_code == 200
    assert api(srv, "GET", "/v1/persona", None).status_code == 401
    chat_only = api(srv, "POST", "/v1/auth/tokens", token, json={"name": "c", "scopes": ["chat"]}).json()["token"]
    for method, path in (("GET", "/v1/persona"), ("PATCH", "/v1/persona"), ("POST", "/v1/persona/rebuild")):
        r = api(srv, method, path, chat_only, json={} if method == "PATCH" else None)
        assert r.status_code == 403 and r.json()["error"]["code"] == "insufficient_scope", (method, path)
    scoped = api(srv, "POST", "/v1/auth/tokens", token, json={"name": "p", "scopes": ["persona"]}).json()["token"]
    assert canary in api(srv, "GET", "/v1/persona", scoped).json()["prompt"]
    for bad in ({"nickname": "x"}, {"name": ""}, {"name": "x" * 61}, {"instructions": 5}, ["name"], "text"):
        r = api(srv, "PATCH", "/v1/persona", token, json=bad)
        assert r.status_code == 400 and r.json()["error"]["type"] == "invalid_request_error", bad
    r = api(srv, "PATCH", "/v1/persona", token, content=b'{"name": "\\ud800"}',
            headers={"Content-Type": "application/json"})
    assert r.status_code == 400 and r.json()["error"]["code"] == "invalid_json", r.text  # one check for every body
    assert api(srv, "GET", "/v1/persona", token).json()["edits"] == {"self_description": canary}

    _, other = new_user(srv, "other")
    theirs = api(srv, "GET", "/v1/persona", other)
    assert theirs.status_code == 200 and canary not in theirs.text and theirs.json()["edits"] == {}
    assert api(srv, "PATCH", "/v1/persona", other, json={"name": "Other"}).status_code == 200
    assert api(srv, "GET", "/v1/persona", token).json()["edits"] == {"self_description": canary}


def test_sealed_at_rest_exported_and_erased(srv: ServerProcess, tmp_path: Path) -> None:
    """Profile, edits and examples are sealed on disk; the export holds them opened with their counts;
    erasing the account leaves no persona row or example."""
    name, token = new_user(srv, "seal")
    canary = f"zq{uuid.uuid4().hex[:6]}trailcanary"
    body = fx.whatsapp_export() + f"01/06/2024, 10:00 - {fx.ME}: the {canary} was steep, cheers\n".encode()
    import_sam(srv, token, body)
    api(srv, "PATCH", "/v1/persona", token, json={"style_notes": f"likes the {canary}"})
    persona = wait_ready(srv, token)
    user_id = uuid.UUID(api(srv, "GET", "/v1/me", token).json()["id"])
    with admin_db(srv) as db:
        examples = db.execute("SELECT count(*) AS n FROM persona_examples WHERE user_id = %s", (user_id,)).fetchone()
    assert examples is not None and examples["n"] >= 20
    flush_to_disk(srv)
    assert files_containing(srv.data_dir, [canary.encode(), b"Sam Rivers", b"never uses capital"]) == {}

    archive = zipfile.ZipFile(io.BytesIO(api(srv, "GET", "/v1/me/export", token).content))
    manifest = json.loads(archive.read("manifest.json"))
    assert manifest["tables"]["personas"] == 1 and manifest["tables"]["persona_examples"] == examples["n"]
    (row,) = [json.loads(line) for line in archive.read("persona.jsonl").splitlines()]
    assert row["profile"]["profile"] == persona["profile"] and row["edits"] == {"style_notes": f"likes the {canary}"}
    exported = [json.loads(line) for line in archive.read("persona_examples.jsonl").splitlines()]
    assert len(exported) == examples["n"] and len(exported[0]["embedding"]) == 384
    assert all(isinstance(e["text"], str) and e["text"] for e in exported)

    assert api(srv, "DELETE", "/v1/me", token, params={"confirm": name}).status_code == 204
    with admin_db(srv) as db:
        for table in ("personas", "persona_examples"):
            n = db.execute(f"SELECT count(*) AS n FROM {table} WHERE user_id = %s", (user_id,)).fetchone()  # noqa: S608
            assert n is not None and n["n"] == 0, table
