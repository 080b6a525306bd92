"""Hostile imports against a real server (ci models): deeply nested JSON is refused without the memory
blow-up that killed the process, one user's uploads cannot lock others out, and an idle open conversation
cannot hold media imports for ever."""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import psutil
import pytest
import websockets

from tests.avatar import import_fixtures as fx
from tests.avatar import media_fixtures as mf
from tests.conftest import ServerProcess, new_user, start_server
from tests.eventually import eventually
from tests.server.test_imports import follow, stored, user_id_of
from tests.server_api import api, auth, metric, ws_url

pytestmark = [pytest.mark.timeout(300), pytest.mark.models]
ME = "Me Myself"
PER_USER = 2
RSS_GROWTH_LIMIT = 100 << 20


@pytest.fixture(scope="module")
def srv(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """A server of its own: two imports per user, a 1 s bound on waiting for a live conversation."""
    server = start_server(
        tmp_path_factory.mktemp("import-abuse"), models=True, SOMA_SIGNUP="open", timeout=180,
        SOMA_IMPORT_MAX_PER_USER=str(PER_USER), SOMA_IMPORT_CALLS_FIRST_MAX_WAIT_S="1",
    )
    yield server
    server.stop()


def chat(tmp: Path, messages: int = 50) -> bytes:
    """A small WhatsApp export with one line of the user's own."""
    path = tmp / "chat.txt"
    fx.whatsapp_android_stream(path, messages)
    with path.open("a", encoding="utf-8") as out:
        out.write(f"03/03/2030, 10:00 - {ME}: I live in Porto.\n")
    return path.read_bytes()


class PeakRss:
    """Samples a process's RSS every 10 ms on a thread while the block runs; `peak` is the highest seen."""

    def __init__(self, pid: int) -> None:
        self.proc = psutil.Process(pid)
        self.before = self.peak = self.proc.memory_info().rss
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, name="rss-sampler", daemon=True)

    def _sample(self) -> None:
        while not self._stop.wait(0.01):
            self.peak = max(self.peak, self.proc.memory_info().rss)

    def __enter__(self) -> PeakRss:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join()


@pytest.mark.parametrize("depth", [20_000, 100_000])
def test_deeply_nested_telegram_json_fails_clearly_without_growing_the_server(
    srv: ServerProcess, depth: int, capsys: pytest.CaptureFixture[str]
) -> None:
    """A result.json nested 100,000 deep (200 KB) grew the server ~1.5 GB/s until it was killed, 20,000 deep
    by ~785 MB: now the import fails saying why, the server's RSS grows < 100 MB, and it keeps serving."""
    _, token = new_user(srv, "deep")
    body = b'{"name": "x", "type": "personal_chat", "messages": [' + b"[" * depth + b"]" * depth + b"]}"
    with PeakRss(srv.proc.pid) as rss:
        r = api(srv, "POST", "/v1/imports", token, params={"me": ME, "name": "result.json"}, content=body)
        assert r.status_code == 202, r.text
        _, kind, final = follow(srv, token, r.json()["id"])
    assert kind == "failed" and final["created"] == 0
    assert "nests deeper than 64 levels" in final["error"], final["error"]
    growth = rss.peak - rss.before
    with capsys.disabled():
        print(f"\n{depth:,} deep: server RSS {rss.before / 2**20:.0f} MiB -> peak {rss.peak / 2**20:.0f} MiB")
    assert growth < RSS_GROWTH_LIMIT, f"RSS grew {growth / 2**20:.0f} MiB"
    assert httpx.get(srv.base_url + "/healthz", timeout=10).status_code == 200
    assert api(srv, "GET", "/v1/imports", token).json()["data"][0]["status"] == "failed"
    assert stored(srv, user_id_of(srv, token)) == 0


def _held_upload(srv: ServerProcess, token: str, body: bytes, go: threading.Event, out: list[httpx.Response]) -> None:
    """An upload whose body stops after its first bytes until ``go`` is set (its slot is held meanwhile)."""

    def chunks() -> Iterator[bytes]:
        yield body[:10]
        go.wait(60)
        yield body[10:]

    with httpx.Client(timeout=120) as client:
        out.append(client.post(srv.base_url + "/v1/imports", params={"me": ME, "name": "chat.txt"},
                               headers=auth(token), content=chunks()))


def test_a_user_at_their_quota_gets_429_and_others_still_import(srv: ServerProcess, tmp_path: Path) -> None:
    """User A with two uploads in flight (the per-user limit) is refused a third with 429, ``imports_quota``
    and Retry-After; user B imports meanwhile; once A's uploads finish, A may import again."""
    _, token_a = new_user(srv, "quota")
    _, token_b = new_user(srv, "other")
    body = chat(tmp_path)
    folder = srv.data_dir / "imports" / str(user_id_of(srv, token_a))
    go = threading.Event()
    results: list[httpx.Response] = []
    held = [threading.Thread(target=_held_upload, args=(srv, token_a, body, go, results)) for _ in range(PER_USER)]
    for thread in held:
        thread.start()
    try:
        eventually(lambda: len(list(folder.glob("*.part"))) >= PER_USER, timeout_s=30, interval=0.05,
                   what="both held uploads admitted and writing")
        refused = api(srv, "POST", "/v1/imports", token_a, params={"me": ME, "name": "chat.txt"}, content=body)
        assert refused.status_code == 429, refused.text
        assert refused.json()["error"]["code"] == "imports_quota" and int(refused.headers["Retry-After"]) > 0
        assert "you already have 2 imports" in refused.json()["error"]["message"]

        other = api(srv, "POST", "/v1/imports", token_b, params={"me": ME, "name": "chat.txt"}, content=body)
        assert other.status_code == 202, other.text
        assert follow(srv, token_b, other.json()["id"])[1] == "done"
    finally:
        go.set()
        for thread in held:
            thread.join(60)
    assert [r.status_code for r in results] == [202] * PER_USER
    for r in results:
        assert follow(srv, token_a, r.json()["id"])[1] == "done"
    again = api(srv, "POST", "/v1/imports", token_a, params={"me": ME, "name": "chat.txt"}, content=body)
    assert again.status_code == 202 and follow(srv, token_a, again.json()["id"])[1] == "done"


async def test_an_idle_open_conversation_delays_a_media_import_only_by_the_bound(srv: ServerProcess) -> None:
    """With a Realtime conversation open and idle for the whole import, a voice note is still transcribed:
    its window waits at most SOMA_IMPORT_CALLS_FIRST_MAX_WAIT_S (1 s here) instead of for ever."""
    _, token = new_user(srv, "calls")
    note = mf.encode_audio(mf.speech("I love hiking in the mountains."), "ogg")

    def import_note() -> tuple[str, dict[str, Any], float]:
        started = time.monotonic()
        r = api(srv, "POST", "/v1/imports", token, params={"me": ME, "name": "PTT-20240312-WA0004.opus"},
                content=note)
        assert r.status_code == 202, r.text
        _, kind, final = follow(srv, token, r.json()["id"])
        return kind, final, time.monotonic() - started

    async with websockets.connect(ws_url(srv), additional_headers=auth(token)) as ws:
        assert json.loads(await ws.recv())["type"] == "session.created"
        assert metric(srv, "soma_live_conversations") >= 1
        kind, final, took = await asyncio.wait_for(asyncio.to_thread(import_note), 120)
        assert metric(srv, "soma_live_conversations") >= 1  # the conversation was open throughout
    assert kind == "done" and final["read"] >= 1 and final["media"][0]["status"] == "transcribed", final
    assert took < 60
