"""Churn labels (docs/churn-definition.md): one hand-computed test per rule."""

from __future__ import annotations

import datetime as dt

import pytest
from chispa import assert_df_equality
from featuredata import D, T, accounts, subs
from pyspark.sql import DataFrame, SparkSession

from churn_spark import asof, schemas
from churn_spark.config import ChurnSettings, SnapshotSettings
from churn_spark.errors import ConfigError
from churn_spark.labels import active_periods, churn_labels, snapshot_dates

AS_OF = D(2023, 1, 1)  # D + 6 months = 2023-07-01; + 30 grace days = 2023-07-31
CHURN = ChurnSettings(horizon_months=6, grace_days=30)
OBSERVED = D(2024, 12, 31)


def labels_of(spark: SparkSession, sub_rows: list[tuple], account_rows: list[tuple] | None = None,
              data_end: dt.date = OBSERVED, churn: ChurnSettings = CHURN,
              snapshots: tuple[dt.date, ...] = (AS_OF,)) -> DataFrame:
    ids = sorted({r[1] for r in sub_rows})
    acc = accounts(spark, account_rows or [(a, T(2022, 1, 1)) for a in ids])
    return churn_labels(subs(spark, sub_rows), acc, asof.snapshot_frame(spark, snapshots), churn, data_end)


def expected(spark: SparkSession, rows: list[tuple]) -> DataFrame:
    return spark.createDataFrame(rows, schemas.CHURN_LABEL_VALUES)


def check(actual: DataFrame, want: DataFrame) -> None:
    assert_df_equality(actual, want, ignore_row_order=True, ignore_nullable=True)


def test_renewal_inside_grace_is_not_churn(spark):
    rows = [("s1", "a", D(2022, 1, 1), D(2023, 3, 1)), ("s2", "a", D(2023, 3, 20), None)]  # gap 19 <= 30
    check(labels_of(spark, rows), expected(spark, [("a", AS_OF, 0, None, 365)]))


def test_reactivation_after_grace_is_churn(spark):
    rows = [("s1", "a", D(2022, 1, 1), D(2023, 3, 1)), ("s2", "a", D(2023, 4, 15), None)]  # gap 45 > 30
    check(labels_of(spark, rows), expected(spark, [("a", AS_OF, 1, D(2023, 3, 1), 365)]))


def test_upgrade_mid_period_is_a_new_row_not_churn(spark):
    rows = [
        ("s1", "stays", D(2022, 6, 1), D(2023, 2, 10), 100, 1, "basic"),
        ("s2", "stays", D(2023, 2, 10), None, 300, 1, "pro"),
        # upgrades, then leaves inside the horizon: the period ends at the upgrade's end
        ("s3", "leaves", D(2022, 6, 1), D(2023, 2, 10), 100, 1, "basic"),
        ("s4", "leaves", D(2023, 2, 10), D(2023, 5, 1), 300, 1, "pro"),
    ]
    check(labels_of(spark, rows), expected(spark, [("stays", AS_OF, 0, None, 365),
                                                   ("leaves", AS_OF, 1, D(2023, 5, 1), 365)]))


def test_concurrent_subscriptions_churn_only_when_all_end(spark):
    rows = [
        ("s1", "one_left", D(2022, 1, 1), D(2023, 3, 1)), ("s2", "one_left", D(2022, 6, 1), D(2023, 12, 1)),
        ("s3", "all_end", D(2022, 1, 1), D(2023, 2, 1)), ("s4", "all_end", D(2022, 6, 1), D(2023, 4, 1)),
    ]
    check(labels_of(spark, rows), expected(spark, [("one_left", AS_OF, 0, None, 365),
                                                   ("all_end", AS_OF, 1, D(2023, 4, 1), 365)]))


def test_end_exactly_on_d_plus_horizon_is_churn_one_day_later_is_not(spark):
    rows = [("s1", "on", D(2022, 1, 1), D(2023, 7, 1)), ("s2", "after", D(2022, 1, 1), D(2023, 7, 2))]
    check(labels_of(spark, rows), expected(spark, [("on", AS_OF, 1, D(2023, 7, 1), 365),
                                                   ("after", AS_OF, 0, None, 365)]))


def test_censoring_boundary_is_null_never_zero(spark):
    rows = [("s1", "churner", D(2022, 1, 1), D(2023, 3, 1)), ("s2", "stayer", D(2022, 1, 1), None)]
    observed = labels_of(spark, rows, data_end=D(2023, 7, 31))  # D + 6 months + 30 days = data_end: labelled
    check(observed, expected(spark, [("churner", AS_OF, 1, D(2023, 3, 1), 365), ("stayer", AS_OF, 0, None, 365)]))
    censored = labels_of(spark, rows, data_end=D(2023, 7, 30))  # one day short: censored, even the churner
    check(censored, expected(spark, [("churner", AS_OF, None, None, 365), ("stayer", AS_OF, None, None, 365)]))


def test_account_created_after_d_is_absent(spark):
    rows = [("s1", "later", D(2022, 12, 1), None), ("s2", "today", D(2022, 12, 1), None)]
    acc = [("later", T(2023, 1, 2, 8)), ("today", T(2023, 1, 1, 9))]
    check(labels_of(spark, rows, acc), expected(spark, [("today", AS_OF, 0, None, 0)]))


def test_account_whose_only_subscription_ended_before_d_is_absent(spark):
    rows = [("s1", "ended", D(2022, 1, 1), D(2022, 11, 1)), ("s2", "ends_on_d", D(2022, 1, 1), AS_OF),
            ("s3", "future", D(2023, 2, 1), None), ("s4", "active", D(2022, 1, 1), None)]
    check(labels_of(spark, rows), expected(spark, [("active", AS_OF, 0, None, 365)]))


def test_min_tenure_and_several_snapshots(spark):
    rows = [("s1", "a", D(2022, 11, 15), D(2023, 2, 15))]
    acc = [("a", T(2022, 11, 15, 12))]
    churn = ChurnSettings(horizon_months=6, grace_days=30, min_tenure_days=30)
    got = labels_of(spark, rows, acc, churn=churn, snapshots=(D(2022, 12, 1), AS_OF, D(2023, 2, 1)))
    check(got, expected(spark, [("a", AS_OF, 1, D(2023, 2, 15), 47), ("a", D(2023, 2, 1), 1, D(2023, 2, 15), 78)]))


def test_active_periods_merge_overlaps_and_gaps_within_grace(spark):
    rows = [
        ("s1", "a", D(2022, 1, 1), D(2022, 6, 1)), ("s2", "a", D(2022, 3, 1), D(2022, 4, 1)),  # inside s1
        ("s3", "a", D(2022, 7, 1), D(2022, 8, 1)),  # 30-day gap after s1's end: bridged
        ("s4", "a", D(2022, 9, 1), None),  # 31-day gap: a new period, open
        ("s5", "b", D(2022, 1, 1), D(2022, 2, 1)),
    ]
    got = active_periods(subs(spark, rows), grace_days=30)
    want = spark.createDataFrame(
        [("a", D(2022, 1, 1), D(2022, 8, 1)), ("a", D(2022, 9, 1), None), ("b", D(2022, 1, 1), D(2022, 2, 1))],
        "account_id string, period_start date, period_end date")
    assert_df_equality(got, want, ignore_row_order=True, ignore_nullable=True)


def test_snapshot_dates_monthly_and_every_n_days():
    monthly = SnapshotSettings(start=D(2022, 7, 15), end=D(2022, 10, 1))
    assert snapshot_dates(monthly) == [D(2022, 8, 1), D(2022, 9, 1), D(2022, 10, 1)]
    days = SnapshotSettings(frequency="days", every_days=10, start=D(2022, 1, 1), end=D(2022, 1, 25))
    assert snapshot_dates(days) == [D(2022, 1, 1), D(2022, 1, 11), D(2022, 1, 21)]
    with pytest.raises(ConfigError, match="start and end"):
        snapshot_dates(SnapshotSettings())
