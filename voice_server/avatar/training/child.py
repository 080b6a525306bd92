"""Running one step of training (`models.finetune`) as a child process that steps aside for live calls.

Training keeps both cores busy for many minutes; a call must never wait for it. The child is a separate process
(torch never enters the server), so stepping aside is immediate and needs no cooperation: while any conversation
is live the child is stopped (``SIGSTOP``) and it continues (``SIGCONT``) when none is. Unlike imports there is
no cap on the wait: a paused trainer costs no call anything, and its time budget counts only the time it ran
(wall time while stopped is the child's own clock too, so the caller's budget is in steps and the child's
``--minutes``; see `models.finetune`).

Cancelling sends ``SIGTERM`` (after ``SIGCONT``, so a stopped child can act on it): the trainer checkpoints
after its current step and exits; it is killed if it has not ended within `TERM_WAIT_S`. A child that dies of
a signal it was not sent (the OOM killer, ``kill -9``) is started again to resume from its checkpoint, at most
`MAX_RESTARTS` times.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import signal
from collections.abc import Callable, Sequence
from typing import Any

from voice_server.live_calls import LiveCalls

log = logging.getLogger(__name__)

TERM_WAIT_S = 60.0
MAX_RESTARTS = 2
MAX_LINE = 1 << 20  # an event line longer than this is not one of ours
STDERR_TAIL = 4000  # characters of the child's stderr kept for the error message


class ChildFailed(RuntimeError):
    """The child ended without its final event; the message says how (its last error event or stderr tail)."""


class ChildCancelled(RuntimeError):
    """The run was cancelled (the job, or the server shutting down)."""


async def run_child(
    argv: Sequence[str],
    env: dict[str, str],
    *,
    live: LiveCalls,
    cancelled: asyncio.Event,
    on_event: Callable[[dict[str, Any]], None],
    final: str,
    restartable: bool = False,
) -> dict[str, Any]:
    """Run ``argv`` to its ``final`` event (returned) while handing every event to ``on_event``.

    Args:
        argv: The child's command line (``models.finetune.command``).
        env: Its environment (``models.finetune.child_env``).
        live: Live conversations: the child is stopped while any is.
        cancelled: Set to stop the child (it checkpoints first); `ChildCancelled` is raised.
        on_event: Called on the event loop with each JSON event the child prints.
        final: The event type that ends a successful run (``done``, ``evaluated``, ``exported``).
        restartable: Start the child again when it is killed by a signal it was not sent (it resumes).

    Raises:
        ChildFailed: It exited without ``final`` (an ``error`` event's message, or its stderr's tail).
        ChildCancelled: ``cancelled`` was set.
    """
    restarts = 0
    while True:
        outcome = await _one_run(argv, env, live, cancelled, on_event, final)
        if isinstance(outcome, dict):
            return outcome
        code, message = outcome
        if cancelled.is_set():
            raise ChildCancelled("cancelled")
        if restartable and code < 0 and restarts < MAX_RESTARTS:
            restarts += 1
            log.warning("training child killed by signal %d; resuming from its checkpoint (%d)", -code, restarts)
            continue
        raise ChildFailed(message or f"the trainer exited with status {code}")


async def _one_run(
    argv: Sequence[str],
    env: dict[str, str],
    live: LiveCalls,
    cancelled: asyncio.Event,
    on_event: Callable[[dict[str, Any]], None],
    final: str,
) -> dict[str, Any] | tuple[int, str]:
    """One child process: its ``final`` event, or (exit code, error message)."""
    proc = await asyncio.create_subprocess_exec(
        *argv, env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, limit=MAX_LINE,
        start_new_session=True,  # a terminal's Ctrl-C reaches the server, which stops the child itself
    )
    assert proc.stdout is not None and proc.stderr is not None
    stderr_tail = ""
    result: dict[str, Any] | None = None
    error = ""

    async def read_stderr() -> None:
        nonlocal stderr_tail
        assert proc.stderr is not None
        while chunk := await proc.stderr.read(65536):
            stderr_tail = (stderr_tail + chunk.decode("utf-8", "replace"))[-STDERR_TAIL:]

    async def read_events() -> None:
        nonlocal result, error
        assert proc.stdout is not None
        while line := await proc.stdout.readline():
            try:
                event = json.loads(line)
            except ValueError:
                continue  # a library printing to stdout: not an event
            if not isinstance(event, dict):
                continue
            if event.get("event") == "error":
                error = str(event.get("message", "the trainer failed"))
            if event.get("event") == final:
                result = event
            on_event(event)

    async def calls_first() -> None:
        stopped = False
        try:
            while True:
                if live.count and not stopped:
                    _signal(proc, signal.SIGSTOP)
                    stopped = True
                    log.info("training paused: a call is live")
                await live.until_none()
                if stopped:
                    _signal(proc, signal.SIGCONT)
                    stopped = False
                    log.info("training resumed: no call is live")
                await live.until_some()
        finally:
            if stopped:
                _signal(proc, signal.SIGCONT)

    async def on_cancel() -> None:
        await cancelled.wait()
        _signal(proc, signal.SIGCONT)
        _signal(proc, signal.SIGTERM)
        try:
            await asyncio.wait_for(proc.wait(), TERM_WAIT_S)
        except TimeoutError:
            _signal(proc, signal.SIGKILL)

    readers = asyncio.gather(read_stderr(), read_events())
    helpers = [asyncio.create_task(calls_first()), asyncio.create_task(on_cancel())]
    try:
        await readers
        code = await proc.wait()
    except BaseException:
        _signal(proc, signal.SIGCONT)
        _signal(proc, signal.SIGKILL)
        with contextlib.suppress(Exception):
            await proc.wait()
        raise
    finally:
        for task in helpers:
            task.cancel()
        for task in helpers:
            with contextlib.suppress(asyncio.CancelledError):
                await task
    if code == 0 and result is not None:
        return result
    lines = stderr_tail.strip().splitlines()
    return code, error or (lines[-1] if lines else "")


def _signal(proc: asyncio.subprocess.Process, sig: signal.Signals) -> None:
    if proc.returncode is None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(proc.pid, sig)
