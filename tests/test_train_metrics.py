"""Each metric against a hand computation on ten rows (scores, labels and one tie written out)."""

from __future__ import annotations

import datetime as dt
import math

import pytest
from chispa import assert_approx_df_equality
from pyspark.sql import DataFrame, SparkSession

from churn_spark.train import metrics as M

D = dt.date(2023, 6, 1)
ROWS = [  # account, score, label -- a5 (0) and a6 (1) tie at 0.5
    ("a1", 0.9, 1), ("a2", 0.8, 1), ("a3", 0.7, 0), ("a4", 0.6, 1), ("a5", 0.5, 0),
    ("a6", 0.5, 1), ("a7", 0.4, 0), ("a8", 0.2, 0), ("a9", 0.1, 0), ("a10", 0.05, 0),
]


@pytest.fixture(scope="module")
def scored(spark: SparkSession) -> DataFrame:
    return spark.createDataFrame([(a, D, s, y) for a, s, y in ROWS],
                                 "account_id string, as_of_date date, churn_probability double, label int")


def test_roc_auc_counts_ordered_pairs_and_half_a_tie(scored: DataFrame) -> None:
    # positives 0.9, 0.8, 0.6, 0.5 beat 6, 6, 5 and 4 negatives (+ half for the tie at 0.5): 21.5 of 24 pairs
    assert M.roc_auc(scored) == pytest.approx(21.5 / 24, abs=1e-12)


def test_pr_auc_is_mllib_trapezoids_from_recall_zero(scored: DataFrame) -> None:
    # (recall, precision): (0,1) (.25,1) (.5,1) (.5,2/3) (.75,3/4) (1,4/6) then recall stays 1
    expected = 0.25 * 1 + 0.25 * 1 + 0.25 * (2 / 3 + 3 / 4) / 2 + 0.25 * (3 / 4 + 4 / 6) / 2
    assert expected == pytest.approx(41 / 48)
    assert M.pr_auc(scored) == pytest.approx(expected, abs=1e-12)


def test_log_loss_and_brier(scored: DataFrame) -> None:
    ll = -(math.log(.9) + math.log(.8) + math.log(.3) + math.log(.6) + math.log(.5)
           + math.log(.5) + math.log(.6) + math.log(.8) + math.log(.9) + math.log(.95)) / 10
    brier = (.01 + .04 + .49 + .16 + .25 + .25 + .16 + .04 + .01 + .0025) / 10
    got = M.probability_errors(scored)
    assert got["log_loss"] == pytest.approx(ll, abs=1e-12)
    assert got["brier"] == pytest.approx(brier, abs=1e-12)


def test_log_loss_of_a_certain_wrong_answer_is_finite(spark: SparkSession) -> None:
    df = spark.createDataFrame([(1.0, 0), (0.0, 0)], "churn_probability double, label int")
    # p = 1 is clipped to 1 - 1e-15 (as a double), p = 0 to 1e-15
    expected = (-math.log(1 - (1 - 1e-15)) - math.log(1 - 1e-15)) / 2
    assert M.probability_errors(df)["log_loss"] == pytest.approx(expected, rel=1e-9)


def test_precision_recall_lift_at_top_fractions(scored: DataFrame) -> None:
    # 10 rows, 4 churners (base rate 0.4). top 5% and 10% = 1 row (a1), 20% = 2 rows (a1, a2),
    # 50% = 5 rows a1..a5 (the tie at 0.5 is broken by account id: a5 before a6) -> 3 churners.
    got = M.top_fraction_metrics(scored, fractions=(0.05, 0.1, 0.2, 0.5))
    assert got == pytest.approx({
        "precision_at_5pct": 1.0, "recall_at_5pct": 0.25, "lift_at_5pct": 2.5,
        "precision_at_10pct": 1.0, "recall_at_10pct": 0.25, "lift_at_10pct": 2.5,
        "precision_at_20pct": 1.0, "recall_at_20pct": 0.5, "lift_at_20pct": 2.5,
        "precision_at_50pct": 0.6, "recall_at_50pct": 0.75, "lift_at_50pct": 1.5,
    })
    assert M.top_count(0.1, 30) == 3 and M.top_count(0.05, 10) == 1 and M.top_count(0.2, 11) == 3


def test_calibration_by_decile(spark: SparkSession, scored: DataFrame) -> None:
    # ten rows: one per decile, in score order (a5 before a6 at the tie)
    order = ["a1", "a2", "a3", "a4", "a5", "a6", "a7", "a8", "a9", "a10"]
    by_id = {a: (s, y) for a, s, y in ROWS}
    expected = spark.createDataFrame(
        [(i + 1, 1, by_id[a][1], by_id[a][0], float(by_id[a][1])) for i, a in enumerate(order)],
        "decile int, rows long, positives long, mean_predicted double, observed_rate double")
    assert_approx_df_equality(M.calibration_by_decile(scored), expected, 1e-12, ignore_nullable=True)


def test_oracle_auc_uses_only_the_same_test_rows(spark: SparkSession, scored: DataFrame) -> None:
    truth = spark.createDataFrame(
        [("a1", D, .3), ("a2", D, .6), ("a3", D, .2), ("a4", D, .7), ("a5", D, .1), ("a6", D, .4),
         ("a7", D, .5), ("a8", D, .05), ("a1", dt.date(2023, 5, 1), 0.99), ("zz", D, 0.5)],
        "account_id string, as_of_date date, churn_probability double")
    got = M.oracle_roc_auc(scored, truth)
    # 8 joined rows; truth: positives .3 .6 .7 .4 vs negatives .2 .1 .5 .05 -> 3 + 4 + 4 + 3 = 14 of 16
    # model on the same rows: positives .9 .8 .6 .5 vs negatives .7 .5 .4 .2 -> 4 + 4 + 3 + 2.5 = 13.5 of 16
    assert got == pytest.approx({"oracle_roc_auc": 14 / 16, "oracle_rows": 8, "roc_auc_on_oracle_rows": 13.5 / 16})


def test_evaluate_has_the_run_summary_keys(scored: DataFrame) -> None:
    got = M.evaluate(scored)
    assert got["rows"] == 10 and got["positives"] == 4 and got["label_rate"] == pytest.approx(0.4)
    assert got["roc_auc"] == pytest.approx(21.5 / 24) and got["pr_auc"] == pytest.approx(41 / 48)
    assert got["lift_at_10pct"] == pytest.approx(2.5) and got["brier"] == pytest.approx(0.14125)
    assert "oracle_roc_auc" not in got
