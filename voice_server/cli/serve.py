"""``soma serve``: start the server.

Errors a user can fix (bad settings, port in use, missing model, database down) end it with one line on stderr.
It stops on SIGTERM/SIGINT within ``SOMA_SHUTDOWN_TIMEOUT_S`` (10 s) whatever is running: open connections get
half of it to finish, then their sessions and generations are cancelled and the stores stopped. It exits 0 —
also when a model call that cannot be interrupted (a long prompt being encoded) is still running at the end:
that thread is abandoned, not waited for. Past the deadline a watchdog ends the process with
`EXIT_SHUTDOWN_FORCED` (3), for anything that hangs the shutdown itself.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import ctypes
import errno
import logging
import os
import signal
import socket
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from types import FrameType
from typing import Any

from voice_server.cli.common import EXIT_STARTUP, StartupError, fail
from voice_server.config import Settings, load_settings
from voice_server.logs import configure_logging

log = logging.getLogger("soma")

EXIT_SHUTDOWN_FORCED = 3  # the shutdown deadline passed: the process was ended by the watchdog
STORES_STOP_S = 2.0  # kept from the shutdown deadline for stopping Postgres and Redis (pg_ctl fast: < 1 s)
MODEL_STOP_S = 1.0  # longest wait at shutdown for a model call in flight


def register(subparsers: argparse._SubParsersAction[Any]) -> None:
    """Add the ``serve`` command."""
    serve = subparsers.add_parser("serve", help="start the server (https://localhost:8443 by default)")
    serve.add_argument("--config", type=Path, help="TOML settings file (default: $SOMA_CONFIG)")
    serve.add_argument("--host", help="listen address (default 127.0.0.1)")
    serve.add_argument("--port", type=int, help="listen port (default 8443)")
    serve.add_argument("--http", action="store_true", help="plain HTTP, for use behind a TLS-terminating proxy")
    serve.add_argument("--profile", choices=["ci", "full"], help="model profile to load (default full)")
    serve.set_defaults(func=_cmd_serve)


def _cmd_serve(args: argparse.Namespace) -> int:
    overrides: dict[str, Any] = {}
    if args.host:
        overrides["host"] = args.host
    if args.port is not None:
        overrides["port"] = args.port
    if args.http:
        overrides["tls"] = False
    if args.profile:
        overrides["model_profile"] = args.profile
    settings = load_settings(config_file=args.config, overrides=overrides)
    configure_logging(settings.log_level, settings.log_format)
    limit_malloc_arenas()
    deadline = ShutdownDeadline(settings.shutdown_timeout_s)
    try:
        asyncio.run(_serve(settings, deadline))
    except StartupError as exc:
        return fail(str(exc), EXIT_STARTUP)
    deadline.finish()
    return 0


class ShutdownDeadline:
    """The hard end of a shutdown: armed by the stop signal, it ends the process when the deadline passes.

    Everything the server owns is stopped in order first (connections, sessions, stores); this is for what
    cannot be stopped: a thread inside native model compute, a hung close. Call order: `arm` when the signal
    arrives (idempotent); `abandon` for each part that could not be stopped; once the orderly shutdown returned,
    `finish`.

    Args:
        timeout_s: Seconds from `arm` to the forced exit.
        exit_process: Ends the process without waiting for anything (``os._exit``).
    """

    def __init__(self, timeout_s: float, exit_process: Callable[[int], object] = os._exit) -> None:
        self.timeout_s = timeout_s
        self._exit = exit_process
        self._armed_at: float | None = None
        self._abandoned: list[str] = []
        self._lock = threading.Lock()

    @property
    def armed(self) -> bool:
        return self._armed_at is not None

    def remaining_s(self) -> float | None:
        """Seconds until the forced exit; ``None`` before `arm`."""
        if self._armed_at is None:
            return None
        return max(0.0, self.timeout_s - (time.monotonic() - self._armed_at))

    def arm(self) -> None:
        """Start the countdown (from a signal handler: only starts a thread)."""
        with self._lock:
            if self._armed_at is not None:
                return
            self._armed_at = time.monotonic()
        # A daemon: it must not itself keep a finished process alive.
        threading.Thread(target=self._watch, name="soma-shutdown-deadline", daemon=True).start()

    def _watch(self) -> None:
        time.sleep(self.timeout_s)
        threads = [t.name for t in _blocking_threads()]
        log.critical("shutdown did not finish within %g s: exiting now", self.timeout_s, extra={"threads": threads})
        _flush_logs()
        self._exit(EXIT_SHUTDOWN_FORCED)

    def abandon(self, what: str) -> None:
        """Record a part left running (a model inside a call that cannot be interrupted): `finish` then ends the
        process without the interpreter's exit, which would wait for its threads or destroy it under them."""
        self._abandoned.append(what)

    def finish(self, grace_s: float = 0.5) -> None:
        """After the orderly shutdown: end the process now, with code 0, when a part was abandoned or (after a stop
        signal) worker threads are still running; otherwise return for a normal exit."""
        if not self._abandoned and self._armed_at is None:
            return
        until = time.monotonic() + grace_s
        for thread in _blocking_threads():
            thread.join(max(0.0, until - time.monotonic()))  # idle pool threads are only just ending
        stuck = [t.name for t in _blocking_threads()]
        if stuck or self._abandoned:
            log.warning("exiting with work still running", extra={"threads": stuck, "abandoned": self._abandoned})
            _flush_logs()
            self._exit(0)


def _blocking_threads() -> list[threading.Thread]:
    """Threads that would hold up the interpreter's exit (alive, not daemons, not the main thread)."""
    return [t for t in threading.enumerate() if t.is_alive() and not t.daemon and t is not threading.main_thread()]


def _flush_logs() -> None:
    """Write out what is logged before the process ends without running its exit handlers."""
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            stream.flush()
    logging.shutdown()


MALLOC_ARENAS = 2
_M_ARENA_MAX = -8  # glibc's mallopt parameter number


def limit_malloc_arenas() -> None:
    """Cap glibc's malloc arenas before any thread starts, unless ``MALLOC_ARENA_MAX`` is set.

    Why: model compute runs on many threads (LLM workers, ASR, TTS, the to_thread pool), and glibc gives
    each thread its own arena up to 8 per core; memory freed into one arena is not reused by the others,
    so a long-running server's RSS creeps up with every call. Two arenas cost no measurable speed here
    because the heavy buffers live inside the model runtimes' own allocators. No-op off glibc.
    """
    if os.environ.get("MALLOC_ARENA_MAX"):
        return
    try:
        libc = ctypes.CDLL("libc.so.6")
        libc.mallopt(_M_ARENA_MAX, MALLOC_ARENAS)
    except (OSError, AttributeError):
        log.debug("mallopt unavailable; malloc arenas left at the default")


def bind_socket(host: str, port: int) -> socket.socket:
    """Bind and listen before anything slow starts, so "port in use" is reported at once."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        if exc.errno == errno.EADDRINUSE:
            raise StartupError(f"port {port} on {host} is already in use (set SOMA_PORT or --port)") from None
        raise StartupError(f"cannot listen on {host}:{port} ({exc.strerror})") from None
    sock.listen(2048)
    sock.set_inheritable(True)
    return sock


def _note_signal(signum: int, _frame: object) -> None:
    log.debug("signal %d after shutdown", signum)


async def _serve(settings: Settings, deadline: ShutdownDeadline) -> None:
    import uvicorn

    class Server(uvicorn.Server):
        """uvicorn's server, with the shutdown deadline armed by the stop signal."""

        def handle_exit(self, sig: int, frame: FrameType | None) -> None:
            deadline.arm()
            super().handle_exit(sig, frame)

    from models.paths import ModelMissingError
    from voice_server.api.realtime_routes import WS_FRAME_LIMIT
    from voice_server.app import create_app
    from voice_server.resources import DataDirBusyError, Resources, check_models
    from voice_server.security.keys import KeyFileError
    from voice_server.stores.postgres import DatabaseError
    from voice_server.stores.redis_store import SessionStoreError
    from voice_server.tls import (
        CertificateError,
        certificate_fingerprint,
        ensure_self_signed_cert,
        server_context,
        uvicorn_context_factory,
    )

    sock = bind_socket(settings.host, settings.port)
    # Until uvicorn installs its own handlers, SIGTERM must still unwind the stores (stop Postgres/Redis).
    loop = asyncio.get_running_loop()
    main_task = asyncio.current_task()
    assert main_task is not None
    loop.add_signal_handler(signal.SIGTERM, main_task.cancel)
    try:
        try:
            check_models(settings)
        except ModelMissingError as exc:
            raise StartupError(str(exc)) from None
        ssl: dict[str, Any] = {}
        fingerprint = ""
        if settings.tls:
            cert, key = (
                (settings.tls_cert, settings.tls_key)
                if settings.tls_cert and settings.tls_key
                else ensure_self_signed_cert(settings.data_dir / "tls", settings.host)
            )
            try:
                server_context(cert, key)  # a bad certificate or key ends start-up here, in one line
                fingerprint = certificate_fingerprint(cert)
            except CertificateError as exc:
                raise StartupError(str(exc)) from None
            # uvicorn builds the context itself and has no minimum-version option: the factory hardens it.
            ssl = {
                "ssl_certfile": str(cert),
                "ssl_keyfile": str(key),
                "ssl_context_factory": uvicorn_context_factory,
            }
        try:
            async with Resources.open(settings) as res:
                loop.remove_signal_handler(signal.SIGTERM)
                config = uvicorn.Config(
                    create_app(settings, res),
                    log_config=None,
                    lifespan="on",
                    server_header=False,
                    # Connections get half the deadline to finish; then uvicorn cancels them (and with them their
                    # sessions and generations), leaving the other half for the lifespan and the stores.
                    timeout_graceful_shutdown=max(1, settings.shutdown_timeout_s // 2),
                    ws_max_size=WS_FRAME_LIMIT,
                    **ssl,
                )
                server = Server(config)
                # uvicorn restores the handlers it found and re-raises the signal after its graceful
                # shutdown; with the defaults that would kill the process before the stores are stopped.
                for sig in (signal.SIGINT, signal.SIGTERM):
                    signal.signal(sig, _note_signal)
                shown = "localhost" if settings.host in ("127.0.0.1", "0.0.0.0", "::1", "::") else settings.host
                log.info("Soma is ready at %s://%s:%d", settings.scheme, shown, settings.port)
                if fingerprint:
                    # Lets a user compare what their phone shows for the self-signed certificate before trusting it.
                    log.info("TLS certificate SHA-256 fingerprint: %s", fingerprint)
                await server.serve(sockets=[sock])
                if res.models is not None:
                    # Before the stores stop (Resources would close the models too, without the deadline in view).
                    # Interruptible work stops within a token or a chunk; waiting longer only helps a call that
                    # cannot be interrupted, which is then left running while everything else stops.
                    left = deadline.remaining_s()
                    budget = None if left is None else max(0.0, min(MODEL_STOP_S, left - STORES_STOP_S))
                    if not await asyncio.to_thread(res.models.close, budget):
                        deadline.abandon("models")
        except (DatabaseError, SessionStoreError, ModelMissingError, DataDirBusyError, KeyFileError) as exc:
            raise StartupError(str(exc)) from None
    except asyncio.CancelledError:
        log.info("stopped before start-up finished")
    finally:
        with contextlib.suppress(ValueError, RuntimeError):
            loop.remove_signal_handler(signal.SIGTERM)
        sock.close()

