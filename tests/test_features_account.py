"""Account features: MRR, seats, main product, billing period, plan changes, MRR change, attributes."""

from __future__ import annotations

import math

from chispa import assert_approx_df_equality, assert_df_equality
from featuredata import D, T, accounts, subs

from churn_spark import asof
from churn_spark.config import FeatureSettings
from churn_spark.features import catalog as cat
from churn_spark.features.account import account_features, attribute_dtypes
from churn_spark.features.calendar import with_season

AS_OF = D(2023, 3, 1)
FEATURES = FeatureSettings(windows_days=[7, 28], trend_windows_days=[7], per_seat_windows_days=[7],
                           change_windows_days=[28])  # D - 28 days = 2023-02-01

SUBS = [
    ("s1", "a", D(2022, 1, 1), D(2023, 1, 15), 100, 2, "basic", 1),
    ("s2", "a", D(2023, 1, 15), None, 250, 5, "pro", 12),  # upgrade (a new row)
    ("s3", "a", D(2023, 2, 10), D(2023, 6, 1), 50, 1, "addon", 1),  # concurrent add-on; its end is the future
    ("s4", "a", D(2023, 4, 1), None, 999, 9, "enterprise", 12),  # starts after D: unknown at D
    ("s5", "b", D(2022, 5, 1), AS_OF, 100, 1, "basic", 1),  # ends on D: not active at D
    ("s6", "b", D(2023, 2, 20), None, 80, 1, "basic", 1),
    ("s7", "c", D(2022, 1, 1), D(2023, 2, 15), 100, 1, "basic", 1),  # ended before D (not eligible)
]
COLUMNS = ("account_id string, as_of_date date, mrr double, quantity double, active_subscriptions double, "
           "plan_changes_28d double, mrr_per_seat double, product_id string, bill_period_months string, "
           "mrr_change_ratio_28d double, country string")


def test_account_features_as_of_d(spark):
    acc = accounts(spark, [("a", T(2022, 1, 1), "DE"), ("b", T(2022, 5, 1), None), ("c", T(2022, 1, 1), "FR")],
                   ("country",))
    got = account_features(subs(spark, SUBS), acc, asof.snapshot_frame(spark, [AS_OF]), FEATURES, ["country"])
    want = spark.createDataFrame([
        # active s2 + s3: mrr 300, 6 seats; main = s2 (highest mrr); s3 started in (D-28, D]; mrr at D-28 = 250
        ("a", AS_OF, 300.0, 6.0, 2.0, 1.0, 50.0, "pro", "12", (300 - 250) / 250, "DE"),
        # active s6 only; s6 is a plan change; mrr at D-28 = 100 (s5)
        ("b", AS_OF, 80.0, 1.0, 1.0, 1.0, 80.0, "basic", "1", (80 - 100) / 100, None),
        # nothing active at D: no contract values (the job drops c, which is not eligible)
        ("c", AS_OF, None, None, 0.0, 0.0, None, None, None, None, "FR"),
    ], COLUMNS)
    assert_df_equality(got.select(*want.columns), want, ignore_row_order=True, ignore_nullable=True)


HISTORY = "account_id string, valid_from date, valid_to date, plan string, seats int"


def test_attributes_as_of_sees_a_change_on_d_minus_1_but_not_on_d(spark):
    """Intervals are [valid_from, valid_to): the value at D is the one valid on D - 1."""
    history = spark.createDataFrame([
        ("a", D(2022, 1, 1), AS_OF, "basic", 1), ("a", AS_OF, None, "pro", 2),  # changes on D: not seen at D
        ("b", D(2022, 1, 1), D(2023, 2, 28), "basic", 1), ("b", D(2023, 2, 28), None, "pro", 2),  # changes on D-1
        ("c", AS_OF, None, "pro", 2),                   # first known on D: nothing at D
        ("d", D(2022, 1, 1), D(2023, 2, 28), "basic", 1),  # ended on D-1 (valid until D-2), no row after
    ], HISTORY)
    got = asof.attributes_as_of(history, asof.snapshot_frame(spark, [D(2023, 2, 28), AS_OF]), ["plan", "seats"])
    want = spark.createDataFrame([
        ("a", D(2023, 2, 28), "basic", 1), ("a", AS_OF, "basic", 1),
        ("b", D(2023, 2, 28), "basic", 1), ("b", AS_OF, "pro", 2),
        ("d", D(2023, 2, 28), "basic", 1),  # valid on 2023-02-27
    ], "account_id string, as_of_date date, plan string, seats int")
    assert_df_equality(got, want, ignore_row_order=True, ignore_nullable=True)


def test_account_features_take_attributes_from_the_history_and_keep_numeric_ones_numeric(spark):
    """With a history, today's `accounts` values are not used; no history row valid at D gives null."""
    acc = spark.createDataFrame([("a", T(2022, 1, 1), "enterprise", 99), ("b", T(2022, 5, 1), "enterprise", 99)],
                                "account_id string, created_at timestamp, plan string, seats int")
    history = spark.createDataFrame([
        ("a", D(2022, 1, 1), D(2023, 2, 28), "basic", 1), ("a", D(2023, 2, 28), AS_OF, "pro", 5),
        ("a", AS_OF, None, "enterprise", 99),  # today's value, from D on: not seen at D
        ("b", AS_OF, None, "enterprise", 99),  # b's history starts on D: null at D
    ], HISTORY)
    snaps = asof.snapshot_frame(spark, [AS_OF])
    got = account_features(subs(spark, SUBS), acc, snaps, FEATURES, ["plan", "seats"], history)
    want = spark.createDataFrame([("a", AS_OF, "pro", 5.0), ("b", AS_OF, None, None), ("c", AS_OF, None, None)],
                                 "account_id string, as_of_date date, plan string, seats double")
    assert_df_equality(got.select(*want.columns), want, ignore_row_order=True, ignore_nullable=True)
    assert attribute_dtypes(history, ["plan", "seats"]) == {"plan": "categorical", "seats": "numeric"}


def test_numeric_and_boolean_static_attributes_are_double_features(spark):
    """Without a history: today's value for every snapshot; int and boolean columns become doubles, strings stay."""
    acc = spark.createDataFrame([("a", T(2022, 1, 1), "DE", 12, True), ("b", T(2022, 5, 1), None, None, False)],
                                "account_id string, created_at timestamp, country string, employees int, "
                                "is_partner boolean")
    attrs = ["country", "employees", "is_partner"]
    got = account_features(subs(spark, SUBS), acc, asof.snapshot_frame(spark, [AS_OF]), FEATURES, attrs)
    want = spark.createDataFrame([("a", AS_OF, "DE", 12.0, 1.0), ("b", AS_OF, None, None, 0.0),
                                  ("c", AS_OF, None, None, None)],  # c (in SUBS) has no accounts row
                                 "account_id string, as_of_date date, country string, employees double, "
                                 "is_partner double")
    assert_df_equality(got.select(*want.columns), want, ignore_row_order=True, ignore_nullable=True)
    dtypes = attribute_dtypes(acc, attrs)
    assert dtypes == {"country": "categorical", "employees": "numeric", "is_partner": "numeric"}
    specs = {s.name: s.dtype for s in cat.account_specs(FEATURES, attrs, dtypes)}
    assert [specs[a] for a in attrs] == ["categorical", "numeric", "numeric"]


def test_season_is_the_position_of_d_in_its_own_year_leap_years_included(spark):
    """January 1 is angle 0 in every year; July 2 is day 183 of 365 in 2023 (angle 2 pi 182/365, just short
    of pi) but day 184 of 366 in 2024 (2 pi 183/366 = pi exactly); December 31, 2024 is 2 pi 365/366."""
    dates = [D(2023, 1, 1), D(2024, 1, 1), D(2023, 7, 2), D(2024, 7, 2), D(2024, 12, 31)]
    angles = [0.0, 0.0, 2 * math.pi * 182 / 365, math.pi, 2 * math.pi * 365 / 366]
    days = spark.createDataFrame([(d,) for d in dates], "as_of_date date")
    want = spark.createDataFrame([(d, math.cos(a), math.sin(a)) for d, a in zip(dates, angles, strict=True)],
                                 "as_of_date date, season_cos double, season_sin double")
    assert_approx_df_equality(days.transform(with_season), want, 1e-12, ignore_row_order=True, ignore_nullable=True)
