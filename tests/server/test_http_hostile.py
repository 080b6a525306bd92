"""Hostile HTTP bodies and tokens from the fuzzing run, against a real server, plus the checks behind them.

JSON bodies with a lone UTF-16 surrogate or a 4,300+ digit integer are a 400 ``invalid_json`` on every JSON
route (not a 500 from wherever the string or number ends up); share-link tokens are accepted in one spelling
only, as are bearer tokens.
"""

from __future__ import annotations

import base64
import json
import socket
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.conftest import ServerProcess, new_user
from tests.server_api import auth
from voice_server.http_limits import MAX_JSON_INT_DIGITS, json_body_problem
from voice_server.security.share_links import PREFIX, check_token, make_token

BIG_INT = "9" * (MAX_JSON_INT_DIGITS + 100)


# ---------------------------------------------------------------------------------------- the JSON check


def _unencodable(value: Any) -> bool:
    """Whether a parsed JSON value holds a string (or key) that is not encodable as UTF-8."""
    if isinstance(value, str):
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            return True
        return False
    if isinstance(value, list):
        return any(_unencodable(v) for v in value)
    if isinstance(value, dict):
        return any(_unencodable(k) or _unencodable(v) for k, v in value.items())
    return False


def _escaped(text: str) -> str:
    """``text`` as a JSON string literal that spells surrogates and some other characters as ``\\uXXXX``."""
    out = []
    for ch in text:
        if ch in '"\\':
            out.append("\\" + ch)
        elif ord(ch) < 0x20 or 0xD800 <= ord(ch) <= 0xDFFF or ch in "é😀":
            out.append("".join(f"\\u{unit:04x}" for unit in _utf16_units(ch)))
        else:
            out.append(ch)
    return '"' + "".join(out) + '"'


def _utf16_units(ch: str) -> list[int]:
    if ord(ch) > 0xFFFF:
        n = ord(ch) - 0x10000
        return [0xD800 + (n >> 10), 0xDC00 + (n & 0x3FF)]
    return [ord(ch)]


json_texts = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False)
    | st.text(
        alphabet=st.characters(codec=None, exclude_categories=()) | st.sampled_from(["\\", '"', "u", "\ud83d"]),
        max_size=12,
    ),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=4), inner, max_size=4),
    max_leaves=12,
)


def _dump(value: Any) -> str:
    """JSON text for ``value`` whose strings use `_escaped` (json.dumps refuses no surrogate but spells all
    of them the same way)."""
    if isinstance(value, str):
        return _escaped(value)
    if isinstance(value, list):
        return "[" + ",".join(_dump(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ",".join(f"{_escaped(k)}:{_dump(v)}" for k, v in value.items()) + "}"
    return json.dumps(value)


@settings(max_examples=500, deadline=None, derandomize=True)
@given(json_texts)
def test_the_json_check_agrees_with_the_parser(value: Any) -> None:
    """On valid JSON, `json_body_problem` reports a surrogate exactly when the parsed value holds a string
    that cannot be encoded as UTF-8."""
    text = _dump(value)
    parsed = json.loads(text)
    assert (json_body_problem(text.encode()) is not None) == _unencodable(parsed), text


@pytest.mark.parametrize(
    ("body", "problem"),
    [
        (b'"\\ud800"', "surrogate"),
        (b"[" * 100_000 + b'"\\ud800"', "nested"),
        (b'"\\udc00\\ud800"', "surrogate"),
        (b'"\\ud83d x \\ude00"', "surrogate"),
        (b'{"\\ud800": 1}', "surrogate"),
        (b'"\xed\xa0\x80"', "not UTF-8"),  # a surrogate as CESU-8 bytes
        (b'"\xff"', "not UTF-8"),
        (BIG_INT.encode(), "digits"),
        (b'{"n": -' + BIG_INT.encode() + b"}", "digits"),
        (b'"\\ud83d\\ude00"', None),
        (b'"\\\\ud800"', None),  # an escaped backslash, then the text "ud800"
        (b'"' + BIG_INT.encode() + b'"', None),  # digits in a string
        (b"0." + BIG_INT.encode(), None),  # floats have no digit limit
        (b"1" + b"0" * 100 + b"e" + BIG_INT.encode(), None),
        (b"9" * MAX_JSON_INT_DIGITS, None),
    ],
)
def test_the_json_check_on_the_fuzzing_runs_cases(body: bytes, problem: str | None) -> None:
    """Lone surrogates (escaped or as bytes), invalid UTF-8 and too-long integers are named; their look-alikes
    (a pair, an escaped backslash, digits in a string, long floats, exactly the limit) are not."""
    found = json_body_problem(body)
    assert found is None if problem is None else problem in (found or "")
    if problem is None:
        json.loads(body)  # and Python's parser indeed takes them


LINEAR_CASES = {
    "escaped quotes, no end": b'"' + b'\\"' * 500_000,
    "digit runs just under the limit": (b"9" * MAX_JSON_INT_DIGITS + b",") * 240,
    "a million numbers": b"[" + b"1," * 500_000 + b"1]",
    "a pair among a million numbers": b'["\\ud83d\\ude00",' + b"1," * 500_000 + b"1]",
}


@pytest.mark.parametrize("body", LINEAR_CASES.values(), ids=LINEAR_CASES.keys())
def test_the_json_check_is_cheap_on_a_megabyte(body: bytes) -> None:
    """1 MB bodies built to make a scanner backtrack or loop in Python are checked in well under a second (it
    runs on the event loop)."""
    started = time.monotonic()
    json_body_problem(body)
    assert time.monotonic() - started < 0.2


# --------------------------------------------------------------------------------------- against a server


def _post(server: ServerProcess, path: str, token: str, body: bytes, **headers: str) -> httpx.Response:
    headers = {"Content-Type": "application/json", **auth(token), **headers}
    return httpx.post(server.base_url + path, content=body, headers=headers, timeout=30)


def _invalid_json(r: httpx.Response) -> bool:
    return r.status_code == 400 and r.json()["error"] == {
        "message": r.json()["error"]["message"], "type": "invalid_request_error", "param": None, "code": "invalid_json",
    }


def test_lone_surrogates_in_token_creation_are_400_not_500(server: ServerProcess) -> None:
    """A lone surrogate in token scopes, name or a key is 400 ``invalid_json``; a proper pair and the text of an
    escaped backslash are ordinary input."""
    _, token = new_user(server, "surrogate")
    for body in [
        b'{"name": "a", "scopes": ["\\ud800"]}',
        b'{"name": "\\udfff", "scopes": ["chat"]}',
        b'{"name": "a", "scopes": ["chat"], "\\ud800": 1}',
        b'{"name": "\xed\xa0\x80", "scopes": ["chat"]}',
    ]:
        r = _post(server, "/v1/auth/tokens", token, body)
        assert _invalid_json(r), (body, r.status_code, r.text)
        assert "surrogate" in r.json()["error"]["message"] or "UTF-8" in r.json()["error"]["message"]
    r = _post(server, "/v1/auth/tokens", token, b'{"name": "\\ud83d\\ude00 \\\\ud800", "scopes": ["chat"]}')
    assert r.status_code == 201 and r.json()["name"] == "\U0001f600 \\ud800", r.text
    r = httpx.post(server.base_url + "/v1/auth/signup", content=b'{"username": "\\ud800x", "password": "p"}',
                   headers={"Content-Type": "application/json"})
    assert _invalid_json(r), r.text  # the public routes too


async def test_the_check_cannot_be_sidestepped(server: ServerProcess) -> None:
    """Chunked bodies, a second Content-Type header, no Content-Type, ``+json`` types: all checked; a chunked body
    over the size cap is still a 413."""
    _, token = new_user(server, "sidestep")
    bad = b'{"name": "a", "scopes": ["\\ud800"]}'
    url = server.base_url + "/v1/auth/tokens"

    async def chunked(body: bytes, size: int = 7) -> AsyncIterator[bytes]:
        for i in range(0, len(body), size):
            yield body[i : i + size]

    async with httpx.AsyncClient(timeout=30, headers=auth(token)) as client:
        json_type = {"Content-Type": "application/json"}
        assert _invalid_json(await client.post(url, content=chunked(bad), headers=json_type))
        huge = b'{"name": "' + b"x" * (2 * 1024 * 1024) + b'"}'
        assert (await client.post(url, content=chunked(huge, 65536), headers=json_type)).status_code == 413
        two_types = await client.post(url, content=bad, headers=[("Content-Type", "application/json"),
                                                                 ("Content-Type", "text/plain")])
        assert _invalid_json(two_types), two_types.text
        assert _invalid_json(await client.post(url, content=bad))  # FastAPI reads an untyped body as JSON
        assert _invalid_json(await client.post(url, content=bad, headers={"Content-Type": "application/x+json"}))


def test_integers_beyond_pythons_digit_limit_are_400_not_500(server: ServerProcess) -> None:
    """A 4,400-digit integer anywhere in a JSON body is 400 ``invalid_json`` naming the limit; the same digits in
    a string or as a float are not refused by it."""
    _, token = new_user(server, "digits")
    chat = b'{"model": "soma", "messages": [{"role": "user", "content": "hi"}], "max_tokens": ' + BIG_INT.encode()
    r = _post(server, "/v1/chat/completions", token, chat + b"}")
    assert _invalid_json(r) and str(MAX_JSON_INT_DIGITS) in r.json()["error"]["message"], r.text
    base = b'{"name": "n", "scopes": ["chat"], "note": '
    assert _invalid_json(_post(server, "/v1/auth/tokens", token, base + BIG_INT.encode() + b"}"))
    assert _post(server, "/v1/auth/tokens", token, base + b'"' + BIG_INT.encode() + b'"}').status_code == 201
    assert _post(server, "/v1/auth/tokens", token, base + b"0." + BIG_INT.encode() + b"}").status_code == 201


def test_content_length_with_thousands_of_digits_is_not_a_500(server: ServerProcess) -> None:
    """``Content-Length: 000…0002`` (5,000 zeros; the HTTP parser takes it as 2) is read as 2, not a 500 from
    ``int()``'s digit limit; 5,000 significant digits are a 413 or the parser's 400."""
    _, token = new_user(server, "length")
    host, port = server.base_url.removeprefix("http://").split(":")
    for length, body, statuses in [(b"0" * 5000 + b"2", b"{}", {400}), (b"9" * 30, b"{}", {400, 413})]:
        with socket.create_connection((host, int(port)), timeout=10) as conn:
            head = b"POST /v1/auth/tokens HTTP/1.1\r\nHost: soma\r\nContent-Type: application/json\r\n"
            bearer = b"Authorization: Bearer " + token.encode() + b"\r\n"
            conn.sendall(head + bearer + b"Content-Length: " + length + b"\r\n\r\n" + body)
            status = int(conn.recv(64).split(b" ")[1])
        assert status in statuses, (length[-8:], status)


def test_uploads_are_not_read_as_json(server: ServerProcess) -> None:
    """A media upload is opaque bytes, whatever its Content-Type: a file holding ``"\\ud800"`` is stored as is."""
    _, token = new_user(server, "upload")
    content = b'{"x": "\\ud800", "n": ' + BIG_INT.encode() + b"}"
    r = httpx.post(server.base_url + "/v1/media", params={"name": "odd.json"}, content=content,
                   headers={"Content-Type": "application/json", **auth(token)})
    assert r.status_code == 201, r.text
    got = httpx.get(server.base_url + r.json()["content_url"], headers=auth(token))
    assert got.content == content


def test_lone_surrogate_in_a_chat_message_is_400_not_500(model_server: ServerProcess) -> None:
    """The fuzzing run's chat message ``"\\ud800"`` (a 500 once it reached the models and the database)."""
    _, token = new_user(model_server, "chatsur")
    body = b'{"model": "soma", "messages": [{"role": "user", "content": "\\ud800"}]}'
    r = _post(model_server, "/v1/chat/completions", token, body)
    assert _invalid_json(r), r.text
    parts = b'{"model": "soma", "messages": [{"role": "user", "content": [{"type": "text", "text": "\\udc00"}]}]}'
    assert _invalid_json(_post(model_server, "/v1/chat/completions", token, parts))


# ------------------------------------------------------------------------------------------------ tokens


def spellings(token: str) -> list[str]:
    """Other spellings of a share-link token's bytes that a lenient base64 decoder takes."""
    raw = token[len(PREFIX) :]
    data = base64.urlsafe_b64decode(raw + "==")
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
    last = alphabet.index(raw[-1])
    other_bits = next(c for i, c in enumerate(alphabet) if i >> 4 == last >> 4 and i != last)
    variants = [
        PREFIX + raw + "==",  # padded
        PREFIX + raw[:-1] + other_bits,  # other unused trailing bits
        PREFIX + raw[:10] + "." + raw[10:],  # a junk character the decoder skips
        PREFIX + raw[:10] + "%0A" + raw[10:],  # a newline, percent-encoded in the URL
        PREFIX + base64.b64encode(data).decode().rstrip("=").replace("/", "%2F"),  # the standard alphabet
    ]
    return [v for v in variants if v != token]


def test_share_link_tokens_have_one_spelling() -> None:
    """`check_token` takes the token `make_token` wrote and none of its other spellings."""
    key = b"k" * 32
    for _ in range(50):
        link = uuid.uuid4()
        token = make_token(key, link, time.time() + 60)
        assert check_token(key, token) == link
        for variant in spellings(token):
            assert check_token(key, variant.replace("%0A", "\n").replace("%2F", "/")) is None, variant


def test_share_links_open_only_by_their_canonical_token(server: ServerProcess) -> None:
    """A share link opens by its token (200) and by no padded, re-alphabeted, junk-laden or other-bits variant
    (404, like an unknown link)."""
    _, token = new_user(server, "sharer")
    media = httpx.post(server.base_url + "/v1/media", params={"name": "a.txt"}, content=b"shared bytes",
                       headers={"Content-Type": "text/plain", **auth(token)}).json()
    tried = 0
    for _ in range(10):  # until a token's standard-alphabet spelling differs (it has a '-' or '_')
        link = httpx.post(server.base_url + "/v1/share-links", json={"media_id": media["id"]},
                          headers=auth(token)).json()
        opened = httpx.get(server.base_url + link["url"])
        assert opened.status_code == 200 and opened.content == b"shared bytes"
        for variant in spellings(link["token"]):
            r = httpx.get(server.base_url + "/v1/shared/" + variant)
            assert r.status_code == 404 and r.json()["error"]["code"] == "not_found", (variant, r.status_code)
            tried += 1
        if len(spellings(link["token"])) == 5:
            break
    assert tried >= 5


def test_bearer_tokens_have_one_spelling(server: ServerProcess) -> None:
    """A bearer token works as issued; padded or re-alphabeted spellings of it are 401 (it is looked up by the
    hash of its exact text, never decoded)."""
    for _ in range(10):  # until a token has a '-' or '_' to re-alphabet
        _, token = new_user(server, "bearer")
        if "-" in token[5:] or "_" in token[5:]:
            break
    assert httpx.get(server.base_url + "/v1/me", headers=auth(token)).status_code == 200
    body = token.removeprefix("soma_")
    for variant in {"soma_" + body + "=", "soma_" + body.replace("-", "+").replace("_", "/")} - {token}:
        assert httpx.get(server.base_url + "/v1/me", headers=auth(variant)).status_code == 401, variant
