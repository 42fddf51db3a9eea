"""The pure pieces of `uplift train` (uplift/job.py): the split by campaign date and the assignment rows."""

from __future__ import annotations

import datetime as dt

import pytest
from chispa import assert_df_equality
from pyspark.sql import SparkSession

from churn_spark.errors import ConfigError
from churn_spark.train import pipeline as P
from churn_spark.uplift import job as J

D = dt.date


def test_split_by_campaign_date_keeps_the_label_gap() -> None:
    dates = [D(2022, 4, 1), D(2022, 7, 1), D(2022, 10, 1), D(2023, 1, 1), D(2022, 7, 1)]
    # test = 2023-01-01; label windows (D, D + 3 months + 10 days]: 2022-04-01 -> 07-11 and 2022-07-01 -> 10-11
    # end by it, 2022-10-01 -> 2023-01-11 does not
    assert J.plan_campaign_split(dates, 3, 10, 1) == ([D(2022, 4, 1), D(2022, 7, 1)], [D(2023, 1, 1)])
    assert J.plan_campaign_split(dates, 1, 0, 2) == ([D(2022, 4, 1), D(2022, 7, 1)],
                                                      [D(2022, 10, 1), D(2023, 1, 1)])
    with pytest.raises(ConfigError, match="more than 1 campaign date"):
        J.plan_campaign_split([D(2022, 4, 1)], 3, 0, 1)
    with pytest.raises(ConfigError, match="no training campaign"):
        J.plan_campaign_split([D(2022, 4, 1), D(2022, 5, 1)], 3, 0, 1)


def test_assignment_rows_join_features_at_assignment_and_truth(spark: SparkSession) -> None:
    outcomes = spark.createDataFrame([
        ("c1", "a1", D(2023, 1, 1), "treatment", 0.8, 1, 40),
        ("c1", "a2", D(2023, 1, 1), "control", 0.8, 0, 90),
        ("c1", "a3", D(2023, 1, 1), "control", 0.8, 0, 10),  # no feature row: dropped
    ], "campaign_id string, account_id string, as_of_date date, arm string, propensity double, label int, "
       "tenure_days int")
    features = spark.createDataFrame([
        ("a1", D(2023, 1, 1), 40, 3.0), ("a2", D(2023, 1, 1), 90, 5.0), ("a1", D(2022, 12, 1), 9, 1.0),
    ], "account_id string, as_of_date date, tenure_days int, logins double")
    truth = spark.createDataFrame([("c1", "a1", 0.3), ("c2", "a2", 0.9)], "campaign_id string, account_id string, "
                                                                          "uplift double")
    got = J.with_true_uplift(J.assignment_rows(outcomes, features), truth)
    # the features' tenure (at assigned_at) is the one kept; a2's truth belongs to another campaign
    expected = spark.createDataFrame([
        ("c1", "a1", D(2023, 1, 1), "treatment", 0.8, 1, 40, 3.0, 1, 0.3),
        ("c1", "a2", D(2023, 1, 1), "control", 0.8, 0, 90, 5.0, 0, None),
    ], "campaign_id string, account_id string, as_of_date date, arm string, propensity double, label int, "
       "tenure_days int, logins double, treated int, true_uplift double")
    assert_df_equality(got, expected, ignore_row_order=True, ignore_column_order=True, ignore_nullable=True)


def test_arm_columns_drop_a_column_empty_in_one_arm_and_flag_gaps_in_either(spark: SparkSession) -> None:
    rows = spark.createDataFrame([  # treated, rare (no value among the control rows), gappy (a gap in control)
        (1, 1.0, 2.0, "pro"), (1, None, 3.0, "pro"), (0, None, None, "basic"), (0, None, 1.0, None),
    ], "treated int, rare double, gappy double, plan string")
    cols = J.arm_columns(rows, P.FeatureColumns(["rare", "gappy"], ["plan"]), indicators=True, cycles={"rare": 7})
    assert cols == P.FeatureColumns(["gappy"], ["plan"], ["gappy"], {})
