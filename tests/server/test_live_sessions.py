"""Live session state in a real Redis: resuming a session, surviving a Redis crash, rate limits and locks."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx
import psutil
import pytest
import redis
import websockets
from websockets.exceptions import InvalidStatus

from tests.conftest import ServerProcess, new_user
from tests.eventually import eventually_async
from tests.server_api import auth, ws_url
from voice_server.stores.redis_store import SessionStore

SECRET = "Zorblax"


async def text_turns(
    server: ServerProcess, token: str, texts: list[str], session_id: str | None = None, between: Any = None
) -> tuple[str, list[str], list[int]]:
    """One Realtime connection (resuming ``session_id`` if given): returns its session id, the answers and
    each answer's prompt size (``usage.input_tokens``). ``between(n)`` runs after the n-th answer (to break
    things mid-session)."""
    url = ws_url(server) + (f"?session_id={session_id}" if session_id else "")
    answers, prompts = [], []
    async with websockets.connect(url, additional_headers=auth(token)) as ws:
        created = json.loads(await ws.recv())
        assert created["type"] == "session.created"
        await ws.send(json.dumps({"type": "session.update", "session": {"output_modalities": ["text"]}}))
        for n, text in enumerate(texts):
            item = {"type": "message", "role": "user", "content": [{"type": "input_text", "text": text}]}
            await ws.send(json.dumps({"type": "conversation.item.create", "item": item}))
            await ws.send(json.dumps({"type": "response.create"}))
            parts = []
            while (event := json.loads(await ws.recv()))["type"] != "response.done":
                assert event["type"] != "error", event
                if event["type"] == "response.output_text.delta":
                    parts.append(event["delta"])
            answers.append("".join(parts))
            prompts.append(event["response"]["usage"]["input_tokens"])
            if between is not None:
                await between(n)
    return created["session"]["id"], answers, prompts


async def fresh_prompt(server: ServerProcess, question: str) -> int:
    """The prompt size of ``question`` asked by a new user: no history and no memories (the baseline against
    which a session's context shows). The tiny ci model's wording of an answer varies with the CPU's
    instruction set, so the context is checked by size, not by what the model makes of it."""
    _, token = new_user(server)
    _, _, (size,) = await text_turns(server, token, [question])
    return size


def redis_client(server: ServerProcess) -> redis.Redis:
    return redis.Redis.from_url(server.redis_url)


def redis_pid(server: ServerProcess) -> int:
    children = psutil.Process(server.proc.pid).children()
    (proc,) = [c for c in children if "redis-server" in c.name()]
    return proc.pid


async def test_a_client_resumes_its_session_with_its_context(any_server: ServerProcess) -> None:
    _, token = new_user(any_server)
    session_id, _, _ = await text_turns(any_server, token, [f"My name is {SECRET}."])
    value = redis_client(any_server).get(f"session:{session_id}") or b""
    # Sealed with the user's data key: Redis holds the state, never its text in clear.
    assert len(value) > 16 + 29 and SECRET.encode() not in value and b"history" not in value
    assert 0 < redis_client(any_server).ttl(f"session:{session_id}") <= 1800

    resumed, _, (size,) = await text_turns(any_server, token, ["What is my name?"], session_id=session_id)
    assert resumed == session_id and size - await fresh_prompt(any_server, "What is my name?") >= 8
    async with httpx.AsyncClient(base_url=any_server.base_url, headers=auth(token)) as client:
        conversations = (await client.get("/v1/conversations")).json()["data"]
    assert len(conversations) == 1 and conversations[0]["turns"] == 2  # the same conversation continued


async def test_foreign_unknown_or_malformed_session_ids_are_refused(any_server: ServerProcess) -> None:
    _, alice = new_user(any_server, "alice")
    _, bob = new_user(any_server, "bob")
    session_id, _, _ = await text_turns(any_server, alice, ["Hello."])
    for token, sid in ((bob, session_id), (alice, "sess_" + "0" * 32), (alice, "sess_' OR 1=1"), (alice, "x" * 500)):
        with pytest.raises(InvalidStatus) as denied:
            url = ws_url(any_server) + "?session_id=" + quote(sid)
            async with websockets.connect(url, additional_headers=auth(token)):
                pass
        assert denied.value.response.status_code == 404
        assert json.loads(denied.value.response.body or b"{}")["error"]["code"] == "session_not_found"


async def test_redis_crash_mid_session_keeps_the_context(model_server: ServerProcess) -> None:
    """kill -9 of Redis during a session: the live session keeps its context, the supervisor restarts Redis,
    and a reconnect rebuilds the session from Postgres."""
    _, token = new_user(model_server)
    old_pid = redis_pid(model_server)

    async def crash_redis(n: int) -> None:
        if n == 0:
            psutil.Process(old_pid).kill()

    session_id, _, sizes = await text_turns(
        model_server, token, [f"My name is {SECRET}.", "What is my name?"], between=crash_redis
    )
    assert sizes[1] - await fresh_prompt(model_server, "What is my name?") >= 8

    def restarted() -> bool:
        try:
            return redis_pid(model_server) != old_pid and bool(redis_client(model_server).ping())
        except (ValueError, redis.RedisError):
            return False

    await eventually_async(restarted, timeout_s=10, interval=0.1, what="the supervisor to restart redis")
    redis_client(model_server).delete(f"session:{session_id}")  # as if Redis had lost everything
    _, _, (size,) = await text_turns(model_server, token, ["What is my name again?"], session_id=session_id)
    assert size - await fresh_prompt(model_server, "What is my name again?") >= 8
    async with httpx.AsyncClient(base_url=model_server.base_url) as client:
        assert (await client.get("/healthz")).status_code == 200
    assert "embedded redis exited" in model_server.log_text()


def test_login_attempts_are_rate_limited(any_server: ServerProcess) -> None:
    name, _ = new_user(any_server, "brute")
    url = any_server.base_url + "/v1/auth/token"
    codes = [httpx.post(url, json={"username": name, "password": f"guess-{n}"}).status_code for n in range(22)]
    assert codes[:5] == [401] * 5 and set(codes[5:]) == {429}  # locked after 5 failures (Redis-backed lockout)
    other, _ = new_user(any_server, "other")
    assert httpx.post(url, json={"username": other, "password": "nope-nope"}).status_code == 401  # per username


async def test_locks_and_counters(tmp_path: Path) -> None:
    async with SessionStore.open(None, tmp_path) as store:
        token = await store.acquire("greeting:alice", 5)
        assert token is not None
        assert await store.acquire("greeting:alice", 5) is None  # one holder at a time
        assert not await store.release("greeting:alice", "not-the-token")
        assert await store.release("greeting:alice", token)
        assert await store.acquire("greeting:alice", 0.05) is not None
        await asyncio.sleep(0.1)
        assert await store.acquire("greeting:alice", 5) is not None  # expired locks free themselves
        assert [await store.hit("k", 3, 1) for _ in range(4)] == [True, True, True, False]
        await asyncio.sleep(1.1)
        assert await store.hit("k", 3, 1)  # a new window
