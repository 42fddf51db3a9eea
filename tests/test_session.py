from __future__ import annotations

from pyspark import SparkConf
from pyspark.sql import SparkSession

from churn_spark.session import MIN_COALESCED_PARTITIONS, runtime_defaults


def test_coalesced_shuffles_keep_several_tasks_per_core_unless_configured() -> None:
    assert runtime_defaults(SparkConf(loadDefaults=False), 2) == {MIN_COALESCED_PARTITIONS: "8"}
    assert runtime_defaults(SparkConf(loadDefaults=False), 48) == {MIN_COALESCED_PARTITIONS: "192"}
    explicit = SparkConf(loadDefaults=False).set(MIN_COALESCED_PARTITIONS, "3")
    assert runtime_defaults(explicit, 2) == {}


def test_the_session_has_the_runtime_defaults(spark: SparkSession) -> None:
    cores = spark.sparkContext.defaultParallelism
    assert spark.conf.get(MIN_COALESCED_PARTITIONS) == str(4 * cores)
