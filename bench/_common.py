"""Helpers shared by the benchmarks: timing, percentiles, machine description, result files.

Every benchmark writes ``bench/results/<name>.json`` in one format::

    {"name", "command", "when" (ISO UTC), "machine": {"cpus", "cpu_model", "gpu"},
     "models": {role: description}, "metrics": {...}, "notes": "..."}

where a latency metric is ``{"p50": ms, "p95": ms, "n": samples}``.
"""

from __future__ import annotations

import json
import os
import platform
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

RESULTS_DIR = Path(__file__).resolve().parent / "results"


def percentiles(samples_ms: Sequence[float]) -> dict[str, float | int]:
    """``{"p50", "p95", "n"}`` of millisecond samples, rounded to 0.01 ms."""
    if not samples_ms:
        raise ValueError("no samples")
    values = np.asarray(samples_ms, dtype=np.float64)
    return {
        "p50": round(float(np.percentile(values, 50)), 2),
        "p95": round(float(np.percentile(values, 95)), 2),
        "n": len(values),
    }


def time_ms(fn: Callable[[], object], runs: int, *, warmup: int = 1) -> list[float]:
    """Wall milliseconds of ``runs`` calls of ``fn`` after ``warmup`` untimed calls."""
    for _ in range(warmup):
        fn()
    samples = []
    for _ in range(runs):
        started = time.perf_counter()
        fn()
        samples.append((time.perf_counter() - started) * 1000)
    return samples


def machine_info() -> dict[str, Any]:
    """CPU count and model name; ``gpu`` is always ``None`` (Soma runs on CPU)."""
    cpu_model = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text(encoding="utf-8").splitlines():
            if line.startswith("model name"):
                cpu_model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {"cpus": os.cpu_count(), "cpu_model": cpu_model, "gpu": None}


def rss_mb() -> float:
    """Resident set size of this process in MB (Linux ``/proc``)."""
    for line in Path("/proc/self/status").read_text(encoding="utf-8").splitlines():
        if line.startswith("VmRSS:"):
            return round(int(line.split()[1]) / 1024, 1)
    raise RuntimeError("VmRSS not found in /proc/self/status")


def stop_server(server: Any) -> None:
    """Stop a bench's `soma serve` (a ``tests.conftest.ServerProcess``, or ``None`` if it never started); a
    non-zero exit is reported with the tail of its log, so a crash during the run is not mistaken for a result."""
    if server is None:
        return
    code = server.stop()
    if code != 0:
        print(f"server exited with {code}; log tail:\n{server.log_text()[-2000:]}", file=sys.stderr)


def write_result(
    name: str,
    *,
    models: Mapping[str, str],
    metrics: Mapping[str, Any],
    notes: str,
    command: str | None = None,
) -> Path:
    """Write ``bench/results/<name>.json`` in the shared format and return its path."""
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    result = {
        "name": name,
        "command": command or f"make bench BENCH={name}",
        "when": datetime.now(UTC).isoformat(timespec="seconds").replace("+00:00", "Z"),
        "machine": machine_info(),
        "models": dict(models),
        "metrics": dict(metrics),
        "notes": notes,
    }
    path = RESULTS_DIR / f"{name}.json"
    path.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    return path


def print_table(metrics: Mapping[str, Any]) -> None:
    """Print metrics as an aligned table: latency rows show p50/p95/n, scalars their value."""
    width = max(len(key) for key in metrics)
    print(f"{'metric'.ljust(width)}  {'p50':>10}  {'p95':>10}  {'n':>4}")
    for key, value in metrics.items():
        if isinstance(value, Mapping) and "p50" in value:
            print(f"{key.ljust(width)}  {value['p50']:>10.2f}  {value['p95']:>10.2f}  {value['n']:>4}")
        elif isinstance(value, Mapping):
            continue
        else:
            print(f"{key.ljust(width)}  {value!s:>10}")
