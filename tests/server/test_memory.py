"""Long-term memory end to end, on a real server (ci models, embedded Postgres+pgvector and Redis).

A fact told in one conversation is learned in the background, survives a restart, is recalled in the next
conversation, superseded by a newer fact and forgotten on request; the memories API shows and corrects it;
no user ever sees another's memories.
"""

from __future__ import annotations

import asyncio
import signal
import uuid
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import ServerProcess, new_user, start_server
from tests.eventually import eventually
from tests.server.test_live_sessions import text_turns
from tests.server_api import auth

pytestmark = pytest.mark.timeout(600)


def memories(server: ServerProcess, token: str, **params: Any) -> list[dict[str, Any]]:
    r = httpx.get(server.base_url + "/v1/memories", params=params, headers=auth(token), timeout=30)
    assert r.status_code == 200, r.text
    data: list[dict[str, Any]] = r.json()["data"]
    return data


def wait_for_memory(server: ServerProcess, token: str, predicate: Any, limit_s: float = 30) -> list[dict[str, Any]]:
    """Poll the memories list (learning runs in the background) until ``predicate(list)`` holds."""
    return eventually(lambda: memories(server, token, include_superseded="true"), until=predicate,
                      timeout_s=limit_s, what="the memories to match")


def chat(server: ServerProcess, token: str, text: str) -> str:
    body = {"model": "soma", "messages": [{"role": "user", "content": text}], "max_tokens": 24}
    r = httpx.post(server.base_url + "/v1/chat/completions", json=body, headers=auth(token), timeout=120)
    assert r.status_code == 200, r.text
    answer: str = r.json()["choices"][0]["message"]["content"]
    return answer


async def realtime_text(server: ServerProcess, token: str, texts: list[str]) -> list[str]:
    """One Realtime conversation (a new conversation row), one text turn per entry; returns the answers."""
    _, answers, _ = await text_turns(server, token, texts)
    return answers


def live(found: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [m for m in found if m["superseded_at"] is None]


def test_a_fact_survives_a_restart_is_updated_and_forgotten(tmp_path: Path) -> None:
    srv = start_server(tmp_path, models=True, SOMA_SIGNUP="open", timeout=180)
    try:
        _, token = new_user(srv)
        asyncio.run(realtime_text(srv, token, ["My sister Ana lives in Porto."]))
        # kill -9 as soon as the turn is answered: the memory is either learned already or recovered from the
        # turn row (memories_extracted = false) at the next start.
        srv.proc.send_signal(signal.SIGKILL)
        srv.proc.wait()
        srv = start_server(tmp_path, models=True, SOMA_SIGNUP="open", timeout=180)
        porto = wait_for_memory(srv, token, lambda f: any("Porto" in m["text"] for m in f))
        assert [m["text"] for m in porto] == ["My sister Ana lives in Porto."]
        assert porto[0]["subject"] == "ana" and porto[0]["kind"] == "person" and porto[0]["last_recalled_at"] is None

        # A new conversation after a graceful restart recalls it.
        assert srv.stop() == 0
        srv = start_server(tmp_path, models=True, SOMA_SIGNUP="open", timeout=180)
        (answer,) = asyncio.run(realtime_text(srv, token, ["Where does my sister Ana live?"]))
        # Recall stamps are written in the background, off the turn's critical path.
        (recalled,) = wait_for_memory(srv, token, lambda f: f[0]["recall_count"] == 1)
        assert recalled["id"] == porto[0]["id"] and recalled["last_recalled_at"] is not None
        assert "Porto" in answer, answer

        # A newer fact about the same person and attribute supersedes the old one, keeping it as history.
        asyncio.run(realtime_text(srv, token, ["Ana moved to Lisbon."]))
        found = wait_for_memory(srv, token, lambda f: any("Lisbon" in m["text"] for m in f))
        (lisbon,) = live(found)
        old = next(m for m in found if m["id"] == porto[0]["id"])
        assert "Lisbon" in lisbon["text"] and old["superseded_by"] == lisbon["id"] and old["superseded_at"]
        assert [m["text"] for m in live(memories(srv, token))] == [lisbon["text"]]

        # "Forget that" deletes the newest fact and its history.
        chat(srv, token, "Forget that.")
        wait_for_memory(srv, token, lambda f: f == [])
        r = httpx.get(f"{srv.base_url}/v1/memories/{lisbon['id']}", headers=auth(token), timeout=10)
        assert r.status_code == 404
    finally:
        srv.stop()


def test_memories_api_lets_the_user_see_and_correct(any_server: ServerProcess) -> None:
    _, token = new_user(any_server, "mem")
    url = any_server.base_url + "/v1/memories"
    r = httpx.post(url, json={"text": "I am allergic to peanuts.", "kind": "fact", "importance": 0.9},
                   headers=auth(token), timeout=30)
    assert r.status_code == 201, r.text
    created = r.json()
    assert created["source"] == "user" and created["importance"] == pytest.approx(0.9)
    r = httpx.get(url + "/search", params={"q": "what food can I not eat"}, headers=auth(token), timeout=30)
    assert [m["id"] for m in r.json()["data"]] == [created["id"]]
    assert r.json()["data"][0]["similarity"] > 0.2

    r = httpx.patch(f"{url}/{created['id']}", json={"text": "I love playing the cello."}, headers=auth(token))
    assert r.status_code == 200 and r.json()["text"] == "I love playing the cello."
    r = httpx.get(url + "/search", params={"q": "musical instrument"}, headers=auth(token), timeout=30)
    top = r.json()["data"][0]
    assert top["id"] == created["id"] and top["similarity"] > 0.3  # re-embedded with the new text

    bad = [
        ({"text": ""}, 400),
        ({"text": "x", "kind": "secret"}, 400),
        ({"text": "x", "importance": 2}, 400),
        ({"text": "x", "user_id": str(uuid.uuid4())}, 400),  # the owner is never taken from the body
        ({"text": "x" * 2001}, 400),
    ]
    for body, status in bad:
        r = httpx.post(url, json=body, headers=auth(token))
        assert r.status_code == status, (body, r.text)
        assert "error" in r.json()
    r = httpx.patch(f"{url}/{created['id']}", json={"text": None}, headers=auth(token))
    assert r.status_code == 400
    r = httpx.patch(f"{url}/{created['id']}", json={}, headers=auth(token))
    assert r.status_code == 400

    for text in ("I grow tomatoes.", "My bike is green."):
        assert httpx.post(url, json={"text": text}, headers=auth(token), timeout=30).status_code == 201
    first = httpx.get(url, params={"limit": 2}, headers=auth(token), timeout=30).json()
    assert first["has_more"] is True and len(first["data"]) == 2
    rest = httpx.get(url, params={"limit": 2, "cursor": first["next_cursor"]}, headers=auth(token), timeout=30).json()
    assert rest["has_more"] is False and rest["next_cursor"] is None
    assert len({m["id"] for m in first["data"] + rest["data"]}) == 3
    for cursor in ("nonsense", "2026-01-01T00:00:00_not-a-uuid", f"2026-01-01T00:00:00_{uuid.uuid4()}"):
        r = httpx.get(url, params={"cursor": cursor}, headers=auth(token), timeout=30)
        assert r.status_code == 400 and r.json()["error"]["code"] == "invalid_cursor", r.text

    assert httpx.delete(f"{url}/{created['id']}", headers=auth(token)).status_code == 204
    assert httpx.delete(f"{url}/{created['id']}", headers=auth(token)).status_code == 404
    assert httpx.get(url, headers={}).status_code == 401


def test_users_never_see_each_others_memories(any_server: ServerProcess) -> None:
    _, alice = new_user(any_server, "alice")
    _, bob = new_user(any_server, "bob")
    url = any_server.base_url + "/v1/memories"
    injection = "My cat's name is Robert'); DROP TABLE memories;--"
    a = httpx.post(url, json={"text": "My sister Ana lives in Porto."}, headers=auth(alice), timeout=30).json()
    b = httpx.post(url, json={"text": "My sister Ana lives in Lisbon."}, headers=auth(bob), timeout=30).json()
    weird = httpx.post(url, json={"text": injection}, headers=auth(bob), timeout=30).json()
    assert weird["text"] == injection

    for who, own, other in ((alice, a, b), (bob, b, a)):
        listed = {m["id"] for m in memories(any_server, who)}
        assert own["id"] in listed and other["id"] not in listed
        probes = ("Where does my sister Ana live?", "' OR 1=1 --", "'; DELETE FROM memories; --", "%' OR true")
        for q in probes:
            r = httpx.get(url + "/search", params={"q": q}, headers=auth(who), timeout=30)
            assert r.status_code == 200
            assert other["id"] not in {m["id"] for m in r.json()["data"]}
        for method in ("GET", "PATCH", "DELETE"):
            body = {"text": "hijacked"} if method == "PATCH" else None
            r = httpx.request(method, f"{url}/{other['id']}", json=body, headers=auth(who))
            assert r.status_code == 404, (method, r.text)
        for bad_id in ("1 OR 1=1", "' OR ''='", "00000000-0000-0000-0000-000000000000"):
            r = httpx.get(f"{url}/{bad_id}", headers=auth(who))
            assert r.status_code in (404, 400)

    # Recall for Bob's turn touches only Bob's memories.
    chat(any_server, bob, "Where does my sister Ana live?")
    wait_for_memory(any_server, bob, lambda f: any(m["id"] == b["id"] and m["recall_count"] == 1 for m in f))
    assert httpx.get(f"{url}/{a['id']}", headers=auth(alice)).json()["recall_count"] == 0
    assert len(memories(any_server, alice)) == 1 and len(memories(any_server, bob)) == 2


def test_deleting_a_conversation_can_take_its_memories(model_server: ServerProcess) -> None:
    _, token = new_user(model_server, "del")
    asyncio.run(realtime_text(model_server, token, ["I work as a nurse in Leeds."]))
    learned = wait_for_memory(model_server, token, lambda f: len(f) == 1)
    conversation = learned[0]["source_conversation_id"]
    assert conversation is not None
    r = httpx.delete(
        f"{model_server.base_url}/v1/conversations/{conversation}", params={"memories": "true"}, headers=auth(token)
    )
    assert r.status_code == 204
    assert memories(model_server, token, include_superseded="true") == []


def test_the_python_sdk_manages_memories(model_server: ServerProcess) -> None:
    from soma_client import SomaClient, SomaError

    _, token = new_user(model_server, "sdk")
    with SomaClient(model_server.base_url, token) as client:
        made = client.remember("My daughter Mia was born on June 2.", kind="event", subject="mia")
        assert client.search_memories("When is Mia's birthday?")[0]["id"] == made["id"]
        fixed = client.correct_memory(made["id"], event_date="2019-06-02")
        assert fixed["event_date"] == "2019-06-02"
        assert [m["id"] for m in client.memories(kind="event")] == [made["id"]]
        client.forget(made["id"])
        assert client.memories() == []
        with pytest.raises(SomaError) as missing:
            client.forget(made["id"])
        assert missing.value.status == 404 and missing.value.code == "not_found"
