"""One session-scoped SparkSession with Delta for every test (docs/development.md, tests)."""

from __future__ import annotations

import importlib.util
import os
from collections.abc import Iterator
from typing import Any

import pytest

# CPU seconds per test file in the terminal summary (the hooks are collected from this module's namespace)
from cpuclock import (  # noqa: F401
    pytest_runtest_logreport,
    pytest_runtest_makereport,
    pytest_runtest_protocol,
    pytest_sessionstart,
    pytest_terminal_summary,
)
from pyspark.sql import SparkSession

from churn_spark.classcache import sharing_options
from churn_spark.config import Settings, SparkSettings
from churn_spark.session import build_spark

# Test modules that import an optional extra of pyproject.toml at the top: in a lighter venv (`make setup
# EXTRAS=test`) they are not collected and the header names them and the extra, instead of collection errors.
# `make setup` (every extra, what .ci/run installs) collects them all.
EXTRA_MODULES = {
    "test_bench_peers.py": ("bench", ["psutil", "duckdb"]),
    "test_bench_uplift.py": ("bench", ["psutil", "sklearn"]),
    "test_notebook.py": ("notebook", ["nbformat", "nbclient", "ipykernel"]),
    "test_onnx_calibration.py": ("onnx", ["onnx", "onnxruntime"]),
    "test_onnx_export.py": ("onnx", ["onnx", "onnxruntime", "onnxmltools"]),
    "test_serve.py": ("serve", ["httpx", "fastapi", "uvicorn", "deltalake"]),
}
NOT_INSTALLED = {module: extra for module, (extra, imports) in EXTRA_MODULES.items()
                 if any(importlib.util.find_spec(name) is None for name in imports)}
collect_ignore = list(NOT_INSTALLED)


def pytest_report_header(config: pytest.Config) -> str | None:
    if not NOT_INSTALLED:
        return None
    return "not collected, their extra is not installed (make setup installs every extra): " + ", ".join(
        f"{module} [{extra}]" for module, extra in NOT_INSTALLED.items())


# Test data is tiny and the suite is CPU-bound on 2 cores: the client compiler alone (no C2) costs less
# CPU than it loses in speed on test-sized jobs. Same results. The code cache must then be sized by hand.
# Every test JVM (the session, spark-submit drivers, the cluster's executors) also maps the classes Spark,
# Delta and MLlib load from the class-data-sharing archive `make prefetch` builds (churn_spark/classcache.py).
SHARING = sharing_options()
JIT = " ".join(filter(None, ["-XX:TieredStopAtLevel=1 -XX:ReservedCodeCacheSize=256m", SHARING]))
# The session's JVM: under `make test` two pytest workers keep both cores busy and the client compiler alone
# is cheaper; one process (`make test-fast`) leaves a core to spare, where C2 compiles in the background and
# the run is shorter (docs/development.md, "Why the test JVMs are tuned").
SESSION_JAVA_OPTIONS = JIT if os.environ.get("PYTEST_XDIST_WORKER") else SHARING
# Test jobs, in process and the dev overlay's applications on the test cluster, also skip Spark's code
# generation: Janino compiles more than tiny plans save (docs/development.md has the measurements). On the test
# cluster the features application (the one that loses a worker) and the ingest rerun keep it, so the
# generated-code path still runs in the suite and is compared with interpreted runs.
NO_CODEGEN = {"spark.sql.codegen.wholeStage": "false", "spark.sql.codegen.factoryMode": "NO_CODEGEN"}

TEST_SPARK = SparkSettings(
    master="local[2]",
    shuffle_partitions=2,
    driver_memory="3g",
    ui_enabled=False,
    show_progress=False,
    log_level="ERROR",
    java_options=SESSION_JAVA_OPTIONS,
    conf=NO_CODEGEN,
)


def with_jit(app: Any) -> dict[str, str]:
    """Driver and executor JVM options of a SparkApplication with JIT added: the manifest's own kept."""
    def options(role: str) -> str:
        return " ".join(x for x in ((app.spec.get(role) or {}).get("javaOptions", ""), JIT) if x)

    return {"spark.driver.extraJavaOptions": options("driver"), "spark.executor.extraJavaOptions": options("executor")}


@pytest.fixture(scope="session")
def spark() -> Iterator[SparkSession]:
    session = build_spark(TEST_SPARK, app_name="churn-spark-tests")
    yield session
    session.stop()


@pytest.fixture()
def settings(tmp_path) -> Settings:  # type: ignore[no-untyped-def]
    """Default settings with the lakehouse in a fresh temporary folder and the test Spark settings."""
    return Settings(lakehouse=str(tmp_path / "lakehouse"), spark=TEST_SPARK)


# `make test` runs two pytest workers with `--dist loadfile --no-loadscope-reorder`: a test file goes to
# one worker whole (its module fixtures are built once), in the order below (the long ones first, so the
# short ones fill the gaps at the end; xdist would otherwise start with the files of most tests). A long file
# missing here runs in alphabetical order among the short ones: `test_uplift_report.py` (~120 CPU-s, one 100-s
# test) ran second to last, with the other worker idle meanwhile, until session 35 added it.
LONGEST_FIRST = ("test_cluster.py", "test_notebook.py", "test_second_shape.py", "test_serve.py",
                 "test_onnx_export.py", "test_ingest_kafka.py",
                 "test_ingest.py", "test_score_job.py", "test_train_job.py", "test_uplift_report.py",
                 "test_features_job.py", "test_silver.py", "test_train_xgboost.py", "test_new_event_types.py",
                 "test_event_vocabulary.py", "test_train_calibration.py", "test_generate.py",
                 "test_train_seasonal_calibration.py", "test_generate_campaigns.py", "test_check.py",
                 "test_k8s_server.py",
                 # then the longest of `make test-fast` (its files otherwise run alphabetically, and the
                 # point-in-time property test came last, with one worker idle while it ran)
                 "test_point_in_time.py", "test_train_metrics.py", "test_targeting_uplift.py", "test_score_reasons.py",
                 "test_targeting.py", "test_labels.py")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    def rank(item: pytest.Item) -> int:
        name = item.path.name
        return LONGEST_FIRST.index(name) if name in LONGEST_FIRST else len(LONGEST_FIRST)

    items.sort(key=rank)  # stable: the order inside a file and among the other files is unchanged
