"""OpenAI-shaped 400s for invalid requests, without a server: the pure helpers of `voice_server.errors` and
the chat request model, then the installed handlers on a tiny app."""

from __future__ import annotations

from typing import Any

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from voice_server.api.chat_routes import ChatCompletionRequest
from voice_server.errors import (
    ApiError,
    describe_validation_errors,
    error_response,
    install_error_handlers,
    validation_param,
)

BASE: dict[str, Any] = {"model": "soma", "messages": [{"role": "user", "content": "hi"}]}


def chat_problem(**fields: Any) -> tuple[str, str | None, str]:
    with pytest.raises(ValidationError) as info:
        ChatCompletionRequest.model_validate({**BASE, **fields})
    return describe_validation_errors(info.value.errors())


def test_locations_become_openai_params() -> None:
    """Indexes in brackets, names dotted, the source and union member names left out; the body itself is None."""
    assert validation_param(("body", "messages", 2, "role")) == "messages[2].role"
    assert validation_param(("body", "messages", 0, "content", "list[TextPart]", 1, "type")) == (
        "messages[0].content[1].type"
    )
    assert validation_param(("body", "stop", "constrained-str")) == "stop"
    assert validation_param(("query", "limit")) == "limit"
    assert validation_param(("body",)) is None
    assert validation_param(()) is None


@pytest.mark.parametrize(
    ("fields", "code", "param"),
    [
        ({"n": 2}, "unsupported_value", "n"),
        ({"n": 0}, "integer_below_min_value", "n"),
        ({"temperature": 3}, "decimal_above_max_value", "temperature"),
        ({"temperature": -0.1}, "decimal_below_min_value", "temperature"),
        ({"top_p": 1.5}, "decimal_above_max_value", "top_p"),
        ({"top_p": -0.1}, "decimal_below_min_value", "top_p"),
        ({"messages": []}, "empty_array", "messages"),
        ({"messages": "hi"}, "invalid_type", "messages"),
        (
            {"messages": [{"role": "user", "content": "a"}] * 2 + [{"role": "robot"}]},
            "invalid_value",
            "messages[2].role",
        ),
        ({"messages": [{"role": "user", "content": 5}]}, "invalid_type", "messages[0].content"),
        ({"messages": [{"role": "user", "content": [{"type": 5}]}]}, "invalid_type", "messages[0].content[0].type"),
        ({"max_tokens": "many"}, "invalid_type", "max_tokens"),
        ({"model": None}, "invalid_type", "model"),
        ({"stop": ["a", "b", "c", "d", "e"]}, "array_above_max_length", "stop"),
        ({"stop": ""}, "string_below_min_length", "stop"),
        ({"stop": ["a", ""]}, "string_below_min_length", "stop[1]"),
        ({"stop": 5}, "invalid_type", "stop"),
        ({"soma": {"history": "forever"}}, "invalid_value", "soma.history"),
        ({"soma": {"histroy": "recent"}}, "unknown_parameter", "soma.histroy"),
    ],
)
def test_invalid_chat_requests_name_the_field_and_an_openai_code(fields: dict[str, Any], code: str, param: str) -> None:
    """Each invalid chat request maps to OpenAI's code for the mistake and the field's param."""
    got_code, got_param, message = chat_problem(**fields)
    assert (got_code, got_param) == (code, param)
    assert message.startswith(param + ": ")


def test_a_missing_model_is_a_missing_required_parameter() -> None:
    """The first problem gives code and param; the message lists every problem."""
    with pytest.raises(ValidationError) as info:
        ChatCompletionRequest.model_validate({"messages": []})
    code, param, message = describe_validation_errors(info.value.errors())
    assert (code, param) == ("missing_required_parameter", "model")
    assert "model: Field required" in message and "messages: " in message


def test_valid_requests_keep_harmless_extras_and_their_stops() -> None:
    """Unknown OpenAI fields are ignored; ``stop`` is none, one or up to four; ``n`` may be 1 or null."""
    extras = {"user": "u", "seed": 1, "presence_penalty": 0.5, "frequency_penalty": 0.1, "n": None}
    request = ChatCompletionRequest.model_validate({**BASE, **extras})
    assert request.stops() == () and request.history == "none"
    assert ChatCompletionRequest.model_validate({**BASE, "soma": None, "stop": None}).history == "none"
    assert ChatCompletionRequest.model_validate({**BASE, "stop": "."}).stops() == (".",)
    four = ChatCompletionRequest.model_validate({**BASE, "stop": ["a", "b", "c", "d"], "n": 1})
    assert four.stops() == ("a", "b", "c", "d")
    assert ChatCompletionRequest.model_validate({**BASE, "soma": {"history": "recent"}}).history == "recent"


def test_validation_messages_never_echo_the_input() -> None:
    """Only locations and pydantic's messages reach the client, not the submitted values."""
    secret = "hunter2-do-not-echo"
    errors = [
        {
            "type": "string_type",
            "loc": ("body", "password"),
            "msg": "Input should be a valid string",
            "input": [secret],
            "ctx": {"note": secret},
        }
    ]
    code, param, message = describe_validation_errors(errors)
    assert secret not in message and (code, param) == ("invalid_type", "password")
    assert describe_validation_errors([]) == ("invalid_request", None, "invalid request")


def test_error_bodies_always_carry_param() -> None:
    """``param`` is null unless given; ApiError's old positional form still works."""
    assert b'"param":null' in error_response(400, "x", "m").body
    assert b'"param":"n"' in error_response(400, "x", "m", param="n").body
    old = ApiError(404, "not_found", "gone")
    assert old.param is None and ApiError(400, "c", "m", param="stop").param == "stop"


class Signup(BaseModel):
    model_config = ConfigDict(extra="forbid")
    username: str = Field(min_length=2)
    password: str


def tiny_app() -> TestClient:
    app = FastAPI()
    install_error_handlers(app)

    @app.post("/signup")
    async def signup(body: Signup) -> dict[str, str]:
        return {"ok": body.username}

    @app.get("/items/{item_id}")
    async def item(item_id: int) -> dict[str, int]:
        raise ApiError(400, "bad_item", "no such item", param="item_id")

    return TestClient(app)


def test_the_handlers_answer_400_in_openai_shape() -> None:
    """Validation errors of any route are 400 ``invalid_request_error`` with param and code; a body that is
    not JSON is ``invalid_json`` with a null param; an ApiError's param is passed through; OpenAPI documents
    400, not 422."""
    with tiny_app() as client:
        r = client.post("/signup", json={"username": "a", "password": "secret-pw-123"})
        assert r.status_code == 400 and "secret-pw-123" not in r.text
        assert r.json()["error"] == {
            "message": "username: String should have at least 2 characters",
            "type": "invalid_request_error",
            "param": "username",
            "code": "string_below_min_length",
        }
        r = client.post("/signup", content=b"{not json", headers={"Content-Type": "application/json"})
        assert r.status_code == 400
        error = r.json()["error"]
        assert (
            error["param"] is None and error["code"] == "invalid_json" and error["message"].startswith("invalid JSON")
        )
        r = client.post("/signup", content=b"", headers={"Content-Type": "application/json"})
        assert r.status_code == 400 and r.json()["error"]["code"] == "missing_required_parameter"
        r = client.get("/items/x")
        assert r.status_code == 400 and r.json()["error"]["param"] == "item_id"
        assert client.get("/items/3").json()["error"] == {
            "message": "no such item",
            "type": "invalid_request_error",
            "param": "item_id",
            "code": "bad_item",
        }
        spec = client.get("/openapi.json").json()
    responses = spec["paths"]["/signup"]["post"]["responses"]
    assert "422" not in responses and "400" in responses
    assert "HTTPValidationError" not in str(spec)
