"""Conversation history endpoints against a real server: what was said and heard, page by page, only for its
owner; deletion is real; a turn committed before the answer ended survives kill -9."""

from __future__ import annotations

import asyncio
import signal
from pathlib import Path

import httpx
import openai
import pytest

from tests.conftest import ServerProcess, new_user, start_server
from tests.server_api import user_client

pytestmark = [pytest.mark.models, pytest.mark.slow]


def chat(server: ServerProcess, token: str, text: str) -> str:
    with openai.OpenAI(base_url=server.base_url + "/v1", api_key=token, max_retries=0) as oc:
        reply = oc.chat.completions.create(model="soma", messages=[{"role": "user", "content": text}], max_tokens=30)
    return reply.choices[0].message.content or ""


def api(server: ServerProcess, token: str) -> httpx.Client:
    return user_client(server.base_url, token, timeout=30)


def test_history_lists_pages_and_deletes_only_for_the_owner(model_server: ServerProcess) -> None:
    """Three chat turns appear as one conversation with its turns in order (paginated); another user gets 404
    for it and an empty list; DELETE removes it with its turns."""
    _, token_a = new_user(model_server, "hist")
    _, token_b = new_user(model_server, "other")
    answers = [chat(model_server, token_a, f"Question number {n}: what is {n} plus {n}?") for n in range(3)]
    with api(model_server, token_a) as a, api(model_server, token_b) as b:
        listing = a.get("/v1/conversations").json()
        (conversation,) = listing["data"]
        assert conversation["channel"] == "chat" and conversation["turns"] == 3
        assert conversation["preview"].startswith("Question number 0")
        first = a.get(f"/v1/conversations/{conversation['id']}", params={"limit": 2}).json()
        assert [t["index"] for t in first["turns"]] == [1, 2] and first["has_more"]
        rest = a.get(f"/v1/conversations/{conversation['id']}", params={"after": first["next_after"]}).json()
        turns = first["turns"] + rest["turns"]
        assert not rest["has_more"]
        assert [t["user_text"] for t in turns] == [f"Question number {n}: what is {n} plus {n}?" for n in range(3)]
        assert [t["heard_text"] for t in turns] == [answer.strip() for answer in answers]
        assert all("llm_first_token" in t["marks"] for t in turns)

        assert b.get("/v1/conversations").json()["data"] == []
        for method in ("GET", "DELETE"):
            r = b.request(method, f"/v1/conversations/{conversation['id']}")
            assert r.status_code == 404 and r.json()["error"]["code"] == "not_found"
        assert b.get("/v1/conversations/not-a-uuid").status_code == 400

        assert a.delete(f"/v1/conversations/{conversation['id']}").status_code == 204
        assert a.get(f"/v1/conversations/{conversation['id']}").status_code == 404
        assert a.get("/v1/conversations").json()["data"] == []
    with httpx.Client(base_url=model_server.base_url) as anonymous:
        assert anonymous.get("/v1/conversations").status_code == 401


async def realtime_turn(server: ServerProcess, token: str, text: str) -> str:
    """One typed Realtime turn; returns the answer as soon as response.done arrives."""
    ac = openai.AsyncOpenAI(base_url=server.base_url + "/v1", api_key=token, max_retries=0)
    async with ac.realtime.connect(model="soma") as conn:
        await conn.session.update(session={"type": "realtime", "output_modalities": ["text"]})
        await conn.conversation.item.create(
            item={"type": "message", "role": "user", "content": [{"type": "input_text", "text": text}]}
        )
        await conn.response.create()
        async for event in conn:
            if event.type == "response.done":
                answer = event.response.output[0].content[0].text
                break
    await ac.close()
    return str(answer)


@pytest.mark.parametrize("channel", ["chat", "realtime"])
def test_turn_survives_kill_9_right_after_the_answer(tmp_path: Path, channel: str) -> None:
    """A turn is committed before its end reaches the client (the chat response's end, the Realtime
    response.done): SIGKILL right after it, restart on the same data dir, and the turn is there."""
    text = "Remember that my sister Ana lives in Porto."
    server = start_server(tmp_path, models=True, SOMA_SIGNUP="open", timeout=180)
    try:
        _, token = new_user(server, "crash")
        answer = chat(server, token, text) if channel == "chat" else asyncio.run(realtime_turn(server, token, text))
        server.proc.send_signal(signal.SIGKILL)
        server.proc.wait(10)
    finally:
        server.stop()
    restarted = start_server(tmp_path, models=False, timeout=180)
    try:
        with api(restarted, token) as client:
            (conversation,) = client.get("/v1/conversations").json()["data"]
            (turn,) = client.get(f"/v1/conversations/{conversation['id']}").json()["turns"]
        assert conversation["channel"] == channel
        assert turn["user_text"] == text and turn["heard_text"] == answer.strip()
    finally:
        restarted.stop()
