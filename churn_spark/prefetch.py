"""Fetch and build, once, everything the commands and tests download on first use.

`make test` runs this before pytest so the suite's time is the tests' own: the Delta and Kafka
connector jars (Spark's Ivy, recorded by `jarcache`), the Kafka broker's jars (Maven), the pinned
kustomize (`go install`), the k8s_server tests' etcd, kube-apiserver and kubectl (built from the Go module
proxy, minutes the first time) and the JVM class-data-sharing archive the test JVMs start from
(`classcache`) all land under `~/.cache/churn-spark/` and are reused by every later run.

    python -m churn_spark.prefetch            # all five
    python -m churn_spark.prefetch jars       # only the Spark connector jars
"""

from __future__ import annotations

import logging
import subprocess
import sys
import time
from collections.abc import Callable

from churn_spark.config import SparkSettings
from churn_spark.errors import ChurnSparkError

log = logging.getLogger("churn_spark")


def spark_jars() -> str:
    from churn_spark.jarcache import resolve_jars
    from churn_spark.session import maven_packages, packages_missing_from_classpath

    missing = packages_missing_from_classpath(maven_packages(with_kafka=True))
    jars = resolve_jars(SparkSettings().ivy_cache, missing) if missing else []
    return f"{len(jars)} connector jars"


def kafka_broker() -> str:
    from churn_spark.kafka_broker import broker_jars

    return f"Kafka broker jars in {broker_jars()}"


def kustomize() -> str:
    from churn_spark.k8s.manifests import kustomize_command

    return f"kustomize: {' '.join(kustomize_command())}"


def k8s_testenv() -> str:
    import shutil

    from churn_spark.k8s.testenv import binaries_ready, ensure_binaries

    if shutil.which("go") is None and not binaries_ready():
        return "etcd, kube-apiserver, kubectl: not built (Go is not installed; the k8s_server tests skip)"
    return f"etcd, kube-apiserver, kubectl in {ensure_binaries()}"


def class_archive() -> str:
    from churn_spark.classcache import ensure_archive

    try:
        return f"class-data-sharing archive {ensure_archive()}"
    except (RuntimeError, OSError, subprocess.SubprocessError) as exc:  # an optimisation: the JVMs start without it
        return f"class-data-sharing archive not built (test JVMs start without it): {str(exc).splitlines()[0]}"


STEPS: dict[str, Callable[[], str]] = {"jars": spark_jars, "kafka": kafka_broker, "kustomize": kustomize,
                                       "k8s": k8s_testenv, "cds": class_archive}


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="[churn-spark prefetch] %(message)s")
    names = list(sys.argv[1:] if argv is None else argv) or list(STEPS)
    unknown = [n for n in names if n not in STEPS]
    if unknown:
        print(f"error: unknown step {unknown[0]!r}; choose from {', '.join(STEPS)}", file=sys.stderr)
        return 2
    for name in names:
        started = time.monotonic()
        try:
            what = STEPS[name]()
        except ChurnSparkError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 1
        log.info("%s (%.1f s)", what, time.monotonic() - started)
    return 0


if __name__ == "__main__":
    sys.exit(main())
