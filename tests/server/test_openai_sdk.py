"""The official `openai` SDK against a real `soma serve` with the ci models: chat completions (streamed and
not), the Realtime API by text over two turns and by voice, auth and per-user history."""

from __future__ import annotations

import asyncio
import base64
import ssl
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import openai
import pytest
import websockets

from tests.audio_fixtures import spoken
from tests.conftest import ServerProcess, new_user, start_server
from tests.eventually import eventually_async
from tests.server_api import auth

pytestmark = [pytest.mark.models, pytest.mark.slow]
SECRET = "Zorblax"


def client(server: ServerProcess, token: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=server.base_url + "/v1", api_key=token, max_retries=0, timeout=60)


def aclient(server: ServerProcess, token: str) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(base_url=server.base_url + "/v1", api_key=token, max_retries=0, timeout=60)


def stored_turns(server: ServerProcess, token: str) -> list[dict[str, Any]]:
    """The user's stored turns, oldest first, as they read them back (turn text is sealed in the database)."""
    headers = auth(token)
    conversations = httpx.get(server.base_url + "/v1/conversations", headers=headers, timeout=30).json()["data"]
    turns: list[dict[str, Any]] = []
    for c in sorted(conversations, key=lambda c: str(c["started_at"])):
        url = f"{server.base_url}/v1/conversations/{c['id']}"
        turns += httpx.get(url, headers=headers, timeout=30).json()["turns"]
    return turns


async def events_until(conn: Any, kind: str, limit_s: float = 60) -> AsyncIterator[Any]:
    """Server events up to and including the first of type ``kind``."""
    async with asyncio.timeout(limit_s):
        async for event in conn:
            yield event
            if event.type == kind:
                return


async def text_turn(conn: Any, text: str) -> tuple[str, Any]:
    """Send a typed message, ask for a response; return the streamed text and the response.done event."""
    await conn.conversation.item.create(
        item={"type": "message", "role": "user", "content": [{"type": "input_text", "text": text}]}
    )
    await conn.response.create()
    deltas, done = [], None
    async for event in events_until(conn, "response.done"):
        assert event.type != "error", event
        if event.type == "response.output_text.delta":
            deltas.append(event.delta)
        done = event
    return "".join(deltas), done


def test_models_list_the_callers_avatars(model_server: ServerProcess) -> None:
    """GET /v1/models lists the caller's avatar (by username and as 'soma'); other names are 404."""
    name, token = new_user(model_server)
    with client(model_server, token) as oc:
        assert {m.id for m in oc.models.list()} == {name, "soma"}
        assert oc.models.retrieve("soma").owned_by == name
        with pytest.raises(openai.NotFoundError):
            oc.models.retrieve("gpt-4o")


def test_streamed_chat_completion(model_server: ServerProcess) -> None:
    """A streamed chat completion delivers text deltas, a finish reason and (on request) usage."""
    _, token = new_user(model_server)
    with client(model_server, token) as oc:
        stream = oc.chat.completions.create(
            model="soma",
            messages=[{"role": "user", "content": "Say hello to my dog Rex."}],
            stream=True,
            stream_options={"include_usage": True},
            max_tokens=40,
        )
        chunks = list(stream)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    finishes = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
    assert len(text.split()) >= 2
    assert finishes in (["stop"], ["length"])
    usage = chunks[-1].usage
    assert usage is not None and usage.completion_tokens > 0 and usage.prompt_tokens > 20
    assert len({c.id for c in chunks}) == 1


def test_chat_remembers_the_previous_exchange_per_user(model_server: ServerProcess) -> None:
    """A client that sends only its new message and opts in to history (``soma.history: "recent"``) gets an
    avatar that remembers the user's earlier turn; the same question from another user gets no trace of it, and
    each user's turns are stored under their id."""
    name_a, token_a = new_user(model_server, "ada")
    name_b, token_b = new_user(model_server, "bea")
    question = [{"role": "user", "content": "What is my name?"}]
    recent = {"soma": {"history": "recent"}}
    with client(model_server, token_a) as oc:
        oc.chat.completions.create(model="soma", messages=[{"role": "user", "content": f"My name is {SECRET}."}])
        answer_a = oc.chat.completions.create(model="soma", messages=question, extra_body=recent)
    with client(model_server, token_b) as oc:
        answer_b = oc.chat.completions.create(model="soma", messages=question, extra_body=recent)
    # What the tiny ci model makes of its context varies with the CPU's instruction set (its greedy answer on
    # AVX-512 named the user, on AVX2 it greets): the prompt's size is the deterministic proof of the context.
    assert SECRET not in (answer_b.choices[0].message.content or "")
    assert answer_a.usage is not None and answer_b.usage is not None
    assert answer_a.usage.prompt_tokens - answer_b.usage.prompt_tokens >= 8  # A's prompt carries the earlier turn
    said_a = [t["user_text"] for t in stored_turns(model_server, token_a)]
    assert said_a == [f"My name is {SECRET}.", "What is my name?"]
    assert [t["user_text"] for t in stored_turns(model_server, token_b)] == ["What is my name?"]


def test_chat_rejects_bad_requests_clearly(model_server: ServerProcess) -> None:
    """Unknown model 404, no/invalid token 401, malformed messages or body 400, oversized body 413 — each with
    the OpenAI error shape — and the server keeps answering."""
    _, token = new_user(model_server)
    with client(model_server, token) as oc:
        with pytest.raises(openai.NotFoundError):
            oc.chat.completions.create(model="gpt-4o", messages=[{"role": "user", "content": "hi"}])
        with pytest.raises(openai.BadRequestError, match="last message"):
            oc.chat.completions.create(model="soma", messages=[{"role": "assistant", "content": "hi"}])
        with pytest.raises(openai.BadRequestError):
            oc.chat.completions.create(model="soma", messages=[])
    with client(model_server, "soma_not-a-real-token") as oc, pytest.raises(openai.AuthenticationError):
        oc.chat.completions.create(model="soma", messages=[{"role": "user", "content": "hi"}])
    url = model_server.base_url + "/v1/chat/completions"
    big = {"model": "soma", "messages": [{"role": "user", "content": "x" * (2 * 1024 * 1024)}]}
    r = httpx.post(url, json=big, headers=auth(token), timeout=30)
    assert r.status_code == 413 and r.json()["error"]["code"] == "request_too_large"
    r = httpx.post(url, content=b"{not json", headers={"Authorization": f"Bearer {token}",
                                                        "Content-Type": "application/json"})
    assert r.status_code == 400 and r.json()["error"]["code"] == "invalid_json"
    assert httpx.get(model_server.base_url + "/healthz").status_code == 200


async def test_realtime_text_conversation_over_two_turns(model_server: ServerProcess) -> None:
    """Realtime API, text only: the second answer's prompt carries the first turn; both responses complete."""
    _, token = new_user(model_server)
    ac = aclient(model_server, token)
    async with ac.realtime.connect(model="soma") as conn:
        created = await conn.recv()
        assert created.type == "session.created"
        await conn.session.update(session={"type": "realtime", "output_modalities": ["text"]})
        updated = await conn.recv()
        assert updated.type == "session.updated" and updated.session.output_modalities == ["text"]
        first, done1 = await text_turn(conn, f"My name is {SECRET}.")
        second, done2 = await text_turn(conn, "What is my name?")
    await ac.close()
    assert first and done1.response.status == "completed"
    assert second and done2.response.status == "completed"
    assert done2.response.output[0].content[0].text == second.strip()
    # The second prompt carries the first exchange (the words the tiny ci model makes of it vary with the CPU).
    grown = done2.response.usage.input_tokens - done1.response.usage.input_tokens
    assert grown >= len(first.split()) + 4


async def test_realtime_audio_turn(model_server: ServerProcess) -> None:
    """Realtime API, voice: an espeak-spoken question sent as pcm16 24 kHz comes back as a transcript, audio
    deltas with real sound, and the spoken answer's transcript."""
    _, token = new_user(model_server)
    pcm = spoken("What is the capital of France?", 24_000)
    ac = aclient(model_server, token)
    seen: dict[str, list[Any]] = {}
    async with ac.realtime.connect(model="soma") as conn:
        for i in range(0, len(pcm), 4800):  # 200 ms chunks, as fast as the socket takes them
            await conn.input_audio_buffer.append(audio=base64.b64encode(pcm[i : i + 4800].tobytes()).decode())
        async for event in events_until(conn, "response.done"):
            assert event.type != "error", event
            seen.setdefault(event.type, []).append(event)
    await ac.close()
    (completed,) = seen["conversation.item.input_audio_transcription.completed"]
    assert "capital" in completed.transcript.lower() and "france" in completed.transcript.lower()
    assert seen["input_audio_buffer.speech_started"][0].item_id == completed.item_id
    deltas = seen["response.output_audio.delta"]
    audio = np.concatenate([np.frombuffer(base64.b64decode(e.delta), "<i2") for e in deltas])
    assert len(audio) / 24_000 > 0.5 and np.abs(audio).max() > 3000
    transcript = "".join(e.delta for e in seen["response.output_audio_transcript.delta"])
    done = seen["response.done"][0].response
    assert done.status == "completed" and done.output[0].content[0].transcript == transcript.strip()


async def test_realtime_cancel_records_only_what_was_sent(model_server: ServerProcess) -> None:
    """response.cancel mid-answer: response.done says cancelled, and the stored turn holds the sent text only,
    flagged as interrupted."""
    name, token = new_user(model_server)
    ac = aclient(model_server, token)
    async with ac.realtime.connect(model="soma") as conn:
        await conn.session.update(session={"type": "realtime", "output_modalities": ["text"]})
        await conn.conversation.item.create(item={"type": "message", "role": "user", "content": [
            {"type": "input_text", "text": "Tell me a long story about a fox, with many details."}]})
        await conn.response.create()
        sent, status = [], None
        async for event in events_until(conn, "response.done"):
            if event.type == "response.output_text.delta":
                sent.append(event.delta)
                if len(sent) == 3:
                    await conn.response.cancel()
            if event.type == "response.done":
                status = event.response.status
    await ac.close()
    assert status == "cancelled"
    rows = await eventually_async(lambda: stored_turns(model_server, token), timeout_s=10, interval=0.1,
                                  what="the turn to be recorded")
    ((heard, interrupted, reply),) = [(t["heard_text"], t["interrupted"], t["reply_text"]) for t in rows]
    assert interrupted and heard == "".join(sent).strip() and heard == reply.strip()


async def test_realtime_handshake_needs_a_valid_token_and_model(model_server: ServerProcess) -> None:
    """No token, a bad token, or another model name are refused at the handshake (HTTP 401/404) — before any
    session exists; a browser-style subprotocol token is accepted."""
    _, token = new_user(model_server)
    ws_url = model_server.base_url.replace("http", "ws") + "/v1/realtime"
    for headers, query, status in [
        ({}, "", 401),
        ({"Authorization": "Bearer soma_forged"}, "", 401),
        (auth(token), "?model=someone-else", 404),
    ]:
        with pytest.raises(websockets.InvalidStatus) as info:
            async with websockets.connect(ws_url + query, additional_headers=headers):
                pass
        assert info.value.response.status_code == status
    async with websockets.connect(ws_url, subprotocols=["realtime", f"openai-insecure-api-key.{token}"]) as ws:  # type: ignore[list-item]
        assert ws.subprotocol == "realtime"
        assert '"session.created"' in str(await ws.recv())


async def test_realtime_and_chat_over_https(tmp_path: Path) -> None:
    """The default deployment (HTTPS with the generated certificate): chat completions and a realtime text
    turn over wss:// with the SDK trusting that certificate."""
    server = start_server(tmp_path, tls=True, models=True, SOMA_SIGNUP="open", timeout=180)
    try:
        ssl_context = ssl.create_default_context(cafile=str(server.data_dir / "tls" / "cert.pem"))
        with httpx.Client(verify=ssl_context) as http:
            account = {"username": "tls", "password": "password-123"}
            signup = http.post(server.base_url + "/v1/auth/signup", json=account)
            token = signup.json()["token"]["access_token"]
            oc = openai.OpenAI(base_url=server.base_url + "/v1", api_key=token, http_client=http, max_retries=0)
            reply = oc.chat.completions.create(model="soma", messages=[{"role": "user", "content": "Hello!"}])
            assert reply.choices[0].message.content
        ac = openai.AsyncOpenAI(base_url=server.base_url + "/v1", api_key=token, max_retries=0)
        async with ac.realtime.connect(model="soma", websocket_connection_options={"ssl": ssl_context}) as conn:
            await conn.session.update(session={"type": "realtime", "output_modalities": ["text"]})
            text, done = await text_turn(conn, "Hello again!")
        await ac.close()
        assert text and done.response.status == "completed"
    finally:
        server.stop()
