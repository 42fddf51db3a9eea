"""`kill_process_group` signals only groups that processes we started lead.

Each case runs in a child Python that leads a process group of its own, standing in for a test runner: a
signal that strays to the caller's group kills that child, not this test session.
"""
from __future__ import annotations

import subprocess
import sys
import textwrap

CALLER = textwrap.dedent("""
    import os, signal, subprocess, sys, time
    from churn_spark.devcluster import kill_process_group

    def alive(proc):
        return proc.poll() is None

    # A process of the caller's own group (not a leader), like a Python worker forked beside a test's JVM.
    neighbour = subprocess.Popen(["sleep", "60"])
    kill_process_group(neighbour.pid, signal.SIGKILL)
    time.sleep(0.5)
    print("neighbour alive:", alive(neighbour))

    # A launched process leading its own group, with a child of its own (a worker and its executor).
    leader = subprocess.Popen(["bash", "-c", "sleep 60 & echo $!; wait"], stdout=subprocess.PIPE,
                              text=True, start_new_session=True)
    child = int(leader.stdout.readline())
    kill_process_group(leader.pid, signal.SIGKILL)
    leader.wait(timeout=10)
    time.sleep(0.5)
    try:  # a killed orphan may linger as a zombie until init reaps it: that is dead too
        state = open(f"/proc/{child}/stat").read().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        state = "gone"
    print("child alive:", state not in ("gone", "Z"))

    # The same pid again, after the group is gone and the leader reaped: nothing to signal, no error.
    kill_process_group(leader.pid, signal.SIGTERM)
    try:
        kill_process_group(os.getpgrp())
    except ValueError as e:
        print("own group refused:", "own process group" in str(e))
    neighbour.kill()
""")


def test_kill_process_group_spares_the_callers_group_and_takes_a_leaders_children() -> None:
    out = subprocess.run([sys.executable, "-c", CALLER], capture_output=True, text=True, timeout=60,
                         start_new_session=True)
    assert out.returncode == 0, f"the caller died (exit {out.returncode}): {out.stderr[-500:]}"
    assert out.stdout.splitlines() == ["neighbour alive: True", "child alive: False", "own group refused: True"]
