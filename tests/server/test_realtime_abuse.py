"""The realtime WebSocket under abuse, against a real server: 1,000 malformed messages, oversized frames, floods
and a client that stops reading — each answered with an error or a clean close while a parallel healthy
session keeps working."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import socket
from collections.abc import Callable
from urllib.parse import urlparse

import psutil
import pytest
import websockets
from websockets.asyncio.client import ClientConnection

from tests.conftest import ServerProcess, new_user
from tests.eventually import eventually_async
from tests.server_api import auth, metric, ws_url

pytestmark = [pytest.mark.models, pytest.mark.slow]

BAD: list[Callable[[int], str | bytes]] = [
    lambda i: "{not json",
    lambda i: "[]",
    lambda i: "null",
    lambda i: json.dumps({"no": "type"}),
    lambda i: json.dumps({"type": f"made.up.{i}"}),
    lambda i: json.dumps({"type": "output_audio_buffer.clear"}),
    lambda i: json.dumps({"type": "conversation.item.truncate", "item_id": "x"}),  # no audio_end_ms
    lambda i: json.dumps({"type": "conversation.item.delete", "item_id": f"item_{i}"}),  # no such item
    lambda i: json.dumps({"type": "input_audio_buffer.append", "audio": "@@@"}),
    lambda i: json.dumps({"type": "input_audio_buffer.append", "audio": base64.b64encode(b"odd").decode()}),
    lambda i: json.dumps({"type": "input_audio_buffer.append", "audio": 12}),
    lambda i: json.dumps({"type": "input_audio_buffer.commit"}),  # server VAD commits by itself
    lambda i: json.dumps({"type": "response.cancel"}),  # nothing to cancel
    lambda i: json.dumps({"type": "response.create", "response": {"conversation": "none"}}),  # not supported
    lambda i: json.dumps({"type": "conversation.item.create", "item": {"role": "system", "content": []}}),
    lambda i: json.dumps({"type": "conversation.item.create", "item": {"role": "user", "content": "x"}}),
    lambda i: json.dumps({"type": "session.update", "session": {"output_modalities": ["smell"]}}),
    lambda i: json.dumps({"type": "session.update", "session": {"audio": {"input": {"format": {"type": "audio/pcm",
                                                                                              "rate": 11025}}}}}),
    lambda i: json.dumps({"type": "session.update", "session": []}),
    lambda i: "[" * 50_000 + "]" * 50_000,
    lambda i: b"\x00\x01binary",
    lambda i: json.dumps({"type": "input_audio_buffer.append", "audio": "A" * (1024 * 1024 + 4)}),  # > 1 MiB
]


async def healthy_turns(server: ServerProcess, token: str, turns: int) -> list[str]:
    """A well-behaved text session running next to the abuse: returns each response's final status."""
    statuses = []
    async with websockets.connect(ws_url(server), additional_headers=auth(token)) as ws:
        await ws.send(json.dumps({"type": "session.update", "session": {"output_modalities": ["text"]}}))
        for n in range(turns):
            text = f"Give me tip number {n} for sleeping well."
            item = {"type": "message", "role": "user", "content": [{"type": "input_text", "text": text}]}
            await ws.send(json.dumps({"type": "conversation.item.create", "item": item}))
            await ws.send(json.dumps({"type": "response.create"}))
            while (event := json.loads(await ws.recv()))["type"] != "response.done":
                assert event["type"] != "error", event
            statuses.append(event["response"]["status"])
    return statuses


async def test_thousand_malformed_messages_each_get_an_error(model_server: ServerProcess) -> None:
    """1,000 malformed, oversized (in-limit frame), binary and out-of-order messages get exactly one error
    event each (rate-limited ones included); the connection stays usable; a parallel session is unaffected."""
    _, token = new_user(model_server, "fuzz")
    _, healthy_token = new_user(model_server, "calm")
    healthy = asyncio.create_task(healthy_turns(model_server, healthy_token, 2))
    headers = auth(token)
    async with websockets.connect(ws_url(model_server), additional_headers=headers, max_size=None) as ws:
        assert json.loads(await ws.recv())["type"] == "session.created"
        codes: list[str] = []

        async def read() -> None:
            while len(codes) < 1000:
                event = json.loads(await ws.recv())
                assert event["type"] == "error", event
                codes.append(event["error"]["code"])

        reader = asyncio.create_task(read())
        for i in range(1000):
            await ws.send(BAD[i % len(BAD)](i))
        await asyncio.wait_for(reader, 60)
        await ws.send(json.dumps({"type": "session.update", "session": {"output_modalities": ["text"]}}))
        assert json.loads(await ws.recv())["type"] == "session.updated"
    assert len(codes) == 1000
    expected = {"invalid_json", "invalid_event", "missing_type", "unknown_event", "unsupported_event",
                "invalid_audio", "invalid_value", "commit_not_allowed", "response_cancel_not_active",
                "unsupported_parameter", "unsupported_item", "unsupported_audio_format", "binary_not_supported",
                "message_too_large", "item_not_found"}
    assert expected <= set(codes) <= expected | {"rate_limit_exceeded"}
    assert await asyncio.wait_for(healthy, 120) == ["completed", "completed"]


async def test_frame_over_the_limit_closes_with_1009(model_server: ServerProcess) -> None:
    """A frame beyond the server's 2 MiB WebSocket limit closes the connection with 1009 (message too big)."""
    _, token = new_user(model_server)
    async with websockets.connect(ws_url(model_server), additional_headers=auth(token),
                                  max_size=None) as ws:
        await ws.recv()
        with pytest.raises(websockets.ConnectionClosed):
            await ws.send(json.dumps({"type": "input_audio_buffer.append", "audio": "A" * (3 * 1024 * 1024)}))
            await asyncio.wait_for(ws.recv(), 10)
        assert ws.close_code == 1009


async def test_flood_is_rate_limited_then_closed(model_server: ServerProcess) -> None:
    """A client flooding far past 200 messages/s gets rate_limit_exceeded errors and then a 1008 close."""
    _, token = new_user(model_server)
    async with websockets.connect(ws_url(model_server), additional_headers=auth(token)) as ws:
        await ws.recv()
        codes: set[str] = set()

        async def read() -> None:  # a flooder that keeps reading: only the rate limit may close it
            while True:
                codes.add(json.loads(await asyncio.wait_for(ws.recv(), 10))["error"]["code"])

        reader = asyncio.create_task(read())
        with pytest.raises(websockets.ConnectionClosed):
            for _ in range(3000):
                await ws.send('{"type": "response.cancel"}')
            await reader
        with contextlib.suppress(websockets.ConnectionClosed):
            await reader
        assert "rate_limit_exceeded" in codes
        assert ws.close_code == 1008 and "rate limit" in (ws.close_reason or "")


async def test_client_that_stops_reading_is_closed_not_buffered(model_server: ServerProcess) -> None:
    """A client that sends (within the rate limit) but never reads fills its bounded event queue; the server
    closes it with 1008 instead of buffering without bound, and keeps serving others."""
    _, token = new_user(model_server)
    url = urlparse(model_server.base_url)
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # a tiny window: the server's sends back up fast
    sock.connect((url.hostname, url.port))
    ws: ClientConnection = await websockets.connect(
        ws_url(model_server), sock=sock, additional_headers=auth(token), max_queue=1
    )
    closed = False
    try:
        for _ in range(4000):  # 160 messages/s: under the rate limit, far over what an unread socket holds
            await ws.send('{"type": "response.cancel", "event_id": "' + "x" * 100 + '"}')
            await asyncio.sleep(1 / 160)
    except websockets.ConnectionClosed:
        closed = True
    if not closed:
        with pytest.raises(websockets.ConnectionClosed):
            async with asyncio.timeout(20):
                while True:
                    await ws.recv()
    await ws.close()
    assert ws.close_code == 1008, (ws.close_code, ws.close_reason)
    assert "reading" in (ws.close_reason or "")
    _, other = new_user(model_server)
    assert await healthy_turns(model_server, other, 1) == ["completed"]


async def test_sequential_connections_release_their_resources(model_server: ServerProcess) -> None:
    """50 connections, one after another, each with a text turn (half of them dropped mid-answer): no
    conversation stays live, and tasks, threads and memory do not grow from the 20th connection to the 50th
    (the first twenty warm up pools and caches, which grow once to a bound)."""
    _, token = new_user(model_server)
    proc = psutil.Process(model_server.proc.pid)
    headers = auth(token)
    baseline: tuple[float, float, int] | None = None
    for n in range(50):
        if n == 20:
            await _settled(model_server)
            tasks, threads = metric(model_server, "soma_asyncio_tasks"), metric(model_server, "soma_threads")
            baseline = tasks, threads, proc.memory_info().rss
        async with websockets.connect(ws_url(model_server), additional_headers=headers) as ws:
            await ws.send(json.dumps({"type": "session.update", "session": {"output_modalities": ["text"]}}))
            item = {"type": "message", "role": "user", "content": [{"type": "input_text", "text": f"Count to {n}."}]}
            await ws.send(json.dumps({"type": "conversation.item.create", "item": item}))
            await ws.send(json.dumps({"type": "response.create"}))
            stop_at = "response.output_text.delta" if n % 2 else "response.done"
            while json.loads(await ws.recv())["type"] != stop_at:
                pass
    await _settled(model_server)
    assert baseline is not None
    tasks0, threads0, rss0 = baseline
    assert metric(model_server, "soma_asyncio_tasks") <= tasks0 + 2
    assert metric(model_server, "soma_threads") <= threads0
    # A leaked session costs well over 2 MB (buffers, history, tasks); allocator steps of ~20 MB happen once.
    assert (proc.memory_info().rss - rss0) / 2**20 < 60


async def _settled(server: ServerProcess) -> None:
    """Wait until no conversation is live (closing sessions finish their bookkeeping first)."""
    await eventually_async(lambda: metric(server, "soma_live_conversations") == 0, timeout_s=15,
                           what="no conversation left live")
