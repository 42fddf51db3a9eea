"""One session-scoped SparkSession with Delta for every test (docs/development.md, tests)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from pyspark.sql import SparkSession

from churn_spark.config import Settings, SparkSettings
from churn_spark.session import build_spark

TEST_SPARK = SparkSettings(
    master="local[2]",
    shuffle_partitions=2,
    driver_memory="3g",
    ui_enabled=False,
    show_progress=False,
    log_level="ERROR",
)


@pytest.fixture(scope="session")
def spark() -> Iterator[SparkSession]:
    session = build_spark(TEST_SPARK, app_name="churn-spark-tests")
    yield session
    session.stop()


@pytest.fixture()
def settings(tmp_path) -> Settings:  # type: ignore[no-untyped-def]
    """Default settings with the lakehouse in a fresh temporary folder and the test Spark settings."""
    return Settings(lakehouse=str(tmp_path / "lakehouse"), spark=TEST_SPARK)


# The longest test files first: with `pytest -n 2 --dist loadfile` (make test) each worker takes the next
# file when it is free, so starting with the longest keeps the two workers equally busy to the end.
LONGEST_FIRST = ("test_cluster.py", "test_k8s_runner.py", "test_notebook.py", "test_ingest_kafka.py")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    def rank(item: pytest.Item) -> int:
        name = item.path.name
        return LONGEST_FIRST.index(name) if name in LONGEST_FIRST else len(LONGEST_FIRST)

    items.sort(key=rank)  # stable: the order inside a file and among the other files is unchanged
