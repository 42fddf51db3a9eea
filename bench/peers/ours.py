"""Our pipeline in the race: `labels_and_features` of churn_spark on the exported inputs, subset selected.

The exported events go through silver's `daily_activity` first (what the features job reads), so the
race times the whole path from raw events, as the peers' do.

The job's config is narrowed to the race's windows (no trends, per-seat rates or extra change
windows); the columns the race does not compare are pruned by Spark's optimizer.
"""

from __future__ import annotations

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from bench.spec import KEYS, RaceSpec
from churn_spark.config import Settings, SparkSettings
from churn_spark.features.job import FeatureInputs, labels_and_features
from churn_spark.silver import daily_activity


def race_settings(spec: RaceSpec) -> Settings:
    """Our config narrowed to the race: the race's windows, churn rules and Spark sizing."""
    return Settings.model_validate({
        "spark": spark_settings(spec).model_dump(),
        "churn": {"horizon_months": spec.horizon_months, "grace_days": spec.grace_days,
                  "min_tenure_days": spec.min_tenure_days, "data_end": spec.data_end},
        "features": {"windows_days": spec.windows, "trend_windows_days": [], "per_seat_windows_days": [],
                     "change_windows_days": [max(spec.windows)], "event_types": sorted(spec.event_types)},
    })


def spark_settings(spec: RaceSpec) -> SparkSettings:
    return SparkSettings(master=spec.master, shuffle_partitions=spec.shuffle_partitions,
                         driver_memory=spec.driver_memory, show_progress=False, with_kafka=False,
                         app_name="churn-bench")


def read_inputs(spark: SparkSession, spec: RaceSpec) -> FeatureInputs:
    def read(table: str) -> DataFrame:
        return spark.read.parquet(spec.input_path(table))

    return FeatureInputs(read("accounts"), read("subscriptions"), read("support_tickets"),
                         read("events").transform(daily_activity), None)


def run(spec: RaceSpec, spark: SparkSession) -> int:
    settings = race_settings(spec)
    labels, features = labels_and_features(read_inputs(spark, spec), settings, spec.snapshot_dates,
                                           spec.data_end_date, sorted(spec.event_types))
    subset = [c for c in spec.output_columns() if c not in (*KEYS, "label", "churn_date", "tenure_days")]
    out = labels.join(features.select(*KEYS, *subset), KEYS).select(*spec.output_columns())
    out.write.mode("overwrite").parquet(spec.out)
    return spark.read.parquet(spec.out).agg(F.count(F.lit(1))).first()[0]  # type: ignore[index]
