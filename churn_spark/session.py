"""The one place a SparkSession is built: Delta on, UTC, loopback, sized for the machine.

Jars come from the classpath when they are already there (the image), otherwise Spark's own Ivy
resolution fetches them from Maven once into a cache folder that survives between runs.
"""

from __future__ import annotations

import glob
import os
import re
import shutil
import subprocess
import sys
from importlib import metadata
from pathlib import Path

from pyspark.sql import SparkSession

from churn_spark.config import SparkSettings
from churn_spark.errors import EnvironmentProblem

SCALA_BINARY = "2.13"
MIN_JAVA = 17


def spark_version() -> str:
    return metadata.version("pyspark")


def delta_version() -> str:
    return metadata.version("delta-spark")


def maven_packages(with_kafka: bool = True) -> list[str]:
    """Maven coordinates the jobs need, matched to the installed pyspark/delta-spark pair."""
    pkgs = [f"io.delta:delta-spark_{SCALA_BINARY}:{delta_version()}"]
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
        # The driver JVM is launched by us: size it and keep it on loopback.
        conf["spark.driver.memory"] = settings.driver_memory
        conf["spark.driver.host"] = settings.bind_address
        conf["spark.driver.bindAddress"] = settings.bind_address
        missing = packages_missing_from_classpath(maven_packages(settings.with_kafka))
        if missing:
            conf["spark.jars.packages"] = ",".join(missing)
    return conf


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
    for key, value in default_conf(settings, app_name).items():
        conf.setIfMissing(key, value)
    if settings.master:
        conf.set("spark.master", settings.master)
    for key, value in settings.conf.items():
        conf.set(key, value)
    spark = SparkSession.builder.config(conf=conf).getOrCreate()
    spark.sparkContext.setLogLevel(settings.log_level)
    return spark
