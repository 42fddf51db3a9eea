"""silver.account_daily_activity: the daily transform (hand-computed), incremental sync by bronze's commit
log (only the changed days rewritten, equal to a rebuild), fallbacks, and features from silver == from bronze."""

from __future__ import annotations

import json
import os
import random
import shutil
from dataclasses import replace
from pathlib import Path

import pytest
from chispa import assert_df_equality
from featuredata import D, T, events, write_inputs
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from churn_spark import io, schemas
from churn_spark.cli import main
from churn_spark.config import Settings, with_overrides
from churn_spark.features.job import bronze_daily_activity, labels_and_features, load_inputs
from churn_spark.lakehouse import Lakehouse
from churn_spark.silver import daily_activity, read_silver, silver_event_types, sync_silver
from churn_spark.silver.job import BRONZE_VERSION

SILVER = "account_id string, event_date date, event_type string, events long, value_units long"


def append_bronze(settings: Settings, df: DataFrame, **options: str) -> None:
    """One bronze commit, as an ingest batch makes it (partitioned by event_date)."""
    writer = df.write.format("delta").mode("append").partitionBy("event_date")
    for key, value in options.items():
        writer = writer.option(key, value)
    writer.save(Lakehouse.from_settings(settings).bronze_events)


def silver_table(spark: SparkSession, settings: Settings) -> DataFrame:
    return spark.read.format("delta").load(Lakehouse.from_settings(settings).silver_account_daily_activity)


def commit_days(spark: SparkSession, table: str, version: int) -> set[str]:
    """The event_date partitions a commit added or removed files in, read straight from its log JSON."""
    log = spark.read.json(f"{table}/_delta_log/{version:020d}.json")
    actions = [a for a in ("add", "remove") if a in log.columns]
    rows = log.select(F.explode(F.array(*[F.col(f"{a}.partitionValues.event_date") for a in actions])).alias("d"))
    return {r["d"] for r in rows.where(F.col("d").isNotNull()).collect()}


def test_daily_activity_counts_and_sums_values_per_account_day_and_type(spark):
    rows = events(spark, [
        ("e1", "a", "login", T(2024, 1, 1, 9), 1.5),
        ("e2", "a", "login", T(2024, 1, 1, 23, 59, 59), None),  # same day, null value: counted, adds no value
        ("e3", "a", "login", T(2024, 1, 2, 0, 0, 0)),  # the next UTC day; its only value is null
        ("e4", "a", "export", T(2024, 1, 1, 10), 0.12344),  # 1234.4 units -> 1234
        ("e7", "a", "export", T(2024, 1, 1, 11), 1.0),
        ("e5", "b", "login", T(2024, 1, 1, 5), -2.0),
        ("e6", "a", "export", T(2023, 12, 31, 12), 3.0),  # late: ingested with Jan 2's batch, counts on its day
    ])
    rows = rows.withColumn("ingested_at", F.when(F.col("event_id") == "e6", F.lit(T(2024, 1, 2, 6)))
                           .otherwise(F.col("ingested_at")))
    want = spark.createDataFrame([
        ("a", D(2023, 12, 31), "export", 1, 30_000),
        ("a", D(2024, 1, 1), "export", 2, 1234 + 10_000),
        ("a", D(2024, 1, 1), "login", 2, 15_000),
        ("a", D(2024, 1, 2), "login", 1, None),
        ("b", D(2024, 1, 1), "login", 1, -20_000),
    ], SILVER)
    assert_df_equality(daily_activity(rows), want, ignore_row_order=True, ignore_nullable=True)


@pytest.mark.slow
def test_sync_rewrites_only_the_days_bronze_commits_changed_and_equals_a_rebuild(spark, settings, monkeypatch,
                                                                                capsys):
    lake = Lakehouse.from_settings(settings)
    append_bronze(settings, events(spark, [("b1", "a", "login", T(2024, 1, 1, 8), 1.0),
                                           ("b2", "a", "login", T(2024, 1, 2, 8)),
                                           ("b3", "b", "export", T(2024, 1, 3, 8), 2.0)]))  # bronze v0
    append_bronze(settings, events(spark, [("b4", "b", "login", T(2024, 1, 2, 9), 0.5)]))  # v1: Jan 2's 2nd file
    first = sync_silver(spark, settings)
    assert (first["mode"], first["bronze_version_from"], first["bronze_version_to"]) == ("rebuild", None, 1)

    append_bronze(settings, events(spark, [("b5", "a", "login", T(2024, 1, 1, 20), 2.5)]))  # v2: late, old day
    append_bronze(settings, events(spark, [("b6", "a", "export", T(2024, 1, 5, 7))]))  # v3: a new day
    spark.sql(f"OPTIMIZE delta.`{lake.bronze_events}` WHERE event_date = '2024-01-02'")  # v4: no data change
    assert io.table_version(spark, lake.bronze_events) == 4
    second = sync_silver(spark, settings)
    assert {k: second[k] for k in ("mode", "bronze_version_from", "bronze_version_to", "days_touched", "days")} == {
        "mode": "incremental", "bronze_version_from": 1, "bronze_version_to": 4, "days_touched": 2,
        "days": ["2024-01-01", "2024-01-05"]}
    assert commit_days(spark, lake.silver_account_daily_activity, second["silver_version"]) == {
        "2024-01-01", "2024-01-05"}
    want = spark.createDataFrame([
        ("a", D(2024, 1, 1), "login", 2, 35_000),
        ("a", D(2024, 1, 2), "login", 1, None),
        ("a", D(2024, 1, 5), "export", 1, None),
        ("b", D(2024, 1, 2), "login", 1, 5_000),
        ("b", D(2024, 1, 3), "export", 1, 20_000),
    ], SILVER)
    incremental = silver_table(spark, settings).collect()
    assert_df_equality(silver_table(spark, settings), want, ignore_row_order=True, ignore_nullable=True)

    again = sync_silver(spark, settings)  # nothing new: nothing written
    assert (again["mode"], again["silver_version"]) == ("up to date", second["silver_version"])

    monkeypatch.setattr("churn_spark.session.build_spark", lambda *a, **k: spark)
    assert main(["--quiet", "--lakehouse", settings.lakehouse, "silver", "--rebuild"]) == 0
    assert capsys.readouterr().out.startswith("== silver: succeeded")
    summary = json.loads(sorted(Path(settings.lakehouse, "runs").glob("*silver*.json"))[-1].read_text())
    assert {k: summary["result"][k] for k in ("mode", "bronze_version_to", "days_touched", "rows_written")} == {
        "mode": "rebuild", "bronze_version_to": 4, "days_touched": 4, "rows_written": 5}
    rebuilt = silver_table(spark, settings)
    assert_df_equality(rebuilt, spark.createDataFrame(incremental, rebuilt.schema), ignore_row_order=True)
    latest = io.commit_history(spark, lake.silver_account_daily_activity)[0]
    assert json.loads(latest["userMetadata"])[BRONZE_VERSION] == 4


@pytest.mark.slow
def test_each_sync_records_the_raw_event_types_silver_holds_in_its_commit(spark, settings):
    """The features and score jobs read the activity's vocabulary from silver's log instead of scanning it."""
    lake = Lakehouse.from_settings(settings)
    assert silver_event_types(spark, settings) is None  # no silver yet
    append_bronze(settings, events(spark, [("b1", "a", "login", T(2024, 1, 1, 8)),
                                           ("b2", "b", "export", T(2024, 1, 2, 8))]))
    sync_silver(spark, settings)  # a build from all of bronze
    assert silver_event_types(spark, settings) == ["export", "login"]

    append_bronze(settings, events(spark, [("b3", "a", "webinar", T(2024, 1, 3, 8))]))  # a type never seen, new day
    assert sync_silver(spark, settings)["mode"] == "incremental"
    assert silver_event_types(spark, settings) == ["export", "login", "webinar"]

    append_bronze(settings, events(spark, [("b4", "b", "login", T(2024, 1, 2, 9))]))  # an old day again
    assert sync_silver(spark, settings)["days"] == ["2024-01-02"]
    assert silver_event_types(spark, settings) == ["export", "login", "webinar"]  # the other days' types kept

    spark.sql(f"DELETE FROM delta.`{lake.silver_account_daily_activity}` WHERE event_type = 'webinar'")
    assert silver_event_types(spark, settings) is None  # changed outside a sync: the record is void
    assert sync_silver(spark, settings)["mode"] == "rebuild"
    assert silver_event_types(spark, settings) == ["export", "login", "webinar"]


@pytest.mark.slow
def test_a_failed_sync_leaves_silver_as_it_was_and_a_rerun_completes_it(spark, settings, monkeypatch):
    lake = Lakehouse.from_settings(settings)
    append_bronze(settings, events(spark, [("b1", "a", "login", T(2024, 1, 1, 8), 1.0)]))
    sync_silver(spark, settings)
    before = (io.table_version(spark, lake.silver_account_daily_activity), silver_table(spark, settings).collect())
    append_bronze(settings, events(spark, [("b2", "a", "login", T(2024, 1, 1, 9), 1.0),
                                           ("b3", "a", "login", T(2024, 1, 2, 9))]))
    from churn_spark.silver import job

    rows = job.silver_rows
    monkeypatch.setattr(job, "silver_rows", lambda bronze, days: rows(bronze, days).withColumn(
        "events", F.raise_error(F.lit("executor lost")).cast("long")))
    with pytest.raises(Exception, match="executor lost"):
        sync_silver(spark, settings)
    assert (io.table_version(spark, lake.silver_account_daily_activity), silver_table(spark, settings).collect()) \
        == before
    monkeypatch.setattr(job, "silver_rows", rows)
    done = sync_silver(spark, settings)
    assert (done["mode"], done["bronze_version_from"], done["days_touched"]) == ("incremental", 0, 2)
    want = spark.createDataFrame([("a", D(2024, 1, 1), "login", 2, 20_000), ("a", D(2024, 1, 2), "login", 1, None)],
                                 SILVER)
    assert_df_equality(read_silver(spark, settings), want, ignore_row_order=True, ignore_nullable=True)


@pytest.mark.slow
def test_sync_rebuilds_when_bronze_log_of_the_versions_since_is_gone(spark, settings):
    lake = Lakehouse.from_settings(settings)
    batches = [[("b1", "a", "login", T(2024, 1, 1, 8), 1.0)], [("b2", "b", "login", T(2024, 1, 2, 8))],
               [("b3", "a", "login", T(2023, 12, 30, 8), 2.0)]]
    append_bronze(settings, events(spark, batches[0]), **{"delta.checkpointInterval": "2"})
    sync_silver(spark, settings)
    for batch in batches[1:]:
        append_bronze(settings, events(spark, batch))  # v1, v2 (a checkpoint at v2)
    os.remove(f"{lake.bronze_events}/_delta_log/{1:020d}.json")  # as log cleanup after the checkpoint does
    done = sync_silver(spark, settings)
    assert (done["mode"], done["bronze_version_from"], done["bronze_version_to"]) == ("rebuild", 0, 2)
    assert "log" in done["reason"]
    want = spark.createDataFrame([("a", D(2023, 12, 30), "login", 1, 20_000), ("a", D(2024, 1, 1), "login", 1, 10_000),
                                  ("b", D(2024, 1, 2), "login", 1, None)], SILVER)
    assert_df_equality(read_silver(spark, settings), want, ignore_row_order=True, ignore_nullable=True)


@pytest.mark.slow
def test_features_from_incrementally_synced_silver_equal_features_from_bronze(spark, settings):
    from test_point_in_time import SETTINGS, SNAPSHOTS, TYPES, base_data

    data = [base_data(seed) for seed in range(3)]
    rows = {k: [r for d in data for r in d[k]] for k in data[0]}
    s = with_overrides(SETTINGS, {"lakehouse": settings.lakehouse})
    accounts = spark.createDataFrame(rows["accounts"], "account_id string, created_at timestamp, country string")
    tickets = spark.createDataFrame([(t[0], t[1], t[2], t[3], t[4], "email", t[5]) for t in rows["tickets"]],
                                    schemas.SUPPORT_TICKETS)
    types = TYPES + ["other"]  # a type outside the feature list: in the any-type features only
    rng = random.Random(7)
    evs = [(e[0], e[1], rng.choice(types), e[3], e[4]) for e in rows["events"]]
    batches = [evs[i::3] for i in range(3)]  # each batch spans the whole period: later ones are late for old days
    write_inputs(s, accounts, spark.createDataFrame(rows["subs"], schemas.SUBSCRIPTIONS), events(spark, batches[0]),
                 tickets)
    sync_silver(spark, s)
    for batch in batches[1:]:
        append_bronze(s, events(spark, batch))
        assert sync_silver(spark, s)["mode"] == "incremental"
    from_silver = load_inputs(spark, s)
    assert from_silver.silver is not None and from_silver.silver["mode"] == "up to date"
    from_bronze = replace(from_silver, events=bronze_daily_activity(spark, s))
    data_end = D(2024, 6, 30)
    labels_s, features_s = labels_and_features(from_silver, s, SNAPSHOTS, data_end, TYPES)
    labels_b, features_b = labels_and_features(from_bronze, s, SNAPSHOTS, data_end, TYPES)
    assert features_s.count() > 10 and features_s.where(F.col("events_count_90d") > 0).count() > 5
    assert_df_equality(labels_s, labels_b, ignore_row_order=True)
    assert_df_equality(features_s, features_b, ignore_row_order=True)


@pytest.mark.slow
def test_sync_rebuilds_when_bronze_was_recreated_even_at_a_later_version(spark, settings):
    lake = Lakehouse.from_settings(settings)
    append_bronze(settings, events(spark, [("b1", "a", "login", T(2024, 1, 1, 8), 1.0)]))
    sync_silver(spark, settings)  # synced to version 0
    shutil.rmtree(lake.bronze_events)
    append_bronze(settings, events(spark, [("c1", "b", "login", T(2024, 1, 3, 8))]))  # a new table: v0
    append_bronze(settings, events(spark, [("c2", "b", "export", T(2024, 1, 4, 8), 0.5)]))  # v1: only v1 is "new"
    done = sync_silver(spark, settings)
    assert (done["mode"], done["bronze_version_to"]) == ("rebuild", 1) and "recreated" in done["reason"]
    want = spark.createDataFrame([("b", D(2024, 1, 3), "login", 1, None), ("b", D(2024, 1, 4), "export", 1, 5_000)],
                                 SILVER)
    assert_df_equality(read_silver(spark, settings), want, ignore_row_order=True, ignore_nullable=True)
