"""The one place a SparkSession is built: Delta on, UTC, loopback, sized for the machine.

Jars come from the classpath when they are already there (the image), otherwise Spark's own Ivy
resolution fetches them from Maven once into a cache folder that survives between runs and later
starts put the recorded jar files on `spark.jars` (`jarcache`): no Ivy output after the first run.
A driver JVM we launch ourselves logs through the packaged `log4j2.properties` at `spark.log_level`
and its one start-up line that no logging setting reaches (the JDK's incubator-module warning) is
dropped; under spark-submit nothing of this applies.
"""

from __future__ import annotations

import contextlib
import glob
import os
import re
import shlex
import shutil
import subprocess
import sys
import threading
from importlib import metadata, resources
from pathlib import Path
from typing import Any

from pyspark.sql import SparkSession

from churn_spark.classcache import sharing_options
from churn_spark.config import SparkSettings
from churn_spark.errors import EnvironmentProblem
from churn_spark.jarcache import resolve_jars

SCALA_BINARY = "2.13"
MIN_JAVA = 17


def spark_version() -> str:
    return metadata.version("pyspark")


def delta_version() -> str:
    return metadata.version("delta-spark")


def delta_artifact() -> str:
    """The Delta jar's artifact id: from Delta 4.1 on it names the Spark line it was built for.

    Delta publishes one `delta-spark_<spark major.minor>_2.13` per supported Spark line (delta-spark's own
    `configure_spark_with_delta_pip` picks it the same way); 4.0.x had the one unsuffixed artifact.
    """
    major, minor = (int(part) for part in delta_version().split(".")[:2])
    if (major, minor) < (4, 1):
        return f"delta-spark_{SCALA_BINARY}"
    spark_line = ".".join(spark_version().split(".")[:2])
    return f"delta-spark_{spark_line}_{SCALA_BINARY}"


def maven_packages(with_kafka: bool = True) -> list[str]:
    """Maven coordinates the jobs need, matched to the installed pyspark/delta-spark pair."""
    pkgs = [f"io.delta:{delta_artifact()}:{delta_version()}"]
    if with_kafka:
        pkgs.append(f"org.apache.spark:spark-sql-kafka-0-10_{SCALA_BINARY}:{spark_version()}")
    return pkgs


def _jar_dirs() -> list[str]:
    dirs = []
    if os.environ.get("SPARK_HOME"):
        dirs.append(os.path.join(os.environ["SPARK_HOME"], "jars"))
    import pyspark

    dirs.append(os.path.join(os.path.dirname(pyspark.__file__), "jars"))
    return dirs


def packages_missing_from_classpath(packages: list[str]) -> list[str]:
    """The coordinates whose jar is not already in Spark's jars folder (an image bakes them in)."""
    missing = []
    for coord in packages:
        _, artifact, version = coord.split(":")
        if not any(glob.glob(os.path.join(d, f"{artifact}-{version}.jar")) for d in _jar_dirs()):
            missing.append(coord)
    return missing


def check_java() -> None:
    """Fail with one line when Java is missing or older than Spark 4 needs."""
    java = (
        os.path.join(os.environ["JAVA_HOME"], "bin", "java")
        if os.environ.get("JAVA_HOME")
        else shutil.which("java")
    )
    if not java or not os.path.exists(java):
        raise EnvironmentProblem(
            f"Java not found: install a Java {MIN_JAVA} JDK (e.g. apt-get install openjdk-17-jdk-headless)"
        )
    out = subprocess.run([java, "-version"], capture_output=True, text=True, check=False).stderr
    match = re.search(r'version "(\d+)(?:\.(\d+))?', out)
    major = int(match.group(1)) if match else 0
    if major == 1 and match and match.group(2):
        major = int(match.group(2))
    if major < MIN_JAVA:
        raise EnvironmentProblem(f"Java {major or '?'} found at {java}: Spark {spark_version()} needs Java {MIN_JAVA}+")


def under_spark_submit() -> bool:
    """True when spark-submit (or the operator) launched this driver: its confs must win."""
    return bool(os.environ.get("PYSPARK_GATEWAY_PORT"))


def default_conf(settings: SparkSettings, app_name: str | None = None) -> dict[str, str]:
    """Defaults applied only where spark-submit, the manifest or the config did not set a value."""
    conf = {
        "spark.master": "local[*]",
        "spark.app.name": app_name or settings.app_name,
        "spark.sql.extensions": "io.delta.sql.DeltaSparkSessionExtension",
        "spark.sql.catalog.spark_catalog": "org.apache.spark.sql.delta.catalog.DeltaCatalog",
        "spark.sql.session.timeZone": "UTC",
        "spark.sql.shuffle.partitions": str(settings.shuffle_partitions),
        "spark.sql.adaptive.enabled": "true",
        "spark.databricks.delta.snapshotPartitions": str(settings.delta_snapshot_partitions),
        "spark.sql.execution.arrow.pyspark.enabled": "true",
        "spark.ui.enabled": str(settings.ui_enabled).lower(),
        "spark.ui.showConsoleProgress": str(settings.show_progress).lower(),
        "spark.jars.ivy": str(Path(settings.ivy_cache).expanduser()),
        "spark.driver.extraJavaOptions": "-Duser.timezone=UTC",
        "spark.executor.extraJavaOptions": "-Duser.timezone=UTC",
    }
    if not under_spark_submit():
        # The driver JVM is launched by us: size it, keep it on loopback, log through our log4j2 file.
        conf["spark.driver.memory"] = settings.driver_memory
        conf["spark.driver.host"] = settings.bind_address
        conf["spark.driver.bindAddress"] = settings.bind_address
        conf["spark.driver.extraJavaOptions"] = " ".join(
            ["-Duser.timezone=UTC", *driver_log_options(settings.log_level), *java_options(settings)])
        missing = packages_missing_from_classpath(maven_packages(settings.with_kafka))
        if missing:  # resolved once into the Ivy cache, then plain files: no Ivy at start-up
            conf["spark.jars"] = ",".join(resolve_jars(settings.ivy_cache, missing))
    return conf


def java_options(settings: SparkSettings) -> list[str]:
    """`spark.java_options`, plus the class-data-sharing archive when it is built and wanted (`class_sharing`)
    and the options do not name an archive themselves."""
    options = shlex.split(settings.java_options)
    own = any(o.startswith("-XX:SharedArchiveFile=") for o in options)
    if settings.class_sharing and not own and (sharing := sharing_options()):
        options += [sharing, "-Xlog:cds*=off"]  # an archive that no longer matches is skipped, silently
    return options


def worker_daemon(py_files: str) -> dict[str, str]:
    """The Python worker daemon default: the project's (pydaemon.py: pyspark's, without Python 3.11's re-read of
    pyspark.zip on every task), unless the package reaches the executors with `--py-files`, which a Python
    worker sees only per task, after its daemon started; then pyspark's own."""
    return {} if py_files.strip() else {"spark.python.daemon.module": "churn_spark.pydaemon"}


def log4j_config() -> str:
    """The packaged log4j2 configuration of a driver JVM we launch."""
    return str(resources.files("churn_spark").joinpath("log4j2.properties"))


def driver_log_options(level: str) -> list[str]:
    """JVM options for `log4j2.properties` at `level`; at ERROR, failures that reach Python anyway (a task's
    stack trace, "aborting job") are not logged twice."""
    failures = "FATAL" if level == "ERROR" else level
    return [f"-Dlog4j.configurationFile={shlex.quote(log4j_config())}", f"-Dchurn_spark.log.level={level}",
            f"-Dchurn_spark.failure.level={failures}"]


# Printed by the JDK itself for Spark's `--add-modules=jdk.incubator.vector`; no option turns it off.
JVM_NOISE = re.compile(rb"^WARNING: Using incubator modules: [^\n]*\n", re.MULTILINE)


def _forward_stderr(pipe: Any) -> None:
    """Copy the driver JVM's stderr to ours as it comes (progress bars included), minus JVM_NOISE."""
    fd = pipe.fileno()
    while True:
        try:
            chunk = os.read(fd, 65536)
        except OSError:
            return
        if not chunk:
            return
        chunk = JVM_NOISE.sub(b"", chunk)
        with contextlib.suppress(OSError):
            if chunk:
                os.write(2, chunk)


def _launch_driver_jvm(conf: Any) -> None:
    """Start the driver JVM as pyspark would, with its stderr passed through `_forward_stderr`."""
    from subprocess import PIPE

    from pyspark import SparkContext
    from pyspark.java_gateway import launch_gateway

    if SparkContext._gateway is not None:  # a JVM from an earlier session in this process
        return
    gateway = launch_gateway(conf, popen_kwargs={"stderr": PIPE})
    threading.Thread(target=_forward_stderr, args=(gateway.proc.stderr,), name="jvm-stderr", daemon=True).start()
    SparkContext._ensure_initialized(gateway=gateway, conf=conf)


def build_spark(settings: SparkSettings, app_name: str | None = None) -> SparkSession:
    """Build (or reuse) the session every job and test uses.

    Explicit settings (`master`, `conf`) win; everything else is a default that spark-submit or a
    SparkApplication's `sparkConf` may already have set.
    """
    from pyspark import SparkConf, SparkContext

    if under_spark_submit():
        SparkContext._ensure_initialized()  # attach to the submitter's JVM so its confs load
    else:
        check_java()
        os.environ.setdefault("SPARK_LOCAL_IP", settings.bind_address)
        # Python workers (local or a dev cluster on this machine) run this same environment.
        os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    conf = SparkConf()
    defaults = default_conf(settings, app_name)
    for key, value in {**defaults, **worker_daemon(conf.get("spark.submit.pyFiles", ""))}.items():
        conf.setIfMissing(key, value)
    if settings.master:
        conf.set("spark.master", settings.master)
    for key, value in settings.conf.items():
        conf.set(key, value)
    if "spark.jars" in defaults and "spark.jars" in settings.conf:  # the config's jars in addition to ours
        conf.set("spark.jars", ",".join([defaults["spark.jars"], settings.conf["spark.jars"]]))
    if not under_spark_submit():
        _launch_driver_jvm(conf)
    spark = SparkSession.builder.config(conf=conf).getOrCreate()
    spark.sparkContext.setLogLevel(settings.log_level)
    return spark
