"""One session-scoped SparkSession with Delta for every test (STYLE.md: tests)."""

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
