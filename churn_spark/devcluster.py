"""A real Spark standalone cluster on 127.0.0.1 for development and tests.

Started from the installed pyspark (`spark-class …Master` / `…Worker`), so the executors run the
same Python environment as the driver: the package reaches them as an installed environment.
`python -m churn_spark.devcluster start|stop|status` is the script form.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shlex
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import asdict, dataclass, field
from pathlib import Path

import pyspark

HOST = "127.0.0.1"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


def spark_home() -> str:
    return os.environ.get("SPARK_HOME") or os.path.dirname(pyspark.__file__)


@dataclass
class StandaloneCluster:
    """Handles to a running master and its workers (process ids are the processes we started)."""

    master_url: str
    web_url: str
    master_pid: int
    worker_pids: list[int] = field(default_factory=list)
    work_dir: str = ""

    def alive_workers(self) -> int:
        with urllib.request.urlopen(f"{self.web_url}/json/", timeout=5) as resp:  # loopback only
            state = json.load(resp)
        return sum(1 for w in state.get("workers", []) if w.get("state") == "ALIVE")

    def save(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps(asdict(self)))

    @classmethod
    def load(cls, path: str | Path) -> StandaloneCluster:
        return cls(**json.loads(Path(path).read_text()))


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env.update({
        "SPARK_HOME": spark_home(), "SPARK_LOCAL_IP": HOST, "SPARK_NO_DAEMONIZE": "1",
        "PYSPARK_PYTHON": sys.executable, "PYSPARK_DRIVER_PYTHON": sys.executable,
    })
    return env


def _launch(args: list[str], log: Path) -> int:
    spark_class = os.path.join(spark_home(), "bin", "spark-class")
    with open(log, "ab") as out:
        proc = subprocess.Popen([spark_class, *args], stdout=out, stderr=subprocess.STDOUT, env=_env(),
                                start_new_session=True)  # own process group: a kill takes its executors too
    return proc.pid


def _wait(cluster: StandaloneCluster, workers: int, timeout_s: float) -> None:
    deadline = time.time() + timeout_s
    while time.time() < deadline:
        try:
            if cluster.alive_workers() >= workers:
                return
        except OSError:
            pass
        time.sleep(0.5)
    stop_cluster(cluster)
    raise RuntimeError(f"standalone cluster: {workers} workers did not register within {timeout_s:.0f}s "
                       f"(logs in {cluster.work_dir})")


def start_worker(cluster: StandaloneCluster, cores: int = 1, memory: str = "2g") -> int:
    """Start one more worker on the cluster and return its pid (used to replace a killed one)."""
    index = len(cluster.worker_pids)
    work = Path(cluster.work_dir, f"worker-{index}")
    work.mkdir(parents=True, exist_ok=True)
    pid = _launch(["org.apache.spark.deploy.worker.Worker", cluster.master_url, "--host", HOST,
                   "--port", str(free_port()), "--webui-port", str(free_port()), "--cores", str(cores),
                   "--memory", memory, "--work-dir", str(work)], Path(cluster.work_dir, f"worker-{index}.log"))
    cluster.worker_pids.append(pid)
    return pid


def start_cluster(workers: int = 2, cores: int = 1, memory: str = "2g", work_dir: str | None = None,
                  timeout_s: float = 90.0) -> StandaloneCluster:
    """Start a master and `workers` workers on loopback; return once all workers registered."""
    work = Path(work_dir or tempfile.mkdtemp(prefix="churn-devcluster-"))
    work.mkdir(parents=True, exist_ok=True)
    port, web = free_port(), free_port()
    pid = _launch(["org.apache.spark.deploy.master.Master", "--host", HOST, "--port", str(port),
                   "--webui-port", str(web)], work / "master.log")
    cluster = StandaloneCluster(f"spark://{HOST}:{port}", f"http://{HOST}:{web}", pid, [], str(work))
    for _ in range(workers):
        start_worker(cluster, cores, memory)
    _wait(cluster, workers, timeout_s)
    return cluster


def kill_process_group(pid: int, sig: int = signal.SIGKILL) -> None:
    """Signal the process group that a process we started leads: it and everything it spawned (a worker's
    executor JVMs).

    `pid` is used as the group id, never looked up: `_launch` makes every process the leader of a new
    group, and Linux hands out no pid that is still a group's id, so while anything of ours is alive the id
    is ours. Looking the group up (`getpgid`) on a pid whose process died and was reaped asks about whoever
    got that pid next; in a test run that is often a process of the caller's own group, and the signal
    then went to the test runner and everything around it.
    """
    if pid == os.getpgrp():
        raise ValueError(f"pid {pid} leads the caller's own process group; refusing to signal it")
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pid, sig)


def stop_cluster(cluster: StandaloneCluster) -> None:
    for pid in [*cluster.worker_pids, cluster.master_pid]:
        kill_process_group(pid, signal.SIGTERM)
    time.sleep(1)
    for pid in [*cluster.worker_pids, cluster.master_pid]:
        kill_process_group(pid, signal.SIGKILL)


def submit_argv(master: str, job: str, job_args: list[str], conf: dict[str, str] | None = None,
                java_options: str = "") -> list[str]:
    """The spark-submit command for `jobs/<job>.py` against `master`, shipping the Delta/Kafka jars.

    The jars are the files resolved once into the Ivy cache (`jarcache`), passed with `--jars`: the
    driver serves them to the executors and spark-submit runs no Ivy resolution. The driver logs
    through the packaged log4j2 file at ERROR. The package reaches executors as an installed
    environment: `spark.pyspark.python` names the Python that has churn-spark installed (the same
    venv on every worker of a dev cluster). `java_options` go to the driver and the executors.
    """
    from churn_spark.jarcache import resolve_jars
    from churn_spark.session import driver_log_options, maven_packages, packages_missing_from_classpath

    root = Path(__file__).resolve().parent.parent
    ivy = Path("~/.cache/churn-spark/ivy").expanduser()
    confs = {"spark.pyspark.python": sys.executable, "spark.pyspark.driver.python": sys.executable,
             "spark.jars.ivy": str(ivy),
             "spark.driver.extraJavaOptions": " ".join(["-Duser.timezone=UTC", *driver_log_options("ERROR"),
                                                        *shlex.split(java_options)]),
             "spark.executor.extraJavaOptions": " ".join(["-Duser.timezone=UTC", *shlex.split(java_options)]),
             "spark.driver.host": HOST, "spark.driver.bindAddress": HOST, **(conf or {})}
    argv = [os.path.join(spark_home(), "bin", "spark-submit"), "--master", master, "--driver-memory", "2g"]
    missing = packages_missing_from_classpath(maven_packages())
    if missing:
        argv += ["--jars", ",".join(resolve_jars(ivy, missing))]
    for key, value in confs.items():
        argv += ["--conf", f"{key}={value}"]
    return [*argv, str(root / "jobs" / f"{job}.py"), *job_args]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m churn_spark.devcluster",
                                     description="A Spark standalone cluster on 127.0.0.1.")
    parser.add_argument("action", choices=["start", "stop", "status"])
    parser.add_argument("--state-file", default=".devcluster.json")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--cores", type=int, default=1)
    parser.add_argument("--memory", default="2g")
    args = parser.parse_args(argv)
    if args.action == "start":
        cluster = start_cluster(args.workers, args.cores, args.memory)
        cluster.save(args.state_file)
        print(cluster.master_url)
        return 0
    if not Path(args.state_file).exists():
        print(f"no cluster state in {args.state_file}", file=sys.stderr)
        return 1
    cluster = StandaloneCluster.load(args.state_file)
    if args.action == "stop":
        stop_cluster(cluster)
        Path(args.state_file).unlink()
        return 0
    print(f"{cluster.master_url} alive workers: {cluster.alive_workers()} (UI {cluster.web_url})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
