"""The training child process as the server runs it: events, pausing for live calls (really stopped by the
kernel), cancelling, resuming after a kill -9, failures with their message; and the gate's rule.

The children are small real Python processes speaking the trainer's event protocol (`models.finetune`), so these
run in seconds; the real trainer is exercised end to end in tests/models/test_finetune.py and
tests/server/test_training_api.py.
"""

from __future__ import annotations

import asyncio
import os
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest

from voice_server.avatar.training.child import ChildCancelled, ChildFailed, run_child
from voice_server.avatar.training.job import decide
from voice_server.live_calls import LiveCalls

TICKS = """
import json, os, sys, time
print(json.dumps({"event": "start", "pid": os.getpid()}), flush=True)
for step in range(1, int(sys.argv[1]) + 1):
    time.sleep(0.05)
    print(json.dumps({"event": "progress", "step": step}), flush=True)
print("a library's stray line", flush=True)
print(json.dumps({"event": "done", "steps": int(sys.argv[1])}), flush=True)
"""


def _script(tmp_path: Path, body: str) -> list[str]:
    path = tmp_path / "child.py"
    path.write_text(textwrap.dedent(body), encoding="utf-8")
    return [sys.executable, str(path)]


def _state(pid: int) -> str:
    """The process's scheduler state letter (``T``: stopped)."""
    stat = Path(f"/proc/{pid}/stat").read_text(encoding="ascii")
    return stat.rsplit(")", 1)[1].split()[0]


async def test_events_reach_the_caller_and_the_final_one_is_returned(tmp_path: Path) -> None:
    events: list[dict[str, Any]] = []
    done = await run_child(_script(tmp_path, TICKS) + ["5"], dict(os.environ), live=LiveCalls(),
                           cancelled=asyncio.Event(), on_event=events.append, final="done")
    assert done == {"event": "done", "steps": 5}
    assert [e["step"] for e in events if e["event"] == "progress"] == [1, 2, 3, 4, 5]


async def test_a_live_call_stops_the_child_until_it_ends(tmp_path: Path) -> None:
    """While a conversation is live the child is stopped by the kernel (no step advances); it continues when
    the call ends and still reaches its end."""
    live = LiveCalls()
    events: list[dict[str, Any]] = []
    started = asyncio.Event()

    def seen(event: dict[str, Any]) -> None:
        events.append(event)
        if event["event"] == "progress" and event["step"] == 3:
            live.opened()  # a call starts mid-training
            started.set()

    run = asyncio.create_task(run_child(_script(tmp_path, TICKS) + ["40"], dict(os.environ), live=live,
                                        cancelled=asyncio.Event(), on_event=seen, final="done"))
    await asyncio.wait_for(started.wait(), 10)
    pid = events[0]["pid"]
    for _ in range(100):
        if _state(pid) == "T":
            break
        await asyncio.sleep(0.02)
    assert _state(pid) == "T"
    paused_at = len(events)
    await asyncio.sleep(0.5)  # ten steps' time
    assert len(events) <= paused_at + 1  # at most the line already in the pipe
    live.closed()
    done = await asyncio.wait_for(run, 20)
    assert done["steps"] == 40


async def test_cancel_stops_even_a_paused_child(tmp_path: Path) -> None:
    live = LiveCalls()
    live.opened()  # paused from the start
    cancelled = asyncio.Event()
    run = asyncio.create_task(run_child(_script(tmp_path, TICKS) + ["400"], dict(os.environ), live=live,
                                        cancelled=cancelled, on_event=lambda _: None, final="done"))
    await asyncio.sleep(0.5)
    cancelled.set()
    with pytest.raises(ChildCancelled):
        await asyncio.wait_for(run, 10)


async def test_a_killed_child_is_started_again_and_resumes(tmp_path: Path) -> None:
    """kill -9 (or the OOM killer) is not a failure of the job: the child starts again from its checkpoint."""
    marker = tmp_path / "checkpoint"
    script = _script(tmp_path, f"""
        import json, os, signal
        from pathlib import Path
        mark = Path({str(marker)!r})
        resumed = mark.exists()
        print(json.dumps({{"event": "start", "resumed_from": 7 if resumed else 0}}), flush=True)
        if not resumed:
            mark.write_text("7")
            os.kill(os.getpid(), signal.SIGKILL)
        print(json.dumps({{"event": "done", "steps": 10}}), flush=True)
    """)
    events: list[dict[str, Any]] = []
    done = await run_child(script, dict(os.environ), live=LiveCalls(), cancelled=asyncio.Event(),
                           on_event=events.append, final="done", restartable=True)
    assert done["steps"] == 10
    assert [e["resumed_from"] for e in events if e["event"] == "start"] == [0, 7]
    with pytest.raises(ChildFailed, match="status -9"):  # without restarts it is a failure
        marker.unlink()
        await run_child(script, dict(os.environ), live=LiveCalls(), cancelled=asyncio.Event(),
                        on_event=lambda _: None, final="done")


async def test_a_failing_child_reports_its_error(tmp_path: Path) -> None:
    script = _script(tmp_path, """
        import json, sys
        print(json.dumps({"event": "error", "message": "pairs.jsonl line 3: not JSON"}), flush=True)
        sys.exit(2)
    """)
    with pytest.raises(ChildFailed, match="line 3: not JSON"):
        await run_child(script, dict(os.environ), live=LiveCalls(), cancelled=asyncio.Event(),
                        on_event=lambda _: None, final="done", restartable=True)
    crash = _script(tmp_path, "raise SystemExit('torch exploded')")
    with pytest.raises(ChildFailed, match="torch exploded"):
        await run_child(crash, dict(os.environ), live=LiveCalls(), cancelled=asyncio.Event(),
                        on_event=lambda _: None, final="done")


def test_the_gate_needs_both_measures() -> None:
    """On only with a lower held-out perplexity *and* a style closer than today's avatar's."""
    assert decide(20.0, 8.0, {"base": 0.5, "prompt_only": 0.4, "tuned": 0.2})[0] is True
    assert decide(20.0, 21.0, {"base": 0.5, "prompt_only": 0.4, "tuned": 0.2}) == (
        False, "it does not predict your held-out replies better than the base model")
    assert decide(20.0, 8.0, {"base": 0.5, "prompt_only": 0.3, "tuned": 0.3})[0] is False
