"""Timing and memory: a wall clock for in-process stages, a watched subprocess for racers."""

from __future__ import annotations

import contextlib
import json
import math
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, TypeVar

import psutil

T = TypeVar("T")


def timed(fn: Callable[[], T]) -> tuple[float, T]:
    start = time.perf_counter()
    out = fn()
    return time.perf_counter() - start, out


def tree_rss(proc: psutil.Process) -> int:
    """Resident memory of a process and all its descendants (a Spark racer's JVM is a child)."""
    total = 0
    for p in [proc, *proc.children(recursive=True)]:
        with contextlib.suppress(psutil.NoSuchProcess, psutil.AccessDenied):
            total += p.memory_info().rss
    return total


def _oom(log_text: str, returncode: int) -> bool:
    markers = ("MemoryError", "OutOfMemoryError", "Cannot allocate memory", "Out of Memory Error")
    return returncode in (-signal.SIGKILL, 137) or any(m in log_text for m in markers)


def run_watched(args: Sequence[str], result_file: Path, log_file: Path, timeout_s: float,
                poll_s: float = 0.2) -> dict[str, Any]:
    """Run `python -m <args>` in its own session; sample the tree's RSS; kill it on time-out.

    Returns status (ok / timeout / oom / error), the peak RSS in MiB (the larger of the sampled tree
    and the peak the worker reports for its own process) and the worker's own result.
    """
    result_file.unlink(missing_ok=True)
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    with open(log_file, "w") as log:
        proc = psutil.Popen([sys.executable, "-m", *args], stdout=log, stderr=subprocess.STDOUT,
                            start_new_session=True, env=env, cwd=str(Path(__file__).resolve().parent.parent))
        start, peak, status = time.monotonic(), 0, None
        while proc.poll() is None:
            try:
                peak = max(peak, tree_rss(proc))
            except psutil.NoSuchProcess:
                break
            if time.monotonic() - start > timeout_s:
                os.killpg(proc.pid, signal.SIGKILL)  # the racer's own session: itself and its JVM
                proc.wait()
                status = "timeout"
                break
            time.sleep(poll_s)
    text = log_file.read_text(errors="replace")
    out: dict[str, Any] = {"peak_rss_mb": round(peak / 2**20, 1), "wall_s": round(time.monotonic() - start, 1)}
    if status is None:
        if proc.returncode == 0 and result_file.exists():
            status = "ok"
            out.update(json.loads(result_file.read_text()))
            out["peak_rss_mb"] = max(out["peak_rss_mb"], out.pop("own_peak_rss_mb", 0.0))
        else:
            status = "oom" if _oom(text, proc.returncode) else "error"
            lines = [ln for ln in text.strip().splitlines() if ln.strip()]
            out["error"] = lines[-1][:300] if lines else f"exit code {proc.returncode}"
    out["status"] = status
    return out


def loglog_slope(sizes: Sequence[float], seconds: Sequence[float]) -> float | None:
    """Least-squares slope of log(seconds) on log(size): 1.0 is linear, below 1 means fixed costs dominate."""
    pts = [(math.log(s), math.log(t)) for s, t in zip(sizes, seconds, strict=True) if s > 0 and t > 0]
    if len(pts) < 2:
        return None
    mx = sum(x for x, _ in pts) / len(pts)
    my = sum(y for _, y in pts) / len(pts)
    var = sum((x - mx) ** 2 for x, _ in pts)
    return None if var == 0 else round(sum((x - mx) * (y - my) for x, y in pts) / var, 3)
