"""CPU seconds per test file, in the terminal summary (and so in CI's log) next to `--durations`.

The full suite runs two workers on two cores, so wall-clock durations measure contention as much as
work; what a test file costs is the CPU it burns. Each test's CPU is that of the pytest process, its
reaped children and every live descendant (the Spark driver JVM, spark-submit drivers, the standalone
cluster's daemons and executors, the Kafka broker, notebook kernels), read from /proc. The summary
also gives how many of the machine's cores were busy on average over the run: near all of them means
the suite's time only shrinks with less work, not with more parallelism. A process that outlives its
parent is re-parented outside the tree and its CPU is lost, so a cheap file can show a small negative figure.
"""

from __future__ import annotations

import os
import resource
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

import pytest

TICK = os.sysconf("SC_CLK_TCK")
KEY = "cpu_s"
_machine_start: tuple[float, float] | None = None
_by_file: dict[str, float] = defaultdict(float)
_by_worker: dict[str, float] = defaultdict(float)


def _proc_stat(pid: str) -> tuple[int, float] | None:
    """(parent pid, CPU seconds of the process and its reaped children)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
    return int(fields[1]), sum(int(f) for f in fields[11:15]) / TICK


def tree_cpu_seconds(root: int | None = None) -> float:
    """CPU seconds of this process, its reaped children and all its live descendants (Linux /proc)."""
    root = os.getpid() if root is None else root
    own = resource.getrusage(resource.RUSAGE_SELF)
    reaped = resource.getrusage(resource.RUSAGE_CHILDREN)
    total = own.ru_utime + own.ru_stime + reaped.ru_utime + reaped.ru_stime
    children: dict[int, list[tuple[int, float]]] = defaultdict(list)
    for entry in os.listdir("/proc"):
        if entry.isdigit() and (stat := _proc_stat(entry)) is not None:
            children[stat[0]].append((int(entry), stat[1]))
    stack = [root]
    while stack:
        for pid, seconds in children.get(stack.pop(), []):
            total += seconds
            stack.append(pid)
    return total


def machine_busy() -> tuple[float, float]:
    """(busy, total) CPU seconds of the whole machine since boot (the first line of /proc/stat)."""
    values = [int(v) / TICK for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = values[3] + values[4]  # idle + iowait
    return sum(values) - idle, sum(values)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_protocol(item: pytest.Item, nextitem: pytest.Item | None) -> Any:
    before = tree_cpu_seconds()
    item.user_properties.append((KEY, before))  # replaced by the test's own CPU below
    yield


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Any:
    outcome = yield
    report = outcome.get_result()
    if report.when == "teardown":
        start = dict(item.user_properties).get(KEY)
        if start is not None:
            report.user_properties = [*[p for p in report.user_properties if p[0] != KEY],
                                      (KEY, tree_cpu_seconds() - start)]


def pytest_sessionstart(session: pytest.Session) -> None:
    global _machine_start
    _machine_start = machine_busy()[0], time.monotonic()


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    if report.when != "teardown":
        return
    seconds = dict(report.user_properties).get(KEY)
    if seconds is None:
        return
    _by_file[report.nodeid.split("::", 1)[0]] += seconds
    node = getattr(report, "node", None)
    _by_worker[getattr(getattr(node, "gateway", None), "id", "main")] += seconds


def pytest_terminal_summary(terminalreporter: Any) -> None:
    if not _by_file or _machine_start is None:
        return
    busy, when = _machine_start
    wall = time.monotonic() - when
    write = terminalreporter.write_line
    terminalreporter.section("CPU seconds by test file (process tree; tests/cpuclock.py)")
    for name, seconds in sorted(_by_file.items(), key=lambda kv: -kv[1])[:25]:
        write(f"{seconds:8.1f}  {name}")
    workers = ", ".join(f"{w} {s:.0f}" for w, s in sorted(_by_worker.items()))
    write(f"total {sum(_by_file.values()):.0f} CPU-s ({workers}) in {wall:.0f} s; machine: "
          f"{(machine_busy()[0] - busy) / wall:.2f} of {os.cpu_count()} cores busy on average, "
          f"load average {os.getloadavg()[0]:.1f}")
