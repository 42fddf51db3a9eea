from __future__ import annotations

import datetime as dt
import itertools

import pytest
from chispa import assert_df_equality
from pyspark.sql import SparkSession

from churn_spark.asof import add_months
from churn_spark.config import ModelSettings
from churn_spark.errors import ConfigError
from churn_spark.train import pipeline as P
from churn_spark.train.job import profile_columns, stops_early, training_partitions
from churn_spark.train.split import (
    filter_snapshots,
    label_window_end,
    plan_time_split,
    with_latest_snapshot_held_out,
)

D = dt.date


def months(start: dt.date, n: int) -> list[dt.date]:
    return [add_months(start, i) for i in range(n)]


def test_add_months_clamps_to_month_end() -> None:
    assert add_months(D(2024, 1, 31), 1) == D(2024, 2, 29)
    assert add_months(D(2023, 1, 31), 1) == D(2023, 2, 28)
    assert add_months(D(2023, 11, 15), 3) == D(2024, 2, 15)
    assert label_window_end(D(2023, 1, 1), 6, 30) == D(2023, 7, 31)


def test_split_of_monthly_snapshots_by_hand() -> None:
    # 2022-07 .. 2024-05 labelled (23 snapshots), horizon 6 months + 30 days grace.
    split = plan_time_split(months(D(2022, 7, 1), 23), 6, 30, validation_snapshots=2, test_snapshots=3)
    assert split.test == (D(2024, 3, 1), D(2024, 4, 1), D(2024, 5, 1))
    # window_end(2023-08-01) = 2024-03-02 > 2024-03-01, so validation stops at 2023-07-01.
    assert split.validation == (D(2023, 6, 1), D(2023, 7, 1))
    # window_end(2022-11-01) = 2023-05-31 <= 2023-06-01; window_end(2022-12-01) = 2023-07-01 > 2023-06-01.
    assert split.train == tuple(months(D(2022, 7, 1), 5))
    assert split.folds == ((tuple(months(D(2022, 7, 1), 5)), (D(2023, 6, 1),)),
                           (tuple(months(D(2022, 7, 1), 6)), (D(2023, 7, 1),)))
    assert split.refit == () and split.final == split.train
    # refit: window_end(2023-07-01) = 2024-01-31 <= 2024-03-01 (the first test snapshot); 2023-08-01 is not.
    refit = plan_time_split(months(D(2022, 7, 1), 23), 6, 30, 2, 3, refit=True)
    assert refit.refit == refit.final == tuple(months(D(2022, 7, 1), 13))
    assert (refit.train, refit.validation, refit.test) == (split.train, split.validation, split.test)


def test_train_end_limits_training_snapshots() -> None:
    split = plan_time_split(months(D(2023, 1, 1), 6), 1, 0, 1, 1, train_end=D(2023, 2, 15))
    assert split.test == (D(2023, 6, 1),)
    assert split.validation == (D(2023, 5, 1),)
    assert split.train == (D(2023, 1, 1), D(2023, 2, 1))
    assert plan_time_split(months(D(2023, 1, 1), 6), 1, 0, 1, 1, train_end=D(2023, 2, 15),
                           refit=True).refit == (D(2023, 1, 1), D(2023, 2, 1))


@pytest.mark.parametrize("horizon,grace,n_val,n_test,step_days",
                         list(itertools.product([1, 3, 6], [0, 30], [1, 2], [1, 3], [30, 7])))
def test_no_test_snapshot_or_overlapping_label_window_reaches_training(
        horizon: int, grace: int, n_val: int, n_test: int, step_days: int) -> None:
    snaps = [D(2022, 1, 1) + dt.timedelta(days=step_days * i) for i in range(60 if step_days == 30 else 200)]
    split = plan_time_split(snaps, horizon, grace, n_val, n_test, refit=True)
    assert split.test == tuple(snaps[-n_test:])
    assert len(split.validation) == n_val and split.train
    assert not set(split.train) & (set(split.validation) | set(split.test))
    for t in split.train:  # every training label window ends before validation and test begin
        assert label_window_end(t, horizon, grace) <= split.validation[0] <= split.test[0]
    for v in split.validation:
        assert label_window_end(v, horizon, grace) <= split.test[0]
    # the refit uses train, validation and the gap between them, and no label window reaching the test
    assert set(split.train) | set(split.validation) <= set(split.refit)
    assert not set(split.refit) & set(split.test)
    assert all(label_window_end(r, horizon, grace) <= split.test[0] for r in split.refit)
    assert all(label_window_end(s, horizon, grace) > split.test[0] for s in snaps if s > split.refit[-1])
    # the latest snapshot that would not overlap is used (no needless gap)
    later = [s for s in snaps if s > split.train[-1] and s < split.validation[0]]
    assert all(label_window_end(s, horizon, grace) > split.validation[0] for s in later)
    for fit, (ev,) in split.folds:
        assert all(label_window_end(t, horizon, grace) <= ev for t in fit)
        assert not set(fit) & set(split.test)


def test_too_few_snapshots_is_one_clear_error() -> None:
    with pytest.raises(ConfigError, match="1 validation snapshot.*first test snapshot 2023-03-01"):
        plan_time_split(months(D(2023, 1, 1), 3), 6, 0, 1, 1)
    with pytest.raises(ConfigError, match="need at least 3 labelled snapshots"):
        plan_time_split(months(D(2023, 1, 1), 2), 1, 0, 1, 3)


def test_filter_snapshots_keeps_only_those_dates(spark: SparkSession) -> None:
    df = spark.createDataFrame([("a", D(2023, 1, 1)), ("a", D(2023, 2, 1)), ("b", D(2023, 3, 1)), ("c", None)],
                               "account_id string, as_of_date date")
    expected = spark.createDataFrame([("a", D(2023, 1, 1)), ("b", D(2023, 3, 1))], "account_id string, as_of_date date")
    assert_df_equality(filter_snapshots(df, [D(2023, 1, 1), D(2023, 3, 1)]), expected, ignore_row_order=True)


@pytest.mark.parametrize(("rows", "expected"), [(1, 1), (20_000, 1), (20_001, 2), (28_200, 2), (2_400_000, 8)])
def test_training_partitions_follow_the_rows_up_to_the_shuffle_partitions(rows: int, expected: int) -> None:
    # one partition per 20,000 rows, rounded up; never more than the 8 shuffle partitions
    assert training_partitions(rows, 20_000, 8) == expected


def test_the_latest_snapshot_of_a_fit_is_held_out_for_early_stopping(spark: SparkSession) -> None:
    df = spark.createDataFrame([("a", D(2023, 1, 1)), ("a", D(2023, 2, 1)), ("b", D(2023, 2, 1)), ("b", D(2023, 3, 1))],
                               "account_id string, as_of_date date")
    expected = spark.createDataFrame(
        [("a", D(2023, 1, 1), False), ("a", D(2023, 2, 1), True), ("b", D(2023, 2, 1), True),
         ("b", D(2023, 3, 1), False)],  # March is not one of the fit's snapshots: not its latest either
        "account_id string, as_of_date date, held boolean")
    got = with_latest_snapshot_held_out(df, [D(2023, 2, 1), D(2023, 1, 1)], "held")
    assert_df_equality(got, expected, ignore_row_order=True, ignore_nullable=True)


@pytest.mark.parametrize(("enabled", "family", "days", "expected"), [
    (True, "gbt", [D(2023, 1, 1), D(2023, 2, 1)], True),
    (True, "gbt", [D(2023, 1, 1)], False),  # nothing would be left to learn from
    (True, "gbt", [D(2023, 1, 1), D(2023, 1, 1)], False),
    (True, "lr", [D(2023, 1, 1), D(2023, 2, 1)], False),  # not a boosted model
    (False, "gbt", [D(2023, 1, 1), D(2023, 2, 1)], False),
])
def test_which_fits_stop_early(enabled: bool, family: str, days: list[dt.date], expected: bool) -> None:
    assert stops_early(ModelSettings(early_stopping=enabled), family, days) is expected


def test_profile_drops_columns_with_no_value_and_flags_gaps(spark: SparkSession) -> None:
    # Missing to the model: null, NaN, infinite. `full` always has a value; `nan`, `inf` and `odd name` (which
    # needs quoting) miss one value each: flagged; `empty` misses all four (null, NaN, +inf, -inf): dropped,
    # nothing to impute from; `seats` is an int column.
    inf, nan = float("inf"), float("nan")
    rows = [(1.0, nan, 1.0, None, None, 1), (2.0, 1.0, inf, nan, 1.0, 2), (3.0, 2.0, 2.0, inf, 2.0, 3),
            (4.0, 3.0, 3.0, -inf, 3.0, 4)]
    df = spark.createDataFrame(rows, "full double, nan double, inf double, empty double, `odd name` double, seats int")
    names = ["full", "nan", "inf", "empty", "odd name", "seats"]
    columns, dropped = profile_columns(df, P.FeatureColumns(names, []), indicators=True,
                                       cycles={"seats": 2, "empty": 7})
    assert dropped == ["empty"]
    assert columns.numeric == ["full", "nan", "inf", "odd name", "seats"]
    assert columns.missing_indicators == ["nan", "inf", "odd name"]
    assert columns.cyclic == {"seats": 2}  # a dropped column has no cyclic position
