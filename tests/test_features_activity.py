"""Activity features: counts, value sums, distinct days, trends, recency per event type (hand-computed)."""

from __future__ import annotations

from chispa import assert_df_equality
from featuredata import D, T, events

from churn_spark.config import ChurnSettings, FeatureSettings
from churn_spark.features.activity import MAX_INTERVAL_DAYS, activity_features, boundaries, with_per_seat_rates
from churn_spark.silver import daily_activity

FEATURES = FeatureSettings(windows_days=[7, 28], trend_windows_days=[7], per_seat_windows_days=[7],
                           change_windows_days=[28])
CHURN = ChurnSettings(lookback_months=1)
D1, D2 = D(2023, 3, 1), D(2023, 3, 15)  # lookback: [2023-02-01, D1) and [2023-02-15, D2), both 28 days
TYPES = {"export": "export", "login": "login"}

EVENTS = [
    ("e1", "a", "login", T(2023, 2, 28, 23, 59, 59)),
    ("e2", "a", "login", T(2023, 3, 1, 0, 0, 0)),  # on D1: not before D1
    ("e3", "a", "login", T(2023, 2, 22, 0, 0, 0)),  # first day of D1's 7-day window
    ("e4", "a", "export", T(2023, 2, 22, 10), 2.5),
    ("e5", "a", "export", T(2023, 2, 10), None),
    ("e6", "a", "login", T(2023, 2, 16)),
    ("e7", "a", "login", T(2023, 3, 14), 1.0),
    ("e8", "a", "other", T(2023, 3, 10)),  # a type outside the list: only in the any-type features
    ("e9", "a", "login", T(2022, 12, 1)),  # older than every window and lookback
    ("e10", "b", "login", T(2023, 2, 5)),
]


def row(**values: object) -> dict[str, object]:
    zeros = {f"{t}_{m}_{w}d": 0.0 for t in ("export", "login") for m in ("count", "value_sum", "days_active")
             for w in (7, 28)}
    zeros.update({f"{m}_{w}d": 0.0 for m in ("events_count", "days_active") for w in (7, 28)})
    return {**zeros, **values}


EXPECTED = [
    row(account_id="a", as_of_date=D1,
        events_count_7d=3.0, days_active_7d=2.0, events_count_28d=5.0, days_active_28d=4.0,
        events_trend_7d_vs_prev_7d=3.0, events_trend_7d_vs_lookback=(3 / 7) / (5 / 28),
        export_count_7d=1.0, export_value_sum_7d=2.5, export_days_active_7d=1.0,
        export_count_28d=2.0, export_value_sum_28d=2.5, export_days_active_28d=2.0,
        export_trend_7d_vs_prev_7d=None, export_trend_7d_vs_lookback=(1 / 7) / (2 / 28),
        login_count_7d=2.0, login_days_active_7d=2.0, login_count_28d=3.0, login_days_active_28d=3.0,
        login_trend_7d_vs_prev_7d=2.0, login_trend_7d_vs_lookback=(2 / 7) / (3 / 28),
        days_since_last_event=1.0),
    row(account_id="a", as_of_date=D2,
        events_count_7d=2.0, days_active_7d=2.0, events_count_28d=7.0, days_active_28d=6.0,
        events_trend_7d_vs_prev_7d=2.0, events_trend_7d_vs_lookback=(2 / 7) / (7 / 28),
        export_count_28d=1.0, export_value_sum_28d=2.5, export_days_active_28d=1.0,
        export_trend_7d_vs_prev_7d=None, export_trend_7d_vs_lookback=(0 / 7) / (1 / 28),
        login_count_7d=1.0, login_value_sum_7d=1.0, login_days_active_7d=1.0,
        login_count_28d=5.0, login_value_sum_28d=1.0, login_days_active_28d=5.0,
        login_trend_7d_vs_prev_7d=1.0, login_trend_7d_vs_lookback=(1 / 7) / (5 / 28),
        days_since_last_event=1.0),
    row(account_id="b", as_of_date=D1, events_count_28d=1.0, days_active_28d=1.0, login_count_28d=1.0,
        login_days_active_28d=1.0, events_trend_7d_vs_prev_7d=None, events_trend_7d_vs_lookback=0.0,
        export_trend_7d_vs_prev_7d=None, export_trend_7d_vs_lookback=None, login_trend_7d_vs_prev_7d=None,
        login_trend_7d_vs_lookback=0.0, days_since_last_event=24.0),
    # b's only event is older than D2's span (28 days): zeros, no trend, no recency
    row(account_id="b", as_of_date=D2, events_trend_7d_vs_prev_7d=None, events_trend_7d_vs_lookback=None,
        export_trend_7d_vs_prev_7d=None, export_trend_7d_vs_lookback=None, login_trend_7d_vs_prev_7d=None,
        login_trend_7d_vs_lookback=None, days_since_last_event=None),
]


def test_activity_features_per_type_window_trend_and_recency(spark):
    got = activity_features(daily_activity(events(spark, EVENTS)), [D1, D2], TYPES, FEATURES, CHURN)
    want = spark.createDataFrame([tuple(r[c] for c in got.columns) for r in EXPECTED], got.schema)
    assert_df_equality(got, want, ignore_row_order=True, ignore_nullable=True)


def test_per_seat_rates_divide_counts_by_quantity_and_null_without_seats(spark):
    df = spark.createDataFrame([("a", 6.0, 4.0, 3.0), ("b", 2.0, 1.0, None)],
                               "account_id string, events_count_7d double, login_count_7d double, quantity double")
    got = with_per_seat_rates(df, ["login"], FEATURES).select("account_id", "events_count_per_seat_7d",
                                                             "login_count_per_seat_7d")
    want = spark.createDataFrame([("a", 2.0, 4.0 / 3.0), ("b", None, None)],
                                 "account_id string, events_count_per_seat_7d double, login_count_per_seat_7d double")
    assert_df_equality(got, want, ignore_row_order=True, ignore_nullable=True)


def test_boundaries_cover_every_window_and_keep_intervals_short():
    b = boundaries([D(2022, 1, 1), D(2023, 1, 1)], FEATURES, CHURN)
    assert all((y - x).days <= MAX_INTERVAL_DAYS for x, y in zip(b.dates, b.dates[1:], strict=False))
    roles = {(d, r): b.dates[k] for d, r, k in b.roles}
    assert roles[(D(2023, 1, 1), "end")] == D(2023, 1, 1)
    assert roles[(D(2023, 1, 1), "w28")] == D(2022, 12, 4)
    assert roles[(D(2023, 1, 1), "t7")] == D(2022, 12, 18)
    assert roles[(D(2023, 1, 1), "lb")] == D(2022, 12, 1)
    assert b.span_days(D(2023, 1, 1)) == 31
    assert b.dates[0] == D(2021, 12, 1) and b.dates[-1] == D(2023, 1, 1)


def test_events_on_or_after_the_last_snapshot_never_reach_a_window(spark):
    late = events(spark, [("x1", "a", "login", T(2023, 3, 15)), ("x2", "a", "login", T(2023, 3, 14, 23, 59))])
    got = activity_features(daily_activity(late), [D2], TYPES, FEATURES, CHURN).select(
        "login_count_7d", "days_since_last_event")
    want = spark.createDataFrame([(1.0, 1.0)], "login_count_7d double, days_since_last_event double")
    assert_df_equality(got, want, ignore_nullable=True)
