"""Regression tests for an attacker's run against `soma serve`, each against a real server with the ci models:

1. prompts had no token cap on Realtime (a 3,990-emoji message: minutes of uninterruptible prompt encoding);
2. generation went on after the client left;
3. SIGTERM was ignored while a long generation ran;
4. one bad event (a non-list ``output_modalities``, a 5,000-digit number, a lone surrogate) closed the
   connection with 1000 and no ``error`` event.

The LLM's work is observed on ``/metrics`` (``soma_llm_sequences_decoding``, ``soma_llm_tokens_decoded_total``).
"""

from __future__ import annotations

import asyncio
import json
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import websockets
from websockets.asyncio.client import ClientConnection

from tests.conftest import REPO, ServerProcess, new_user, start_server
from tests.eventually import eventually
from tests.server_api import auth, metric, ws_url

pytestmark = [pytest.mark.models, pytest.mark.slow]

PROMPT_BUDGET = 800  # small limits keep the ci model's prompt encoding short
ITEM_BUDGET = 300
STORY = [{"role": "system", "content": "You are a storyteller."},
         {"role": "user", "content": "Write a very long story about a dragon."}]


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """A model server with small prompt limits."""
    srv = start_server(tmp_path_factory.mktemp("hostile"), models=True, SOMA_SIGNUP="open", timeout=180,
                       SOMA_MAX_PROMPT_TOKENS=str(PROMPT_BUDGET), SOMA_MAX_ITEM_TOKENS=str(ITEM_BUDGET))
    yield srv
    srv.stop()
    shutil.rmtree(srv.data_dir, ignore_errors=True)


def wait_until_idle(server: ServerProcess, limit_s: float) -> float:
    """Seconds until the LLM decodes nothing (fails after ``limit_s``)."""
    started = time.monotonic()
    eventually(lambda: metric(server, "soma_llm_sequences_decoding") == 0, timeout_s=limit_s, interval=0.02,
               what="the LLM to stop generating")
    return time.monotonic() - started


def item(text: str, **extra: Any) -> str:
    content = [{"type": "input_text", "text": text}]
    return json.dumps({"type": "conversation.item.create", "item": {"type": "message", "role": "user",
                                                                     "content": content}, **extra})


async def connect(server: ServerProcess, token: str) -> ClientConnection:
    ws = await websockets.connect(ws_url(server), additional_headers=auth(token), max_size=None)
    assert json.loads(await ws.recv())["type"] == "session.created"
    return ws


async def until(ws: ClientConnection, *kinds: str, limit_s: float = 60) -> dict[str, Any]:
    """The next event of one of ``kinds``; an ``error`` on the way fails the test."""
    async with asyncio.timeout(limit_s):
        while True:
            event: dict[str, Any] = json.loads(await ws.recv())
            if event["type"] in kinds:
                return event
            assert event["type"] != "error", event


async def error_for(ws: ClientConnection, raw: str) -> dict[str, Any]:
    """Send ``raw``; the very next event must be an OpenAI-shaped ``invalid_request_error``."""
    await ws.send(raw)
    event = json.loads(await asyncio.wait_for(ws.recv(), 10))
    assert event["type"] == "error", event
    error = event["error"]
    assert set(error) == {"type", "code", "message", "param", "event_id"} and error["type"] == "invalid_request_error"
    assert isinstance(error["message"], str) and error["message"]
    return dict(error)


async def text_turn(ws: ClientConnection, text: str) -> dict[str, Any]:
    await ws.send(item(text))
    await until(ws, "conversation.item.done")
    await ws.send(json.dumps({"type": "response.create"}))
    response: dict[str, Any] = (await until(ws, "response.done"))["response"]
    return response


# ------------------------------------------------------------------------------ 4. bad events, session lives


async def test_bad_events_get_an_error_and_the_session_stays_usable(server: ServerProcess) -> None:
    """Each event that used to close the connection (1000, no error event), and ``session.update`` with wrong
    types everywhere, gets an ``invalid_request_error``; the session then still answers a turn."""
    _, token = new_user(server)
    bad = [
        '{"type":"response.create","response":{"output_modalities":5}}',
        '{"type":"response.create","response":{"output_modalities":"text"}}',
        '{"type":"input_audio_buffer.append","audio":"AAAA","n":' + "7" * 4400 + "}",
        item("hi \ud800 there"),
        '{"type":"input_audio_buffer.clear","event_id":"\\udfff"}',
        '{"type":"response.create","\\ud800":1}',
    ]
    session_values = [
        {"output_modalities": 5}, {"output_modalities": "text"}, {"output_modalities": [None]},
        {"instructions": 5}, {"instructions": ["x"]}, {"instructions": "\ud800"},
        {"audio": 5}, {"audio": {"input": []}}, {"audio": {"input": {"format": "pcm"}}},
        {"audio": {"input": {"format": {"type": "audio/pcm", "rate": "fast"}}}},
        {"audio": {"input": {"format": {"type": "audio/pcm", "rate": 10**40}}}},
        {"audio": {"input": {"format": {"type": "audio/pcm", "rate": 1e308}}}},
        {"audio": {"input": {"turn_detection": 5}}}, {"audio": {"input": {"turn_detection": {"type": 5}}}},
        {"audio": {"input": {"turn_detection": {"type": "server_vad", "create_response": "yes"}}}},
        {"audio": {"output": {"voice": 5}}}, {"audio": {"output": {"voice": {"a": 1}}}},
        {"audio": {"output": {"format": {"type": "audio/pcm", "rate": None}}}},
    ]
    bad += [json.dumps({"type": "session.update", "session": s}) for s in session_values]
    ws = await connect(server, token)
    async with ws:
        for raw in bad:
            await error_for(ws, raw)
        await ws.send(json.dumps({"type": "session.update", "session": {"output_modalities": ["text"]}}))
        assert (await until(ws, "session.updated"))["session"]["output_modalities"] == ["text"]
        assert (await text_turn(ws, "Say hello."))["status"] == "completed"
    assert ws.close_code == 1000  # closed by this client, after everything


# ------------------------------------------------------------------------------------------ 1. prompt caps


async def test_message_over_the_token_cap_is_refused_not_answered(server: ServerProcess) -> None:
    """A message within the character limit but over the token limit (emoji are several tokens each) gets a
    ``text_too_long`` error at once and is not added; so does a turn that would grow past the limit from
    several messages, and instructions over half the prompt budget. The session then answers normally."""
    _, token = new_user(server)
    ws = await connect(server, token)
    async with ws:
        await ws.send(json.dumps({"type": "session.update", "session": {"output_modalities": ["text"]}}))
        await until(ws, "session.updated")
        started = time.monotonic()
        for text in ("😀" * 3990, "🙂" * (ITEM_BUDGET // 2 + 10)):
            error = await error_for(ws, item(text))
            assert error["code"] == "text_too_long" and error["param"] == "item.content.text"
            assert f"at most {ITEM_BUDGET} tokens" in error["message"]
        assert time.monotonic() - started < 3
        half = " ".join(["word"] * (ITEM_BUDGET * 2 // 3))  # ~200 tokens: one fits, two do not
        await ws.send(item(half))
        await until(ws, "conversation.item.done")
        error = await error_for(ws, item(half))
        assert error["code"] == "text_too_long" and "response.create" in error["message"]
        error = await error_for(ws, json.dumps({"type": "session.update", "session": {"instructions": "🙂" * 400}}))
        assert error["param"] == "session.instructions"
        await ws.send(json.dumps({"type": "response.create"}))
        assert (await until(ws, "response.done"))["response"]["status"] == "completed"


async def test_history_is_trimmed_to_the_prompt_budget(server: ServerProcess) -> None:
    """Turns of near-limit messages grow the history past the prompt budget: the server drops the oldest
    history (it logs so) and every turn is still answered promptly."""
    _, token = new_user(server)
    ws = await connect(server, token)
    async with ws:
        await ws.send(json.dumps({"type": "session.update", "session": {"output_modalities": ["text"]}}))
        await until(ws, "session.updated")
        for n in range(5):
            started = time.monotonic()
            text = f"Note {n}: " + " ".join(["apple"] * (ITEM_BUDGET - 40))
            assert (await text_turn(ws, text))["status"] == "completed"
            assert time.monotonic() - started < 30
    assert "prompt over budget" in server.log_text()


def test_chat_prompt_cap_counts_tokens_not_characters(server: ServerProcess) -> None:
    """Chat completions measure the prompt with the model's tokenizer: 1,000 emoji (1,000 characters, several
    thousand tokens) are refused with 400 ``context_length_exceeded``, before any generation."""
    _, token = new_user(server)
    body = {"model": "soma", "messages": [{"role": "user", "content": "😀" * 1000}]}
    started = time.monotonic()
    response = httpx.post(server.base_url + "/v1/chat/completions", json=body,
                          headers=auth(token), timeout=30)
    assert response.status_code == 400, response.text
    assert response.json()["error"]["code"] == "context_length_exceeded"
    assert f"at most {PROMPT_BUDGET}" in response.json()["error"]["message"]
    assert time.monotonic() - started < 5


# ----------------------------------------------------------------------------- 2. the client leaves: stop


async def test_generation_stops_when_the_realtime_client_leaves(server: ServerProcess) -> None:
    """Closing the WebSocket mid-answer stops the LLM within a second: nothing is decoded any more, and only a
    few tokens after the close."""
    _, token = new_user(server)
    ws = await connect(server, token)
    await ws.send(json.dumps({"type": "session.update", "session": {"output_modalities": ["text"],
                                                                    "instructions": STORY[0]["content"]}}))
    await until(ws, "session.updated")
    await ws.send(item(STORY[1]["content"]))
    await ws.send(json.dumps({"type": "response.create"}))
    await until(ws, "response.output_text.delta")
    await ws.close()
    at_close = metric(server, "soma_llm_tokens_decoded_total")
    stopped_s = await asyncio.to_thread(wait_until_idle, server, 1.0)
    after = metric(server, "soma_llm_tokens_decoded_total") - at_close
    print(f"realtime: LLM idle {stopped_s:.3f} s after the close, {after:.0f} tokens after it")
    assert after <= 10


def test_generation_stops_when_the_chat_client_disconnects(server: ServerProcess) -> None:
    """A streaming chat completion (up to 2,048 tokens) whose client disconnects after a few chunks stops
    decoding within a second instead of running to its end."""
    _, token = new_user(server)
    body = {"model": "soma", "stream": True, "max_tokens": 2048, "messages": STORY}
    with httpx.Client(timeout=30) as client, client.stream("POST", server.base_url + "/v1/chat/completions",
                                                           json=body, headers=auth(token)
                                                           ) as response:
        assert response.status_code == 200
        chunks = 0
        for line in response.iter_lines():
            chunks += line.startswith("data:")
            if chunks == 8:
                break
    at_close = metric(server, "soma_llm_tokens_decoded_total")
    stopped_s = wait_until_idle(server, 1.0)
    time.sleep(0.3)
    after = metric(server, "soma_llm_tokens_decoded_total") - at_close
    print(f"chat: LLM idle {stopped_s:.3f} s after the disconnect, {after:.0f} tokens after it")
    assert after <= 10


# ------------------------------------------------------------------------------ 3. shutdown has a deadline


def _chat_in_background(server: ServerProcess, token: str, body: dict[str, Any], first: threading.Event) -> None:
    def run() -> None:
        try:
            with (
                httpx.Client(timeout=60) as client,
                client.stream(
                    "POST",
                    server.base_url + "/v1/chat/completions",
                    json=body,
                    headers=auth(token),
                ) as response,
            ):
                chunks = 0
                for line in response.iter_lines():
                    chunks += line.startswith("data:")
                    if chunks == 3:  # the role chunk, then text: the answer is being generated
                        first.set()
        except httpx.HTTPError:
            pass  # the server went away: expected

    threading.Thread(target=run, name="chat-client", daemon=True).start()


def _stop_timed(server: ServerProcess, limit_s: float) -> tuple[int, float]:
    started = time.monotonic()
    server.proc.send_signal(signal.SIGTERM)
    try:
        code = server.proc.wait(limit_s + 5)
    except subprocess.TimeoutExpired:
        server.proc.kill()
        raise AssertionError(f"still running {limit_s + 5} s after SIGTERM") from None
    return code, time.monotonic() - started


def test_sigterm_during_a_long_generation_exits_within_the_deadline(tmp_path: Path) -> None:
    """SIGTERM while a 2,048-token chat answer streams and a Realtime session is open: the server exits 0
    within its 10 s deadline (connections get 5 s, then generations are cancelled)."""
    srv = start_server(tmp_path, models=True, SOMA_SIGNUP="open", timeout=180)
    try:
        _, token = new_user(srv)
        first = threading.Event()
        _chat_in_background(srv, token, {"model": "soma", "stream": True, "max_tokens": 2048, "messages": STORY}, first)
        assert first.wait(30)

        async def open_session() -> ClientConnection:
            return await connect(srv, token)

        loop = asyncio.new_event_loop()
        ws = loop.run_until_complete(open_session())
        assert metric(srv, "soma_llm_sequences_decoding") == 1
        code, seconds = _stop_timed(srv, 10)
        print(f"shutdown during a long generation: exit {code} after {seconds:.2f} s")
        loop.run_until_complete(ws.close())
        loop.close()
    finally:
        srv.stop()
    assert code == 0, srv.log_text()[-3000:]
    assert seconds < 10
    assert "still running" not in srv.log_text()


def test_sigterm_while_a_long_prompt_is_encoded_exits_within_the_deadline(tmp_path: Path) -> None:
    """SIGTERM while the model encodes a ~7,000-token prompt (one native call of tens of seconds that nothing can
    interrupt — the attacker's server ignored SIGTERM for 75 s): the server leaves that call running, stops
    everything else and exits 0 within its 10 s deadline."""
    srv = start_server(tmp_path, models=True, SOMA_SIGNUP="open", timeout=180, SOMA_MAX_PROMPT_TOKENS="8000")
    try:
        _, token = new_user(srv)
        prompt = [STORY[0], {"role": "user", "content": "🙂" * 2300}]
        _chat_in_background(srv, token, {"model": "soma", "stream": True, "max_tokens": 64, "messages": prompt},
                            threading.Event())
        eventually(lambda: metric(srv, "soma_llm_sequences_decoding") > 0, timeout_s=10, interval=0.02,
                   what="the LLM to start on the prompt")
        time.sleep(0.5)
        assert metric(srv, "soma_llm_tokens_decoded_total") == 0  # still encoding the prompt
        code, seconds = _stop_timed(srv, 10)
        print(f"shutdown while a prompt is encoded: exit {code} after {seconds:.2f} s")
    finally:
        srv.stop()
    assert code == 0, srv.log_text()[-3000:]
    assert seconds < 10
    assert "left loaded for the process exit" in srv.log_text()  # the encoding was still running at the end


def test_watchdog_ends_a_shutdown_that_hangs() -> None:
    """Past the deadline, the watchdog ends the process with code 3 even when a non-daemon thread never ends
    (what a thread inside native compute looks like to the interpreter)."""
    script = (
        "import threading, time\n"
        "from voice_server.cli.serve import ShutdownDeadline\n"
        "threading.Thread(target=time.sleep, args=(60,)).start()\n"
        "ShutdownDeadline(1.0).arm()\n"
    )
    started = time.monotonic()
    result = subprocess.run([sys.executable, "-c", script], cwd=REPO, timeout=30, capture_output=True)
    assert result.returncode == 3, result.stderr.decode()[-2000:]
    assert 1.0 <= time.monotonic() - started < 5
