"""Chat Completions as the official `openai` SDK sees it, against a real `soma serve` with the ci models:
invalid requests are 400 ``invalid_request_error`` naming the field, ``stop`` ends the reply before the stop
sequence (streamed and not), the API is stateless unless the client opts in to history, and ``usage`` has
OpenAI's details."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import openai
import pytest

from tests.conftest import ServerProcess, new_user
from tests.server_api import auth

pytestmark = [pytest.mark.models, pytest.mark.slow]
SECRET = "Zorblax"
QUESTION = [{"role": "user", "content": "Tell me three facts about the Moon."}]


def client(server: ServerProcess, token: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=server.base_url + "/v1", api_key=token, max_retries=0, timeout=60)


@pytest.fixture(scope="module")
def oc(model_server: ServerProcess) -> Iterator[openai.OpenAI]:
    """One user's SDK client, shared by the tests that do not depend on that user's history."""
    _, token = new_user(model_server, "compat")
    with client(model_server, token) as sdk:
        yield sdk


USER = {"role": "user", "content": "hi"}


@pytest.mark.parametrize(
    ("request_fields", "param", "code"),
    [
        ({"n": 2}, "n", "unsupported_value"),
        ({"temperature": 3}, "temperature", "decimal_above_max_value"),
        ({"temperature": -1}, "temperature", "decimal_below_min_value"),
        ({"top_p": 1.5}, "top_p", "decimal_above_max_value"),
        ({"messages": []}, "messages", "empty_array"),
        (
            {"messages": [USER, {"role": "assistant", "content": "yo"}, {"role": "robot", "content": "x"}]},
            "messages[2].role",
            "invalid_value",
        ),
        ({"messages": [{"role": "user", "content": 5}]}, "messages[0].content", "invalid_type"),
        ({"max_tokens": "many"}, "max_tokens", "invalid_type"),
        ({"model": openai.omit}, "model", "missing_required_parameter"),
        ({"stop": [".", ",", ";", ":", "!"]}, "stop", "array_above_max_length"),
        ({"stop": ""}, "stop", "string_below_min_length"),
        ({"extra_body": {"soma": {"history": "forever"}}}, "soma.history", "invalid_value"),
        ({"extra_body": {"soma": {"histroy": "recent"}}}, "soma.histroy", "unknown_parameter"),
        (
            {"messages": [USER, {"role": "tool", "content": "x", "tool_call_id": "t"}]},
            "messages[1].role",
            "unsupported_role",
        ),
        ({"messages": [USER, {"role": "assistant", "content": "hi"}]}, "messages", "invalid_messages"),
        (
            {"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "x"}}]}]},
            "messages[0].content[0].type",
            "unsupported_content",
        ),
    ],
)
def test_invalid_requests_are_400_naming_the_field(
    oc: openai.OpenAI, request_fields: dict[str, Any], param: str, code: str
) -> None:
    """Each invalid request raises the SDK's BadRequestError (400) with OpenAI's error body: type
    ``invalid_request_error``, the offending field as ``param`` and a stable ``code``."""
    kwargs: dict[str, Any] = {"model": "soma", "messages": [USER], "max_tokens": 4, **request_fields}
    with pytest.raises(openai.BadRequestError) as info:
        oc.chat.completions.create(**kwargs)
    assert info.value.status_code == 400
    body = info.value.body
    assert isinstance(body, dict), body
    assert body["type"] == "invalid_request_error" and body["param"] == param and body["code"] == code, body
    assert body["message"]


def test_a_body_that_is_not_json_is_400_with_a_null_param(model_server: ServerProcess, oc: openai.OpenAI) -> None:
    """Broken JSON and a JSON value that is not an object answer 400 in the same shape, ``param`` null."""
    url = model_server.base_url + "/v1/chat/completions"
    headers = {"Authorization": f"Bearer {oc.api_key}", "Content-Type": "application/json"}
    r = httpx.post(url, content=b'{"model": "soma", "messages": [', headers=headers, timeout=30)
    assert r.status_code == 400, r.text
    error = r.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert error["type"] == "invalid_request_error" and error["param"] is None and error["code"] == "invalid_json"
    r = httpx.post(url, content=b'["soma"]', headers=headers, timeout=30)
    assert r.status_code == 400 and r.json()["error"]["param"] is None and r.json()["error"]["code"] == "invalid_type"


def _reply(oc: openai.OpenAI, **fields: Any) -> tuple[str, str]:
    reply = oc.chat.completions.create(model="soma", messages=QUESTION, max_tokens=48, **fields)
    return reply.choices[0].message.content or "", reply.choices[0].finish_reason


def _streamed(oc: openai.OpenAI, **fields: Any) -> tuple[list[str], list[str]]:
    stream = oc.chat.completions.create(model="soma", messages=QUESTION, max_tokens=48, stream=True, **fields)
    chunks = [c for c in stream if c.choices]
    deltas = [c.choices[0].delta.content for c in chunks if c.choices[0].delta.content]
    return deltas, [c.choices[0].finish_reason for c in chunks if c.choices[0].finish_reason]


def test_stop_ends_the_reply_before_the_stop_sequence(oc: openai.OpenAI) -> None:
    """Greedy and stateless, the same question gets the same reply: with ``stop: "."`` (and with a list of
    stops) it is exactly that reply's text before its first period — nothing of the stop or past it, streamed
    or not — with ``finish_reason: "stop"``."""
    full, _ = _reply(oc)
    assert "." in full, full  # several sentences: there is text past the first stop
    before = full[: full.index(".")]
    text, finish = _reply(oc, stop=".")
    assert (text, finish) == (before, "stop")
    text, finish = _reply(oc, stop=["never-said", "."])
    assert (text, finish) == (before, "stop")
    deltas, finishes = _streamed(oc, stop=".")
    assert "".join(deltas) == before and finishes == ["stop"]
    assert all("." not in delta for delta in deltas)


def test_a_stop_that_never_comes_changes_nothing(oc: openai.OpenAI) -> None:
    """A stop sequence the reply does not contain leaves the reply whole, streamed or not."""
    full, finish = _reply(oc)
    assert _reply(oc, stop=["qqqq-zzzz"]) == (full, finish)
    deltas, finishes = _streamed(oc, stop="qqqq-zzzz")
    assert "".join(deltas) == full and finishes == [finish]


def test_stateless_by_default_history_on_request(model_server: ServerProcess) -> None:
    """Without ``soma.history`` an earlier exchange leaves no trace in the next prompt (the same question
    costs the same prompt tokens before and after it, and its secret is not in the answer); with
    ``"history": "recent"`` the earlier exchanges are added; every exchange is recorded either way."""
    _, token = new_user(model_server, "stateless")
    question = [{"role": "user", "content": "What is the secret word?"}]
    recent = {"soma": {"history": "recent"}}
    with client(model_server, token) as sdk:
        first = sdk.chat.completions.create(model="soma", messages=question, max_tokens=16)
        sdk.chat.completions.create(
            model="soma", messages=[{"role": "user", "content": f"The secret word is {SECRET}."}], max_tokens=16
        )
        stateless = sdk.chat.completions.create(model="soma", messages=question, max_tokens=16)
        remembered = sdk.chat.completions.create(model="soma", messages=question, max_tokens=16, extra_body=recent)
        listing = httpx.get(
            model_server.base_url + "/v1/conversations", headers=auth(token), timeout=30
        ).json()["data"]
    assert first.usage is not None and stateless.usage is not None and remembered.usage is not None
    assert stateless.usage.prompt_tokens == first.usage.prompt_tokens
    assert SECRET not in (stateless.choices[0].message.content or "")
    assert remembered.usage.prompt_tokens > stateless.usage.prompt_tokens + 10  # three exchanges were added
    assert [c["turns"] for c in listing] == [4]


def test_usage_has_openais_token_details(oc: openai.OpenAI) -> None:
    """``usage`` carries ``prompt_tokens_details.cached_tokens`` (the cached persona prefix, within the
    prompt) and ``completion_tokens_details``, in the JSON reply and the streamed usage chunk; harmless
    OpenAI fields and ``top_p`` are accepted."""
    reply = oc.chat.completions.create(
        model="soma",
        messages=QUESTION,
        max_tokens=8,
        user="u-1",
        seed=7,
        presence_penalty=0.5,
        temperature=0.7,
        top_p=0.9,
    )
    usage = reply.usage
    assert usage is not None and usage.prompt_tokens_details is not None and usage.completion_tokens_details
    assert 0 < (usage.prompt_tokens_details.cached_tokens or 0) < usage.prompt_tokens
    assert usage.completion_tokens_details.reasoning_tokens == 0
    assert usage.total_tokens == usage.prompt_tokens + usage.completion_tokens
    stream = oc.chat.completions.create(
        model="soma", messages=QUESTION, max_tokens=8, stream=True, stream_options={"include_usage": True}
    )
    last = list(stream)[-1]
    assert last.usage is not None and last.usage.prompt_tokens_details is not None
    assert last.usage.prompt_tokens_details.cached_tokens == usage.prompt_tokens_details.cached_tokens


def test_top_p_zero_is_greedy_decoding(oc: openai.OpenAI) -> None:
    """``top_p: 0`` (which the model runtime refuses as such) answers like greedy decoding, whatever the
    temperature."""
    greedy = oc.chat.completions.create(model="soma", messages=QUESTION, max_tokens=16).choices[0].message.content
    nucleus = oc.chat.completions.create(model="soma", messages=QUESTION, max_tokens=16, temperature=1.5, top_p=0)
    assert nucleus.choices[0].message.content == greedy
