"""A real single-node Kafka broker (KRaft) for tests and the demo-with-Kafka path.

The broker jars come from Maven Central through `mvn dependency:copy-dependencies` (a tiny generated
pom) into a cache folder that survives between runs, so only the first start downloads. The broker
binds 127.0.0.1 on free ports, keeps its data in a temporary folder and is stopped by its own pid.

    python -m churn_spark.kafka_broker            # start, print bootstrap servers, run until Ctrl-C
"""

from __future__ import annotations

import base64
import contextlib
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from churn_spark.errors import EnvironmentProblem
from churn_spark.processes import run_until_interrupted

log = logging.getLogger("churn_spark")

KAFKA_VERSION = "3.9.1"  # kafka-clients 3.9.x is what Spark 4.x's Kafka connector uses
SLF4J_VERSION = "1.7.36"  # the slf4j line Kafka 3.9 is built against (reload4j binding for broker logs)
DEFAULT_CACHE = "~/.cache/churn-spark/kafka"

_POM = """<project xmlns="http://maven.apache.org/POM/4.0.0">
  <modelVersion>4.0.0</modelVersion>
  <groupId>churn-spark</groupId><artifactId>kafka-broker-jars</artifactId><version>1</version>
  <packaging>pom</packaging>
  <dependencies>
    <dependency><groupId>org.apache.kafka</groupId><artifactId>kafka_2.13</artifactId><version>{kafka}</version></dependency>
    <dependency><groupId>org.slf4j</groupId><artifactId>slf4j-reload4j</artifactId><version>{slf4j}</version></dependency>
  </dependencies>
</project>
"""

_LOG4J = """log4j.rootLogger=INFO, file
log4j.appender.file=org.apache.log4j.FileAppender
log4j.appender.file.File={log}
log4j.appender.file.layout=org.apache.log4j.PatternLayout
log4j.appender.file.layout.ConversionPattern=[%d] %p %m (%c)%n
log4j.logger.kafka=INFO
log4j.logger.org.apache.kafka=INFO
"""


def broker_jars(version: str = KAFKA_VERSION, cache_dir: str = DEFAULT_CACHE) -> Path:
    """The folder holding the broker's jars, resolved from Maven Central once and cached."""
    target = Path(cache_dir).expanduser() / version
    jars = target / "jars"
    done = target / ".complete"
    if done.exists():
        return jars
    mvn = shutil.which("mvn")
    if mvn is None:
        raise EnvironmentProblem("Maven (mvn) not found: needed once to fetch the Kafka broker jars "
                                 "(apt-get install maven)")
    target.mkdir(parents=True, exist_ok=True)
    (target / "pom.xml").write_text(_POM.format(kafka=version, slf4j=SLF4J_VERSION))
    staging = target / "jars.partial"
    shutil.rmtree(staging, ignore_errors=True)
    log.info("kafka: resolving kafka_2.13:%s jars from Maven Central into %s", version, jars)
    proc = subprocess.run(
        [mvn, "-q", "-B", "-f", str(target / "pom.xml"), "dependency:copy-dependencies",
         f"-DoutputDirectory={staging}", "-DincludeScope=runtime"],
        capture_output=True, text=True, check=False,
    )
    if proc.returncode != 0:
        tail = (proc.stdout + proc.stderr).strip().splitlines()[-1:] or ["no output"]
        raise EnvironmentProblem(f"could not fetch Kafka {version} jars with mvn: {tail[0]}")
    shutil.rmtree(jars, ignore_errors=True)
    staging.rename(jars)
    done.touch()
    return jars


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def cluster_id(draw: Callable[[], bytes] = lambda: uuid.uuid4().bytes) -> str:
    """A KRaft cluster id: a random UUID, URL-safe base64 without padding, as Kafka's `Uuid.randomUuid` makes
    it -- drawn again when it starts with "-", which StorageTool's argument parser takes for an option (one
    id in 64; a land-ready run failed on one)."""
    while (text := base64.urlsafe_b64encode(draw()).decode().rstrip("=")).startswith("-"):
        pass
    return text


def _server_properties(data_dir: Path, port: int, controller_port: int, partitions: int) -> str:
    return "\n".join([
        "process.roles=broker,controller",
        "node.id=1",
        f"controller.quorum.voters=1@127.0.0.1:{controller_port}",
        f"listeners=PLAINTEXT://127.0.0.1:{port},CONTROLLER://127.0.0.1:{controller_port}",
        f"advertised.listeners=PLAINTEXT://127.0.0.1:{port}",
        "controller.listener.names=CONTROLLER",
        "inter.broker.listener.name=PLAINTEXT",
        "listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT",
        f"log.dirs={data_dir / 'logs'}",
        f"num.partitions={partitions}",
        "auto.create.topics.enable=true",
        "offsets.topic.replication.factor=1",
        "offsets.topic.num.partitions=1",
        "transaction.state.log.replication.factor=1",
        "transaction.state.log.min.isr=1",
        "group.initial.rebalance.delay.ms=0",
        "log.flush.interval.messages=1",  # tests SIGKILL drivers, never the broker; cheap durability anyway
        "",
    ])


@dataclass
class KafkaBroker:
    """A running broker; `bootstrap_servers` is what clients (and Spark) connect to."""

    port: int
    workdir: Path
    process: subprocess.Popen[bytes]
    owns_workdir: bool = True
    log_file: Path = field(init=False)

    def __post_init__(self) -> None:
        self.log_file = self.workdir / "broker.log"

    @property
    def bootstrap_servers(self) -> str:
        return f"127.0.0.1:{self.port}"

    def stop(self, timeout: float = 20.0) -> None:
        """Stop this broker by its own pid (SIGTERM, then SIGKILL), then remove its data."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout)
        if self.owns_workdir:
            shutil.rmtree(self.workdir, ignore_errors=True)


def _java() -> str:
    home = os.environ.get("JAVA_HOME")
    java = os.path.join(home, "bin", "java") if home else shutil.which("java")
    if not java or not os.path.exists(java):
        raise EnvironmentProblem("Java not found: the Kafka broker needs a Java 17 runtime")
    return java


def _wait_ready(broker: KafkaBroker, timeout: float) -> None:
    """Ready = the log says the server started and the client port accepts connections."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if broker.process.poll() is not None:
            raise EnvironmentProblem(f"Kafka broker exited with {broker.process.returncode}; "
                                     f"see {broker.log_file}")
        started = broker.log_file.exists() and "Kafka Server started" in broker.log_file.read_text(errors="replace")
        if started:
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", broker.port), timeout=1):
                return
        time.sleep(0.25)
    broker.stop()
    raise EnvironmentProblem(f"Kafka broker did not become ready within {timeout:.0f}s")


def start_broker(workdir: str | Path | None = None, partitions: int = 2, heap: str = "384m",
                 timeout: float = 90.0, version: str = KAFKA_VERSION) -> KafkaBroker:
    """Format a fresh KRaft log dir and start one combined broker+controller on 127.0.0.1."""
    jars = broker_jars(version)
    owns = workdir is None
    work = Path(workdir) if workdir is not None else Path(tempfile.mkdtemp(prefix="churn-kafka-"))
    work.mkdir(parents=True, exist_ok=True)
    port, controller_port = free_port(), free_port()
    props = work / "server.properties"
    props.write_text(_server_properties(work, port, controller_port, partitions))
    (work / "log4j.properties").write_text(_LOG4J.format(log=work / "broker.log"))
    java, classpath = _java(), f"{jars}/*"
    jvm = [java, f"-Xmx{heap}", "-Xms128m", "-XX:+UseSerialGC", "-Djava.awt.headless=true",
           f"-Dlog4j.configuration=file:{work / 'log4j.properties'}", "-cp", classpath]
    fmt = subprocess.run([*jvm, "kafka.tools.StorageTool", "format", "-t", cluster_id(), "-c", str(props)],
                         capture_output=True, text=True, check=False)
    if fmt.returncode != 0:
        raise EnvironmentProblem(f"Kafka storage format failed: {(fmt.stderr or fmt.stdout).strip()[:300]}")
    out = open(work / "broker.stdout", "wb")  # noqa: SIM115 -- owned by the child process
    proc = subprocess.Popen([*jvm, "kafka.Kafka", str(props)], stdout=out, stderr=subprocess.STDOUT,
                            stdin=subprocess.DEVNULL, start_new_session=True)
    out.close()
    broker = KafkaBroker(port=port, workdir=work, process=proc, owns_workdir=owns)
    _wait_ready(broker, timeout)
    log.info("kafka: broker %s ready (pid %d, data in %s)", broker.bootstrap_servers, proc.pid, work)
    return broker


@contextlib.contextmanager
def running_broker(**kwargs: object) -> Iterator[KafkaBroker]:
    broker = start_broker(**kwargs)  # type: ignore[arg-type]
    try:
        yield broker
    finally:
        broker.stop()


def main() -> int:
    """Start a broker, print its bootstrap servers, and keep it running until interrupted."""
    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="[churn-spark %(asctime)s] %(message)s")
    broker = start_broker()
    print(broker.bootstrap_servers, flush=True)
    return run_until_interrupted(broker.process, broker.stop)


if __name__ == "__main__":
    sys.exit(main())
