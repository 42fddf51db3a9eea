"""Support features: tickets per window, open at D, resolution hours, high priority, VADER tone."""

from __future__ import annotations

import pandas as pd
from chispa import assert_df_equality
from featuredata import D, T, tickets

from churn_spark import asof
from churn_spark.config import FeatureSettings
from churn_spark.features.support import support_features
from churn_spark.features.tone import tone_scores

AS_OF = D(2023, 3, 1)
FEATURES = FeatureSettings(windows_days=[7, 28], trend_windows_days=[7], per_seat_windows_days=[7],
                           change_windows_days=[28])
NEGATIVE, POSITIVE = "This is awful", "thanks, great"
TONE = {NEGATIVE: -0.4588, POSITIVE: 0.7906}  # VADER compound scores of these texts

TICKETS = [
    ("t1", "a", T(2023, 2, 25, 10), T(2023, 2, 26, 10), "high", NEGATIVE),  # 24 h
    ("t2", "a", T(2023, 2, 10), T(2023, 3, 2), "low", POSITIVE),  # closed after D: open at D
    ("t3", "a", T(2023, 3, 1), None, "urgent", NEGATIVE),  # opened on D: unknown at D
    ("t4", "a", T(2022, 10, 1), None, "low", NEGATIVE),  # old but still open
    ("t5", "a", T(2023, 2, 20), T(2023, 2, 20, 12), "URGENT", None),  # 12 h, no text
    ("t6", "b", T(2022, 10, 1), T(2022, 10, 2), "low", POSITIVE),  # closed long before D: not seen
]


def test_tone_scores_are_vader_compound_and_null_for_missing_text():
    got = tone_scores(pd.Series([NEGATIVE, POSITIVE, None, "  "]))
    assert got.iloc[0] == TONE[NEGATIVE] and got.iloc[1] == TONE[POSITIVE]
    assert got.iloc[2:].isna().all()


def test_support_features_as_of_d(spark):
    got = support_features(tickets(spark, TICKETS), asof.snapshot_frame(spark, [AS_OF]), [AS_OF], FEATURES)
    r1, r2 = round(TONE[NEGATIVE] * 10_000), round(TONE[POSITIVE] * 10_000)
    want = spark.createDataFrame([(
        "a", AS_OF,
        1.0, 1.0, TONE[NEGATIVE],  # 7d: t1
        3.0, 2.0, (r1 + r2) / 2 / 10_000,  # 28d: t1, t2, t5 (t5 high via "URGENT", no tone)
        2.0, 18.0,  # open: t2, t4; resolution: t1 24 h, t5 12 h
    )], "account_id string, as_of_date date, tickets_7d double, tickets_high_priority_7d double, "
        "ticket_tone_mean_7d double, tickets_28d double, tickets_high_priority_28d double, "
        "ticket_tone_mean_28d double, tickets_open double, ticket_resolution_hours_mean_28d double")
    assert_df_equality(got.select(*want.columns), want, ignore_row_order=True, ignore_nullable=True)


def test_tone_udf_runs_once_per_ticket_below_the_snapshot_join(spark):
    snaps = [D(2023, 1, 1), D(2023, 2, 1), AS_OF]
    got = support_features(tickets(spark, TICKETS), asof.snapshot_frame(spark, snaps), snaps, FEATURES)
    plan = got._jdf.queryExecution().executedPlan().toString()
    assert plan.count("ArrowEvalPython") == 1
    udf_at = plan.index("ArrowEvalPython")
    join_at = max(plan.find("BroadcastNestedLoopJoin"), plan.find("NestedLoopJoin"))
    assert 0 <= join_at < udf_at  # printed top-down: the join sits above the (single) UDF node
