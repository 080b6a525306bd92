"""The bond and proactive APIs on real servers (embedded Postgres+pgvector and Redis, real clock).

Messages are made due the way a user would: a milestone dated today in an earlier year, with the morning
time at 00:00 and no quiet hours, fires at the next pass (adding it wakes the scheduler). Covered: auth and
scopes, validation (a bad timezone is a 400 and changes nothing), milestones, the bond after real chat turns
and its reset, ``/v1/events`` end to end (a message created while connected arrives live; ones created
while offline are replayed on reconnect, after ``Last-Event-ID``), read marking, the realtime WebSocket's
``soma.notification``, and two server processes on one database sending each message once and delivering
across processes.
"""

from __future__ import annotations

import asyncio
import io
import json
import zipfile
from collections.abc import AsyncIterator
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
import websockets

from tests.conftest import ServerProcess, new_user, start_server
from tests.eventually import eventually
from tests.server.test_audit import db_as
from tests.server_api import api, auth, ws_url

pytestmark = pytest.mark.timeout(300)

DUE_NOW = {"timezone": "UTC", "morning_time": "00:00", "quiet_hours": {"start": "00:00", "end": "00:00"},
           "disabled_kinds": ["greeting", "checkin", "on_this_day"]}


def years_ago(today: date, n: int) -> date:
    """A date ``n`` (or, from 29 February, the next leap) years before ``today`` with today's month and day."""
    while True:
        try:
            return today.replace(year=today.year - n)
        except ValueError:
            n += 1


def make_due(server: ServerProcess, token: str, title: str, years: int = 1) -> dict[str, Any]:
    """Settings that make today's milestones due now, and an anniversary ``years`` ago today."""
    assert api(server, "PUT", "/v1/proactive/settings", token, json=DUE_NOW).status_code == 200
    when = years_ago(datetime.now(UTC).date(), years)
    r = api(server, "POST", "/v1/milestones", token, json={"title": title, "date": when.isoformat(),
                                                            "kind": "anniversary"})
    assert r.status_code == 201, r.text
    milestone: dict[str, Any] = r.json()
    return milestone


def wait_notifications(server: ServerProcess, token: str, count: int, timeout: float = 60) -> list[dict[str, Any]]:
    """The user's notifications once there are at least ``count`` (the scheduler sends them in the background)."""

    def listed() -> list[dict[str, Any]]:
        r = api(server, "GET", "/v1/notifications", token)
        assert r.status_code == 200, r.text
        found: list[dict[str, Any]] = r.json()["data"]
        return found

    return eventually(listed, until=lambda found: len(found) >= count, timeout_s=timeout, interval=0.3,
                      what=f"{count} notification(s)")


def wait_bond(server: ServerProcess, token: str) -> dict[str, Any]:
    """The bond once the background worker applied a turn (a mood and a streak)."""
    bond: dict[str, Any] = eventually(lambda: api(server, "GET", "/v1/bond", token).json(),
                                      until=lambda b: b["mood"] is not None and b["streak_days"] != 0,
                                      timeout_s=30, what="the bond to have a mood and a streak")
    return bond


async def next_event(lines: AsyncIterator[str], wait_s: float = 60) -> dict[str, str]:
    """The next SSE event (``id``, ``event``, ``data`` fields), skipping comments and ``retry``."""
    event: dict[str, str] = {}
    async with asyncio.timeout(wait_s):
        async for line in lines:
            if not line:
                if "data" in event:
                    return event
                event = {}
                continue
            if line.startswith(":"):
                continue
            name, _, value = line.partition(":")
            event[name] = value.removeprefix(" ")
    raise AssertionError("the stream ended")


# -------------------------------------------------------------------------------------------- auth, input


def test_every_route_needs_a_token_and_its_scope(server: ServerProcess) -> None:
    """401 without a token; a ``chat`` token gets 403 everywhere here; ``events`` reads messages but not the
    bond; ``proactive:read`` reads settings but cannot change them."""
    _, token = new_user(server, "scopes")
    routes = [("GET", "/v1/bond"), ("DELETE", "/v1/bond"), ("GET", "/v1/proactive/settings"),
              ("PUT", "/v1/proactive/settings"), ("GET", "/v1/milestones"), ("POST", "/v1/milestones"),
              ("GET", "/v1/notifications"), ("GET", "/v1/events")]
    for method, path in routes:
        assert api(server, method, path, None).status_code == 401, path

    def scoped(*scopes: str) -> str:
        r = api(server, "POST", "/v1/auth/tokens", token, json={"name": "t", "scopes": list(scopes)})
        assert r.status_code == 201, r.text
        secret: str = r.json()["token"]
        return secret

    chat = scoped("chat")
    for method, path in routes:
        r = api(server, method, path, chat, json={})
        assert r.status_code == 403 and r.json()["error"]["code"] == "insufficient_scope", path
    events = scoped("events")
    assert api(server, "GET", "/v1/notifications", events).status_code == 200
    assert api(server, "GET", "/v1/bond", events).status_code == 403
    reader = scoped("proactive:read")
    assert api(server, "GET", "/v1/proactive/settings", reader).status_code == 200
    assert api(server, "GET", "/v1/bond", reader).status_code == 200
    assert api(server, "PUT", "/v1/proactive/settings", reader, json={"timezone": "UTC"}).status_code == 403


def test_settings_defaults_changes_and_bad_input(server: ServerProcess) -> None:
    """The defaults; a valid change is kept; a bad timezone, time, kind, birthday or field is a 400 that
    changes nothing; ``birthday: null`` removes it."""
    _, token = new_user(server, "settings")
    defaults = api(server, "GET", "/v1/proactive/settings", token).json()
    assert defaults == {"timezone": "UTC", "morning_time": "08:00", "quiet_hours": {"start": "22:00", "end": "07:00"},
                        "checkin_after_days": 3, "disabled_kinds": [], "birthday": None}
    change = {"timezone": "Europe/Lisbon", "morning_time": "07:30", "disabled_kinds": ["checkin"],
              "birthday": "1990-04-12", "quiet_hours": {"start": "23:00", "end": "06:30"}}
    r = api(server, "PUT", "/v1/proactive/settings", token, json=change)
    assert r.status_code == 200, r.text
    expected = {**defaults, **change}
    assert r.json() == expected == api(server, "GET", "/v1/proactive/settings", token).json()
    r = api(server, "PUT", "/v1/proactive/settings", token, json={"timezone": "Mars/Olympus"})
    assert r.status_code == 400 and r.json()["error"]["code"] == "invalid_timezone"
    assert r.json()["error"]["param"] == "timezone"
    for bad in ({"morning_time": "25:00"}, {"quiet_hours": {"start": "7am", "end": "08:00"}},
                {"disabled_kinds": ["spam"]}, {"checkin_after_days": 0}, {"birthday": "2999-01-01"},
                {"timezone": "../../etc/passwd"}, {"colour": "blue"}):
        r = api(server, "PUT", "/v1/proactive/settings", token, json=bad)
        assert r.status_code == 400, (bad, r.text)
    assert api(server, "GET", "/v1/proactive/settings", token).json() == expected
    r = api(server, "PUT", "/v1/proactive/settings", token, json={"birthday": None})
    assert r.json()["birthday"] is None and r.json()["timezone"] == "Europe/Lisbon"


def test_milestones_belong_to_their_owner(server: ServerProcess) -> None:
    """Created (201, with its id), listed, not deletable by another user (404), deleted by the owner (204)."""
    _, token = new_user(server, "mile")
    _, other = new_user(server, "mile")
    r = api(server, "POST", "/v1/milestones", token, json={"title": "Mum's birthday", "date": "1960-09-02",
                                                            "kind": "birthday"})
    assert r.status_code == 201, r.text
    created = r.json()
    assert created["title"] == "Mum's birthday" and created["date"] == "1960-09-02" and created["id"]
    assert [m["id"] for m in api(server, "GET", "/v1/milestones", token).json()["data"]] == [created["id"]]
    assert api(server, "GET", "/v1/milestones", other).json()["data"] == []
    assert api(server, "DELETE", f"/v1/milestones/{created['id']}", other).status_code == 404
    assert api(server, "DELETE", f"/v1/milestones/{created['id']}", token).status_code == 204
    assert api(server, "DELETE", f"/v1/milestones/{created['id']}", token).status_code == 404
    for bad in ({"title": "", "date": "2020-01-01", "kind": "birthday"},
                {"title": "x", "date": "2020-02-30", "kind": "birthday"},
                {"title": "x", "date": "2020-01-01", "kind": "funeral"}):
        assert api(server, "POST", "/v1/milestones", token, json=bad).status_code == 400


# -------------------------------------------------------------------------------------------------- bond


def test_the_bond_follows_real_turns_and_resets(model_server: ServerProcess) -> None:
    """After chat turns the bond shows the contact, a one-day streak and a negative mood from sad words (the
    real VADER lexicon); DELETE returns it to the starting state."""
    _, token = new_user(model_server, "bond")
    start = api(model_server, "GET", "/v1/bond", token).json()
    assert start["last_contact"] is None and start["mood"] is None and start["streak_days"] == 0
    for text in ("I feel terrible, my dog died.", "Everything is awful and I am so sad."):
        body = {"model": "soma", "messages": [{"role": "user", "content": text}], "max_tokens": 8}
        assert api(model_server, "POST", "/v1/chat/completions", token, json=body).status_code == 200
    bond = wait_bond(model_server, token)
    assert bond["mood"]["label"] == "negative" and bond["last_contact"] is not None
    assert bond["trust"] > start["trust"] and "gentle" in bond["tone"]
    assert api(model_server, "DELETE", "/v1/bond", token).status_code == 204
    assert api(model_server, "GET", "/v1/bond", token).json() == start


# ------------------------------------------------------------------------------------------------ events


async def test_events_arrive_live_and_are_replayed_after_reconnect(server: ServerProcess) -> None:
    """Connected: a new message arrives as an SSE event (id = notification id). Offline: the next one is
    stored; reconnecting with Last-Event-ID replays just it, without the header every unread one; read
    marking removes it from the unread replay and list."""
    _, token = new_user(server, "events")
    async with httpx.AsyncClient(base_url=server.base_url, headers=auth(token), timeout=60) as client:
        async with client.stream("GET", "/v1/events") as stream:
            assert stream.status_code == 200 and stream.headers["content-type"].startswith("text/event-stream")
            lines = stream.aiter_lines()
            await asyncio.to_thread(make_due, server, token, "our wedding anniversary")
            live = await next_event(lines)
        first = json.loads(live["data"])
        assert live["event"] == "notification" and live["id"] == first["id"]
        assert first["kind"] == "milestone" and first["text"].startswith("Today is our wedding anniversary: one year")
        assert set(first) >= {"id", "kind", "text", "created_at", "memory_ids"}

        await asyncio.to_thread(make_due, server, token, "the day we met", 3)  # while offline
        stored = await asyncio.to_thread(wait_notifications, server, token, 2)
        second = stored[0]  # newest first
        assert "the day we met: 3 years" in second["text"]
        async with client.stream("GET", "/v1/events", headers={"Last-Event-ID": first["id"]}) as stream:
            replayed = await next_event(stream.aiter_lines())
        assert replayed["id"] == second["id"]
        async with client.stream("GET", "/v1/events") as stream:
            lines = stream.aiter_lines()
            unread = [(await next_event(lines))["id"], (await next_event(lines))["id"]]
        assert unread == [first["id"], second["id"]]  # oldest first

        assert (await client.post(f"/v1/notifications/{first['id']}/read")).status_code == 204
        assert [n["id"] for n in (await client.get("/v1/notifications", params={"unread": "true"})).json()["data"]] == [
            second["id"]
        ]
        async with client.stream("GET", "/v1/events") as stream:
            assert (await next_event(stream.aiter_lines()))["id"] == second["id"]
        r = await client.get("/v1/events", headers={"Last-Event-ID": "not-an-id"})
        assert r.status_code == 400 and r.json()["error"]["code"] == "invalid_last_event_id"
        _, stranger = await asyncio.to_thread(new_user, server, "stranger")
        r = await client.post(f"/v1/notifications/{first['id']}/read", headers=auth(stranger))
        assert r.status_code == 404
        archive = zipfile.ZipFile(io.BytesIO((await client.get("/v1/me/export")).content))
    exported = [json.loads(line) for line in archive.read("notifications.jsonl").decode().splitlines()]
    assert {n["text"] for n in exported} == {first["text"], second["text"]}  # opened for their owner
    titles = [json.loads(line)["title"] for line in archive.read("milestones.jsonl").decode().splitlines()]
    assert titles == ["our wedding anniversary", "the day we met"]
    assert json.loads(archive.read("manifest.json"))["tables"]["notifications"] == 2


async def test_the_realtime_socket_receives_soma_notification(model_server: ServerProcess) -> None:
    """A message created while a realtime session is open arrives on it as ``soma.notification``."""
    _, token = new_user(model_server, "rtnote")
    async with websockets.connect(f"{ws_url(model_server)}?model=soma", additional_headers=auth(token)) as ws:
        assert json.loads(await ws.recv())["type"] == "session.created"
        await asyncio.to_thread(make_due, model_server, token, "our first date")
        async with asyncio.timeout(90):
            while (event := json.loads(await ws.recv()))["type"] != "soma.notification":
                pass
    note = event["notification"]
    assert event["event_id"] and note["kind"] == "milestone" and note["text"].startswith("Today is our first date")
    assert [n["id"] for n in api(model_server, "GET", "/v1/notifications", token).json()["data"]] == [note["id"]]


# ------------------------------------------------------------------------------------ two server processes


@pytest.fixture
def two_servers(tmp_path: Path) -> Any:
    """Server A (embedded Postgres and Redis) and server B on A's database, Redis and master key: two
    processes, each running its own scheduler, passes every second."""
    for name in ("a", "b"):
        (tmp_path / name).mkdir()
    a = start_server(tmp_path / "a", SOMA_SIGNUP="open", SOMA_PROACTIVE_INTERVAL_S="1")
    try:
        b = start_server(tmp_path / "b", SOMA_SIGNUP="open", SOMA_PROACTIVE_INTERVAL_S="1",
                         SOMA_DATABASE_URL=f"postgresql://postgres@/postgres?host={a.data_dir / 'pg'}",
                         SOMA_REDIS_URL=a.redis_url, SOMA_MASTER_KEY_FILE=str(a.data_dir / "master.key"))
        try:
            yield a, b
        finally:
            b.stop()
    finally:
        a.stop()


async def test_two_server_processes_send_each_message_once(two_servers: tuple[ServerProcess, ServerProcess]) -> None:
    """Eight users' milestones, made due through either server, are each sent exactly once though both
    schedulers run every second; one made due on A reaches the user's event stream on B."""
    a, b = two_servers
    users = [await asyncio.to_thread(new_user, a, "twin") for _ in range(8)]
    async with httpx.AsyncClient(base_url=b.base_url, headers=auth(users[0][1]), timeout=60) as client:
        async with client.stream("GET", "/v1/events") as stream:
            lines = stream.aiter_lines()
            for n, (_, token) in enumerate(users):
                await asyncio.to_thread(make_due, a if n % 2 == 0 else b, token, f"milestone {n}")
            across = json.loads((await next_event(lines))["data"])
    assert across["text"].startswith("Today is milestone 0")
    for server, (_, token) in zip([a, b] * 4, users, strict=True):
        await asyncio.to_thread(wait_notifications, server, token, 1)
    await asyncio.sleep(3)  # several more passes of both schedulers
    for _, token in users:
        assert len(api(b, "GET", "/v1/notifications", token).json()["data"]) == 1
    with db_as(a, "postgres") as db:
        rows = db.execute("SELECT claimed_by, count(*) AS n FROM proactive_jobs WHERE state = 'sent'"
                          " GROUP BY claimed_by").fetchall()
        workers = {(a.data_dir / "worker-id").read_text().strip(), (b.data_dir / "worker-id").read_text().strip()}
    assert sum(r["n"] for r in rows) == 8 and {r["claimed_by"] for r in rows} <= workers
