"""The server really starts on embedded Postgres+pgvector and Redis, serves TLS, and leaves nothing behind."""

from __future__ import annotations

import ssl
from pathlib import Path

import httpx
import psutil
import psycopg
import pytest
from psycopg.rows import dict_row

from tests.conftest import start_server
from tests.eventually import eventually
from voice_server.config import Settings
from voice_server.resources import DataDirBusyError, Resources
from voice_server.stores.postgres import load_migrations


def _processes_using(path: Path) -> list[psutil.Process]:
    found = []
    for proc in psutil.process_iter(["cmdline"]):
        try:
            if any(str(path) in part for part in proc.info["cmdline"] or ()):
                found.append(proc)
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
    return found


def _wait_gone(path: Path, timeout: float = 10) -> list[psutil.Process]:
    """The processes still using ``path`` once there are none (fails, naming them, after ``timeout`` seconds)."""
    return eventually(lambda: _processes_using(path), until=lambda left: not left, timeout_s=timeout, interval=0.1,
                      what=f"no process left using {path}")


async def test_embedded_stores_have_pgvector_and_stop_cleanly(tmp_path: Path) -> None:
    """Embedded Postgres has the vector extension and all migrations; stopping leaves no process behind."""
    settings = Settings(data_dir=tmp_path / "data", load_models=False)
    async with Resources.open(settings) as res:
        async with res.db.pool.connection() as conn:
            cur = await conn.execute("SELECT extversion FROM pg_extension WHERE extname = 'vector'")
            row = await cur.fetchone()
            assert row is not None and tuple(int(x) for x in row["extversion"].split(".")[:2]) >= (0, 8)
            cur = await conn.execute("SELECT current_user AS role")
            assert (await cur.fetchone()) == {"role": "soma_app"}  # the pool is not the schema owner
        async with await psycopg.AsyncConnection.connect(res.db.url, row_factory=dict_row) as owner:
            cur = await owner.execute("SELECT version FROM schema_migrations ORDER BY version")
            assert [r["version"] for r in await cur.fetchall()] == [m.version for m in load_migrations()]
        async with res.db.pool.connection() as conn:
            cur = await conn.execute("SELECT '[1,2,3]'::vector <=> '[1,2,4]'::vector AS d")
            assert (await cur.fetchone())["d"] > 0  # type: ignore[index]
        assert await res.sessions.client.set("session:probe", "1", ex=5)
        assert _processes_using(settings.data_dir)
        with pytest.raises(DataDirBusyError):
            async with Resources.open(settings):
                pass
    assert _wait_gone(settings.data_dir) == []


async def test_restart_reuses_data(tmp_path: Path) -> None:
    """A second start on the same data dir keeps the data and re-runs no migration."""
    settings = Settings(data_dir=tmp_path / "data", load_models=False)
    async with Resources.open(settings) as res, res.db.pool.connection() as conn:
        await conn.execute("INSERT INTO users (username, password_hash) VALUES ('keep', 'x')")
    async with Resources.open(settings) as res, res.db.pool.connection() as conn:
        cur = await conn.execute("SELECT count(*) AS n FROM users WHERE username = 'keep'")
        assert (await cur.fetchone())["n"] == 1  # type: ignore[index]


@pytest.mark.models
def test_serve_with_ci_models_over_tls_and_sigterm(tmp_path: Path) -> None:
    """`soma serve` loads the ci models, serves HTTPS with its generated cert, and exits 0 on SIGTERM
    leaving no postgres or redis process behind."""
    server = start_server(tmp_path, tls=True, models=True, timeout=180)
    try:
        cert = server.data_dir / "tls" / "cert.pem"
        ctx = ssl.create_default_context(cafile=str(cert))
        health = httpx.get(server.base_url.replace("127.0.0.1", "localhost") + "/healthz", verify=ctx).json()
        assert health["status"] == "ok"
        assert {"vad", "asr", "llm", "tts-fast", "tts-quality", "embed"} <= {m.split(":")[0] for m in health["models"]}
        with pytest.raises(httpx.HTTPError):
            httpx.get(server.base_url.replace("https", "http") + "/healthz", timeout=3)
    finally:
        code = server.stop()
    assert code == 0, server.log_text()[-2000:]
    assert _wait_gone(server.data_dir) == []
    assert "Traceback" not in server.log_text()
