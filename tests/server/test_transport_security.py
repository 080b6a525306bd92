"""Transport and HTTP hardening against a real `soma serve` over real TLS: protocol versions and cipher suites
(with the generated and with a user-supplied certificate), the logged fingerprint, security headers, CORS,
the WebSocket ``Origin`` check, and login lockout / rate limits.

Login tests give each scenario its own source address with ``X-Forwarded-For``: uvicorn applies it for
connections from loopback (its default ``forwarded_allow_ips``), as it would behind a local reverse proxy.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import hashlib
import json
import re
import secrets
import shutil
import socket
import ssl
import threading
import time
import warnings
from base64 import b64encode
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import pytest
import websockets
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID

from tests.conftest import ServerProcess, start_server
from tests.server_api import auth

LOCKOUT_S = 4
MAX_FAILURES = 5  # the default login_max_failures
SOURCE_ATTEMPTS = 30  # auth_routes.LOGIN_SOURCE_ATTEMPTS
CORS_ORIGIN = "https://app.example.com"
FOREIGN_ORIGIN = "https://evil.example"


# ------------------------------------------------------------------------------------------------ fixtures


def _rsa_certificate(directory: Path) -> tuple[Path, Path]:
    """An RSA-2048 certificate for 127.0.0.1, as an operator would bring one (not Soma's own ECDSA one)."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "operator-supplied")])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=30))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost")]), critical=False)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = directory / "operator-cert.pem", directory / "operator-key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    key_path.chmod(0o600)
    return cert_path, key_path


@pytest.fixture(scope="module")
def tls_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """HTTPS with the generated self-signed certificate, no CORS origins, a short lockout."""
    srv = start_server(
        tmp_path_factory.mktemp("tls-server"), tls=True, SOMA_SIGNUP="open", SOMA_LOGIN_LOCKOUT_S=str(LOCKOUT_S)
    )
    yield srv
    srv.stop()
    shutil.rmtree(srv.data_dir, ignore_errors=True)


@pytest.fixture(scope="module")
def supplied_cert_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """HTTPS with an operator's RSA certificate (``SOMA_TLS_CERT``/``SOMA_TLS_KEY``) and one CORS origin."""
    tmp = tmp_path_factory.mktemp("supplied-cert-server")
    cert, key = _rsa_certificate(tmp)
    srv = start_server(
        tmp,
        tls=True,
        SOMA_SIGNUP="open",
        SOMA_TLS_CERT=str(cert),
        SOMA_TLS_KEY=str(key),
        SOMA_CORS_ORIGINS=CORS_ORIGIN,
    )
    yield srv
    srv.stop()
    shutil.rmtree(srv.data_dir, ignore_errors=True)


@pytest.fixture(params=["self-signed", "supplied"])
def any_tls_server(request: pytest.FixtureRequest) -> ServerProcess:
    """The test runs against the generated certificate and against an operator-supplied RSA one."""
    name = "tls_server" if request.param == "self-signed" else "supplied_cert_server"
    srv: ServerProcess = request.getfixturevalue(name)
    return srv


def _cert_files(server: ServerProcess) -> tuple[Path, Path]:
    supplied = server.env.get("SOMA_TLS_CERT")
    if supplied:
        return Path(supplied), Path(server.env["SOMA_TLS_KEY"])
    return server.data_dir / "tls" / "cert.pem", server.data_dir / "tls" / "key.pem"


def _address(server: ServerProcess) -> tuple[str, int]:
    parts = urlsplit(server.base_url)
    assert parts.hostname is not None and parts.port is not None
    return parts.hostname, parts.port


# ------------------------------------------------------------------------------------------------ TLS


def client_context(
    minimum: ssl.TLSVersion, maximum: ssl.TLSVersion, ciphers: str = "ALL:@SECLEVEL=0"
) -> ssl.SSLContext:
    """A client that offers exactly ``minimum``..``maximum`` (SECLEVEL 0: OpenSSL 3 hides TLS < 1.2 otherwise)."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    ctx.set_ciphers(ciphers)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # TLS 1.0/1.1 are deprecated: that is the point
        ctx.minimum_version = minimum
        ctx.maximum_version = maximum
    return ctx


def handshake(address: tuple[str, int], ctx: ssl.SSLContext) -> tuple[str, str, bytes]:
    """Complete a TLS handshake; return (protocol version, cipher suite, server certificate DER)."""
    with socket.create_connection(address, timeout=5) as raw, ctx.wrap_socket(raw, server_hostname=None) as tls:
        version, cipher, der = tls.version(), tls.cipher(), tls.getpeercert(binary_form=True)
    assert version is not None and cipher is not None and der is not None
    return version, cipher[0], der


@contextlib.contextmanager
def permissive_tls_server(cert: Path, key: Path) -> Iterator[tuple[str, int]]:
    """A throwaway TLS server accepting TLS 1.0+ and every cipher, with the same certificate: the control that
    shows this machine's client can really offer what Soma refuses."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        ctx.minimum_version = ssl.TLSVersion.TLSv1
    ctx.set_ciphers("ALL:@SECLEVEL=0")
    ctx.load_cert_chain(cert, key)
    listener = socket.create_server(("127.0.0.1", 0))

    def serve() -> None:
        while True:
            try:
                conn, _ = listener.accept()
            except OSError:
                return
            with contextlib.suppress(OSError), ctx.wrap_socket(conn, server_side=True):
                pass

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield listener.getsockname()[:2]
    finally:
        listener.close()
        thread.join(5)


OLD_VERSIONS = {"TLSv1": ssl.TLSVersion.TLSv1, "TLSv1.1": ssl.TLSVersion.TLSv1_1}


@pytest.mark.parametrize("version", OLD_VERSIONS)
def test_tls_1_0_and_1_1_are_refused(any_tls_server: ServerProcess, version: str) -> None:
    """A client offering only TLS 1.0 (or 1.1) cannot complete a handshake with Soma."""
    ctx = client_context(OLD_VERSIONS[version], OLD_VERSIONS[version])
    with permissive_tls_server(*_cert_files(any_tls_server)) as control:
        assert handshake(control, ctx)[0] == version  # the client really can speak it
    with pytest.raises(ssl.SSLError):
        handshake(_address(any_tls_server), ctx)


def test_tls_1_2_weak_cipher_suites_are_refused(any_tls_server: ServerProcess) -> None:
    """TLS 1.2 with only CBC or non-forward-secret suites on offer is refused; only ECDHE+AEAD is served."""
    # RSA key transport (no forward secrecy), and ECDHE with CBC — SHA-1 and SHA-2 MACs (Python's own defaults
    # still allow the latter) — for both RSA and ECDSA certificates.
    weak = ":".join(
        ("AES128-SHA", "AES256-GCM-SHA384", "ECDHE-ECDSA-AES128-SHA", "ECDHE-RSA-AES128-SHA",
         "ECDHE-ECDSA-AES128-SHA256", "ECDHE-RSA-AES256-SHA384", "@SECLEVEL=0")
    )
    ctx = client_context(ssl.TLSVersion.TLSv1_2, ssl.TLSVersion.TLSv1_2, weak)
    with permissive_tls_server(*_cert_files(any_tls_server)) as control:
        assert handshake(control, ctx)[0] == "TLSv1.2"
    with pytest.raises(ssl.SSLError):
        handshake(_address(any_tls_server), ctx)


def test_tls_1_2_and_1_3_are_accepted(any_tls_server: ServerProcess) -> None:
    """TLS 1.2 negotiates an ECDHE AEAD suite; TLS 1.3 works; the served certificate is the configured one."""
    version, cipher, der = handshake(
        _address(any_tls_server), client_context(ssl.TLSVersion.TLSv1_2, ssl.TLSVersion.TLSv1_2, "DEFAULT")
    )
    assert version == "TLSv1.2"
    assert cipher.startswith("ECDHE-") and ("GCM" in cipher or "CHACHA20" in cipher), cipher
    version, _, _ = handshake(
        _address(any_tls_server), client_context(ssl.TLSVersion.TLSv1_3, ssl.TLSVersion.TLSv1_3, "DEFAULT")
    )
    assert version == "TLSv1.3"
    expected = x509.load_pem_x509_certificate(_cert_files(any_tls_server)[0].read_bytes())
    assert der == expected.public_bytes(serialization.Encoding.DER)


def test_certificate_fingerprint_is_logged(any_tls_server: ServerProcess) -> None:
    """The start-up log shows the SHA-256 fingerprint of the certificate the server actually presents."""
    _, _, der = handshake(
        _address(any_tls_server), client_context(ssl.TLSVersion.TLSv1_2, ssl.TLSVersion.TLSv1_3, "DEFAULT")
    )
    fingerprint = hashlib.sha256(der).digest().hex(":").upper()
    messages = [json.loads(line)["msg"] for line in any_tls_server.log_text().splitlines() if line.startswith("{")]
    assert f"TLS certificate SHA-256 fingerprint: {fingerprint}" in messages


# ------------------------------------------------------------------------------------------------ headers


def _signup(server: ServerProcess, prefix: str = "sec") -> tuple[str, str, str]:
    """A fresh account: (username, password, bearer token)."""
    name, password = f"{prefix}{secrets.token_hex(4)}", "password-" + secrets.token_hex(6)
    r = httpx.post(server.base_url + "/v1/auth/signup", json={"username": name, "password": password}, verify=False)
    assert r.status_code == 201, r.text
    return name, password, r.json()["token"]["access_token"]


def _assert_security_headers(response: httpx.Response, *, tls: bool) -> None:
    h = response.headers
    csp = {d.split(" ", 1)[0]: d for d in (part.strip() for part in h["content-security-policy"].split(";"))}
    assert csp["default-src"] == "default-src 'self'"
    assert csp["script-src"] == "script-src 'self'"
    assert csp["frame-ancestors"] == "frame-ancestors 'none'"
    assert csp["base-uri"] == "base-uri 'none'"
    assert csp["object-src"] == "object-src 'none'"
    assert "unsafe-inline" not in h["content-security-policy"] and "unsafe-eval" not in h["content-security-policy"]
    assert h["x-content-type-options"] == "nosniff"
    assert h["x-frame-options"] == "DENY"
    assert h["referrer-policy"] == "no-referrer"
    assert "microphone=(self)" in h["permissions-policy"] and "camera=()" in h["permissions-policy"]
    if tls:
        assert re.fullmatch(r"max-age=\d{7,}", h["strict-transport-security"])
    else:
        assert "strict-transport-security" not in h
    assert not any(name.startswith("access-control-") for name in h)


def test_security_headers_on_api_and_page(tls_server: ServerProcess) -> None:
    """API answers (success and error) and the static call page carry the headers; only /v1/ is no-store."""
    _, _, token = _signup(tls_server)
    with httpx.Client(base_url=tls_server.base_url, verify=False) as client:
        me = client.get("/v1/me", headers={**auth(token), "Origin": FOREIGN_ORIGIN})
        denied = client.get("/v1/me")
        page = client.get("/")
        module = client.get("/app.js")
    assert (me.status_code, denied.status_code, page.status_code, module.status_code) == (200, 401, 200, 200)
    for response in (me, denied, page, module):
        _assert_security_headers(response, tls=True)
    assert me.headers["cache-control"] == "no-store" and denied.headers["cache-control"] == "no-store"
    assert "no-store" not in page.headers.get("cache-control", "")  # the shell stays cacheable for offline use


def test_plain_http_has_the_headers_but_no_hsts(server: ServerProcess) -> None:
    """Behind a TLS proxy (``--http``) the headers are still sent, but not HSTS (the proxy's job)."""
    _assert_security_headers(httpx.get(server.base_url + "/"), tls=False)


def test_docs_page_allows_only_its_own_inline_script(tls_server: ServerProcess) -> None:
    """/docs keeps working: its policy names the hash of each inline script it serves, not 'unsafe-inline'."""
    r = httpx.get(tls_server.base_url + "/docs", verify=False)
    assert r.status_code == 200
    scripts = re.findall(r"<script>(.*?)</script>", r.text, re.DOTALL)
    assert scripts
    script_src = next(d for d in r.headers["content-security-policy"].split(";") if d.strip().startswith("script-src"))
    for body in scripts:
        assert f"'sha256-{b64encode(hashlib.sha256(body.encode()).digest()).decode()}'" in script_src
    assert "unsafe-inline" not in script_src
    assert "frame-ancestors 'none'" in r.headers["content-security-policy"]


def test_no_cors_by_default(tls_server: ServerProcess) -> None:
    """Without SOMA_CORS_ORIGINS neither requests nor preflights from another origin get CORS headers."""
    with httpx.Client(base_url=tls_server.base_url, verify=False) as client:
        simple = client.get("/healthz", headers={"Origin": CORS_ORIGIN})
        preflight = client.options(
            "/v1/me",
            headers={
                "Origin": CORS_ORIGIN,
                "Access-Control-Request-Method": "GET",
                "Access-Control-Request-Headers": "authorization",
            },
        )
    assert simple.status_code == 200
    assert preflight.status_code in (404, 405)
    for response in (simple, preflight):
        assert not any(name.startswith("access-control-") for name in response.headers)


def test_cors_for_exactly_the_configured_origins(supplied_cert_server: ServerProcess) -> None:
    """With SOMA_CORS_ORIGINS the listed origin may call the API with a bearer token; others still may not."""
    _, _, token = _signup(supplied_cert_server)
    preflight_headers = {"Access-Control-Request-Method": "GET", "Access-Control-Request-Headers": "authorization"}
    with httpx.Client(base_url=supplied_cert_server.base_url, verify=False) as client:
        ok = client.options("/v1/me", headers={"Origin": CORS_ORIGIN, **preflight_headers})
        me = client.get("/v1/me", headers={"Origin": CORS_ORIGIN, "Authorization": f"Bearer {token}"})
        bad = client.options("/v1/me", headers={"Origin": FOREIGN_ORIGIN, **preflight_headers})
        bad_get = client.get("/v1/me", headers={"Origin": FOREIGN_ORIGIN, "Authorization": f"Bearer {token}"})
    assert ok.status_code == 200
    assert ok.headers["access-control-allow-origin"] == CORS_ORIGIN
    assert "authorization" in ok.headers["access-control-allow-headers"].lower()
    assert "access-control-allow-credentials" not in ok.headers
    assert me.status_code == 200 and me.headers["access-control-allow-origin"] == CORS_ORIGIN
    assert bad.status_code == 400 and "access-control-allow-origin" not in bad.headers
    assert "access-control-allow-origin" not in bad_get.headers
    # The other security headers are unaffected by CORS, on the answer and on the preflight.
    assert me.headers["x-frame-options"] == "DENY" and ok.headers["x-content-type-options"] == "nosniff"
    assert "frame-ancestors 'none'" in ok.headers["content-security-policy"]


def test_call_page_works_under_the_policy_in_chromium(tls_server: ServerProcess) -> None:
    """Over HTTPS with all headers on, Chromium loads the call page and signs in with no CSP violation."""
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        pytest.skip("Chromium is not installed (apt-get install chromium)")
    from playwright.sync_api import expect, sync_playwright

    name, password, _ = _signup(tls_server, "page")
    report = "document.addEventListener('securitypolicyviolation', e => window.cspViolations.push(e.violatedDirective))"
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=chromium, headless=True, args=["--no-sandbox"])
        try:
            page = browser.new_context(ignore_https_errors=True).new_page()
            messages: list[str] = []
            page.on("console", lambda message: messages.append(message.text))
            page.add_init_script("window.cspViolations = [];" + report)
            page.goto(tls_server.base_url + "/")
            page.get_by_role("button", name="I already have an account").click()
            page.get_by_label("Username").fill(name)
            page.get_by_label("Password").fill(password)
            page.get_by_role("button", name="Sign in", exact=True).click()
            expect(page.get_by_role("button", name="Call", exact=True)).to_be_visible()
            assert page.evaluate("window.cspViolations") == []
        finally:
            browser.close()
    assert not [m for m in messages if "Content Security Policy" in m]


# ------------------------------------------------------------------------------------------------ WebSocket


def _wss_context() -> ssl.SSLContext:
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    return ctx


async def _ws_refusal(url: str, token: str, origin: str | None, ctx: ssl.SSLContext | None) -> tuple[int, str]:
    """Open the realtime WebSocket expecting a refusal; return (HTTP status, error code)."""
    kwargs = {"origin": origin} if origin is not None else {}
    with pytest.raises(websockets.InvalidStatus) as refused:
        async with websockets.connect(url, additional_headers=auth(token), ssl=ctx, **kwargs):
            pass
    response = refused.value.response
    return response.status_code, json.loads(response.body or b"{}").get("error", {}).get("code", "")


async def test_websocket_from_a_foreign_origin_is_refused(tls_server: ServerProcess) -> None:
    """Over wss, a foreign or wrong-scheme Origin gets 403 before auth; the own origin and no Origin pass the
    check (this server has no models, so they stop one step later, at 503 models_unavailable)."""
    _, _, token = _signup(tls_server)
    host, port = _address(tls_server)
    url = f"wss://{host}:{port}/v1/realtime"
    ctx = _wss_context()
    before = tls_server.log_text().count("websocket refused: origin not allowed")
    for origin in (FOREIGN_ORIGIN, f"http://{host}:{port}", f"https://{host}:{port + 1}", "null"):
        assert await _ws_refusal(url, token, origin, ctx) == (403, "origin_not_allowed"), origin
    for origin in (f"https://{host}:{port}", None):
        assert await _ws_refusal(url, token, origin, ctx) == (503, "models_unavailable"), origin
    assert tls_server.log_text().count("websocket refused: origin not allowed") - before == 4  # once each


@pytest.mark.models
async def test_websocket_own_origin_and_no_origin_are_accepted(model_server: ServerProcess) -> None:
    """With models loaded, the page's own origin and an SDK without Origin get a session; a foreign one does not."""
    from tests.conftest import new_user

    _, token = new_user(model_server, "wsorigin")
    host, port = _address(model_server)
    url = f"ws://{host}:{port}/v1/realtime"
    headers = auth(token)
    for origin in (f"http://{host}:{port}", None):
        kwargs = {"origin": origin} if origin is not None else {}
        async with websockets.connect(url, additional_headers=headers, **kwargs) as ws:
            assert json.loads(await ws.recv())["type"] == "session.created"
    assert await _ws_refusal(url, token, FOREIGN_ORIGIN, None) == (403, "origin_not_allowed")


# ------------------------------------------------------------------------------------------------ login


def _login(server: ServerProcess, username: str, password: str, source: str) -> httpx.Response:
    return httpx.post(
        server.base_url + "/v1/auth/token",
        json={"username": username, "password": password},
        headers={"X-Forwarded-For": source},
        verify=False,
    )


def _code(response: httpx.Response) -> tuple[int, str]:
    return response.status_code, response.json().get("error", {}).get("code", "ok")


def test_login_lockout_refuses_even_the_right_password(tls_server: ServerProcess) -> None:
    """After 5 wrong passwords the account answers 429 with Retry-After, even to the right password, until the
    lockout ends; a success resets the count; the lockout is logged once, the password never."""
    name, password, _ = _signup(tls_server, "locked")
    source = "198.51.100.1"
    wrong = [_code(_login(tls_server, name, f"wrong-{n}", source)) for n in range(MAX_FAILURES)]
    assert wrong == [(401, "invalid_credentials")] * MAX_FAILURES
    guess = _login(tls_server, name, "wrong-again", source)
    right = _login(tls_server, name, password, source)
    for response in (guess, right):
        assert _code(response) == (429, "account_locked")
        assert 1 <= int(response.headers["retry-after"]) <= LOCKOUT_S
        assert response.headers["x-content-type-options"] == "nosniff"
    time.sleep(int(right.headers["retry-after"]) + 1)
    assert _login(tls_server, name, password, source).status_code == 200

    # Four failures, a success, four more: never locked, because the success cleared the count.
    codes = [_login(tls_server, name, f"bad-{n}", source).status_code for n in range(MAX_FAILURES - 1)]
    codes.append(_login(tls_server, name, password, source).status_code)
    codes += [_login(tls_server, name, f"worse-{n}", source).status_code for n in range(MAX_FAILURES - 1)]
    codes.append(_login(tls_server, name, password, source).status_code)
    assert codes == [401] * 4 + [200] + [401] * 4 + [200]

    log = tls_server.log_text()
    assert sum(1 for line in log.splitlines() if "login locked" in line and name in line) == 1
    assert password not in log and "wrong-again" not in log


def test_unknown_username_is_locked_the_same_way(tls_server: ServerProcess) -> None:
    """A username that does not exist answers exactly like a real one (401s, then 429 account_locked)."""
    ghost = "ghost" + secrets.token_hex(4)
    codes = [_code(_login(tls_server, ghost, f"guess-{n}", "198.51.100.2")) for n in range(MAX_FAILURES + 1)]
    assert codes == [(401, "invalid_credentials")] * MAX_FAILURES + [(429, "account_locked")]


def test_login_attempts_per_source_address_are_limited(tls_server: ServerProcess) -> None:
    """Password spraying from one address (a new username each time) is cut off at 30 attempts per window,
    also for a correct password; another address is unaffected."""
    name, password, _ = _signup(tls_server, "spray")
    sprayer = "203.0.113.9"
    codes = [
        _login(tls_server, "victim" + secrets.token_hex(4), "Summer2026!", sprayer).status_code
        for _ in range(SOURCE_ATTEMPTS)
    ]
    assert codes == [401] * SOURCE_ATTEMPTS
    blocked = _login(tls_server, name, password, sprayer)
    assert _code(blocked) == (429, "rate_limited")
    assert 1 <= int(blocked.headers["retry-after"]) <= 300
    assert _login(tls_server, name, password, "203.0.113.10").status_code == 200
