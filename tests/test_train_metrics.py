"""Each metric against a hand computation on ten rows (scores, labels and one tie written out)."""

from __future__ import annotations

import datetime as dt
import math

import pytest
from chispa import assert_approx_df_equality
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

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


def test_oracle_metrics_use_only_the_same_test_rows(spark: SparkSession, scored: DataFrame) -> None:
    truth = spark.createDataFrame(
        [("a1", D, .3), ("a2", D, .6), ("a3", D, .2), ("a4", D, .7), ("a5", D, .1), ("a6", D, .4),
         ("a7", D, .5), ("a8", D, .05), ("a1", dt.date(2023, 5, 1), 0.99), ("zz", D, 0.5)],
        "account_id string, as_of_date date, churn_probability double")
    got = M.oracle_metrics(scored, truth)
    # 8 joined rows; truth: positives .3 .6 .7 .4 vs negatives .2 .1 .5 .05 -> 3 + 4 + 4 + 3 = 14 of 16
    # model on the same rows: positives .9 .8 .6 .5 vs negatives .7 .5 .4 .2 -> 4 + 4 + 3 + 2.5 = 13.5 of 16
    # truth's deciles of 8 rows (row k in decile floor(10 k / 8) + 1, one row each) in truth order:
    # a4 .7 y1, a2 .6 y1, a7 .5 y0, a6 .4 y1, a1 .3 y1, a3 .2 y0, a5 .1 y0, a8 .05 y0:
    # ece = (.3 + .4 + .5 + .6 + .7 + .2 + .1 + .05) / 8 = 2.85 / 8; in the large (2.85 - 4) / 8
    assert got == pytest.approx({"oracle_roc_auc": 14 / 16, "oracle_rows": 8, "roc_auc_on_oracle_rows": 13.5 / 16,
                                 "oracle_ece": 2.85 / 8, "oracle_calibration_in_the_large": -1.15 / 8})


def test_evaluate_has_the_run_summary_keys(scored: DataFrame) -> None:
    got = M.evaluate(scored)
    assert got["rows"] == 10 and got["positives"] == 4 and got["label_rate"] == pytest.approx(0.4)
    assert got["roc_auc"] == pytest.approx(21.5 / 24) and got["pr_auc"] == pytest.approx(41 / 48)
    assert got["lift_at_10pct"] == pytest.approx(2.5) and got["brier"] == pytest.approx(0.14125)
    assert "oracle_roc_auc" not in got


def weighted_rows(spark: SparkSession, weights: dict[str, int]) -> DataFrame:
    """The ten ROWS as one bootstrap replicate (0) with a written-out weight per account (1 when not given)."""
    return spark.createDataFrame([(a, D, s, y, 0, weights.get(a, 1)) for a, s, y in ROWS],
                                 "account_id string, as_of_date date, churn_probability double, label int, "
                                 "replicate int, weight int")


def test_weights_of_one_reproduce_the_point_metrics(spark: SparkSession, scored: DataFrame) -> None:
    ranking = M._ranking_by_replicate(weighted_rows(spark, {})).collect()
    assert len(ranking) == 1 and ranking[0]["replicate"] == 0
    assert ranking[0]["roc_auc"] == pytest.approx(M.roc_auc(scored), abs=1e-12)
    assert ranking[0]["roc_auc"] == pytest.approx(21.5 / 24, abs=1e-12)
    assert ranking[0]["pr_auc"] == pytest.approx(M.pr_auc(scored), abs=1e-12)
    assert ranking[0]["pr_auc"] == pytest.approx(41 / 48, abs=1e-12)
    assert ranking[0]["lift_at_10pct"] == pytest.approx(M.top_fraction_metrics(scored)["lift_at_10pct"], abs=1e-12)
    assert ranking[0]["lift_at_10pct"] == pytest.approx(2.5, abs=1e-12)
    # one row per decile: ece = mean |p - y| = (.1 + .2 + .7 + .4 + .5 + .5 + .4 + .2 + .1 + .05) / 10, in the large
    # (4.75 - 4) / 10
    assert ranking[0]["ece"] == pytest.approx(0.315, abs=1e-12)
    assert ranking[0]["calibration_in_the_large"] == pytest.approx(0.075, abs=1e-12)
    point = M.calibration_errors([r.asDict() for r in M.calibration_by_decile(scored).collect()])
    assert point == pytest.approx({k: ranking[0][k] for k in M.CALIBRATION_METRICS}, abs=1e-12)
    errors = M.probability_errors(scored)
    for metric in ("log_loss", "brier"):
        got = M._by_replicate(weighted_rows(spark, {}), metric).collect()
        assert got[0][metric] == pytest.approx(errors[metric], abs=1e-12)


def test_weighted_auc_pr_auc_and_lift_by_hand(spark: SparkSession) -> None:
    weights = {"a1": 1, "a2": 0, "a3": 3, "a4": 2, "a5": 1, "a6": 2, "a7": 1, "a8": 0, "a9": 1, "a10": 2}
    got = M._ranking_by_replicate(weighted_rows(spark, weights)).first()
    assert got is not None
    # churners a1 (.9) x1, a4 (.6) x2, a6 (.5) x2: P = 5 (a2 has weight 0, it is not in the resample);
    # others a3 (.7) x3, a5 (.5) x1, a7 (.4) x1, a9 (.1) x1, a10 (.05) x2: N = 8; W = 13.
    # AUC: a1 beats all 8 -> 1 * 8; a4 beats a5 a7 a9 a10 = 5 -> 2 * 5; a6 beats a7 a9 a10 = 4 and ties a5 (half of 1)
    # -> 2 * 4.5. (8 + 10 + 9) / (5 * 8)
    assert got["roc_auc"] == pytest.approx(27 / 40, abs=1e-12)
    # distinct thresholds (tp, fp): .9 (1, 0), .7 (1, 3), .6 (3, 3), .5 (5, 4), lower ones add no churner.
    # (recall, precision): (0, 1) (.2, 1) (.2, 1/4) (.6, 1/2) (1, 5/9), trapezoids:
    expected_pr = 0.2 + 0.4 * (1 / 4 + 1 / 2) / 2 + 0.4 * (1 / 2 + 5 / 9) / 2
    assert expected_pr == pytest.approx(101 / 180)
    assert got["pr_auc"] == pytest.approx(expected_pr, abs=1e-12)
    # top ceil(0.1 * 13) = 2 copies: a1 (1 copy, churner), then 1 of a3's 3 copies (not a churner): the row across
    # the cut gives only what fits. Precision 1/2, base rate 5/13 -> lift 13/10.
    assert got["lift_at_10pct"] == pytest.approx(1.3, abs=1e-12)


def test_weighted_calibration_errors_by_hand_with_copies_across_deciles(spark: SparkSession) -> None:
    weights = {"a1": 1, "a2": 0, "a3": 3, "a4": 2, "a5": 1, "a6": 2, "a7": 1, "a8": 0, "a9": 1, "a10": 2}
    got = M._ranking_by_replicate(weighted_rows(spark, weights)).first()
    assert got is not None
    # W = 13 copies in rank order k = 0..12: a1 | a3 a3 a3 | a4 a4 | a5 | a6 a6 | a7 | a9 | a10 a10. Copy k is in
    # decile floor(10 k / 13) + 1: deciles hold k {0, 1} {2} {3} {4, 5} {6} {7} {8, 9} {10} {11} {12}, so a3's copies
    # fall into deciles 1, 2 and 3, and a6's into 6 and 7. |predicted sum - churners| per decile:
    # {a1 .9 y1, a3 .7}: |1.6 - 1| = .6; {a3}: .7; {a3}: .7; {a4, a4 (.6 y1)}: |1.2 - 2| = .8; {a5 .5}: .5;
    # {a6 .5 y1}: .5; {a6, a7 .4}: |.9 - 1| = .1; {a9 .1}: .1; {a10 .05}: .05; {a10}: .05 -> sum 4.1
    assert got["ece"] == pytest.approx(4.1 / 13, abs=1e-12)
    # predicted .9 + 3 * .7 + 2 * .6 + .5 + 2 * .5 + .4 + .1 + 2 * .05 = 6.3 against 5 churner copies
    assert got["calibration_in_the_large"] == pytest.approx(1.3 / 13, abs=1e-12)


def test_weighted_log_loss_and_brier_by_hand(spark: SparkSession) -> None:
    rows = weighted_rows(spark, {a: 0 for a, _, _ in ROWS} | {"a1": 2, "a3": 1})
    # a1 (p .9, churner) twice and a3 (p .7, not) once
    assert M._by_replicate(rows, "log_loss").collect()[0]["log_loss"] == pytest.approx(
        -(2 * math.log(0.9) + math.log(0.3)) / 3, abs=1e-12)
    assert M._by_replicate(rows, "brier").collect()[0]["brier"] == pytest.approx((2 * 0.01 + 0.49) / 3, abs=1e-12)


def test_poisson_weights_resample_accounts_not_rows(spark: SparkSession) -> None:
    two_snapshots = spark.createDataFrame(
        [(a, d, s, y if d == D else 1 - y) for a, s, y in ROWS for d in (D, dt.date(2023, 5, 1))],
        "account_id string, as_of_date date, churn_probability double, label int")
    per_account = (M.poisson_weights(two_snapshots, replicates=300, seed=7)
                   .groupBy("replicate", "account_id")
                   .agg(F.count(F.lit(1)).alias("rows"), F.countDistinct("weight").alias("weights"),
                        F.max("weight").alias("weight"))
                   .collect())
    assert len(per_account) == 300 * 10
    assert all(r["rows"] == 2 and r["weights"] == 1 for r in per_account)  # both snapshots share the draw
    draws = [r["weight"] for r in per_account]
    # 3000 draws of Poisson(1): mean 1 (sd 0.018), P(0) = P(1) = 1/e (sd 0.009); the draws are fixed by the seed
    assert sum(draws) / len(draws) == pytest.approx(1.0, abs=0.06)
    assert draws.count(0) / len(draws) == pytest.approx(math.exp(-1), abs=0.03)
    assert draws.count(1) / len(draws) == pytest.approx(math.exp(-1), abs=0.03)
    assert max(draws) <= len(M.POISSON_CDF)


def test_same_seed_same_intervals_on_any_partitioning(scored: DataFrame) -> None:
    one = M.bootstrap_intervals(scored.coalesce(1), replicates=50, seed=3)
    assert M.bootstrap_intervals(scored.repartition(4), replicates=50, seed=3) == one
    assert M.bootstrap_intervals(scored, replicates=50, seed=4) != one


def test_interval_contains_the_point_estimate(scored: DataFrame) -> None:
    got = M.bootstrap_intervals(scored)  # 200 replicates
    points = {"roc_auc": 21.5 / 24, "pr_auc": 41 / 48, "lift_at_10pct": 2.5, "ece": 0.315,
              "calibration_in_the_large": 0.075}
    for metric, point in points.items():
        interval = got[metric]
        assert interval["low"] <= point <= interval["high"] and interval["low"] < interval["high"], metric
        # a replicate that draws no churner (all of a1 a2 a4 a6 weight 0, P = e^-4) has no metric
        assert 180 <= interval["replicates"] <= 200


def test_paired_difference_of_a_model_with_itself_is_zero(scored: DataFrame) -> None:
    for metric, point in (("roc_auc", 21.5 / 24), ("brier", 0.14125)):  # a ranking metric and a probability error
        got = M.paired_bootstrap_difference(scored, scored, metric, replicates=20, seed=1)
        assert got["new"] == got["current"] and got["new"] == pytest.approx(point, abs=1e-12), metric
        assert (got["difference"], got["low"], got["high"], got["p_new_not_worse"]) == (0.0, 0.0, 0.0, 1.0), metric


def test_paired_difference_favours_the_better_model(scored: DataFrame) -> None:
    perfect = scored.withColumn("churn_probability", F.col("label") * 0.98 + 0.01)  # .99 for churners, .01 others
    auc = M.paired_bootstrap_difference(perfect, scored, "roc_auc", replicates=50)
    # perfect ordering: AUC 1 in every replicate, so never below the current model's
    assert auc["difference"] == pytest.approx(1 - 21.5 / 24, abs=1e-12) and auc["higher_is_better"] is True
    assert 0 <= auc["low"] < auc["high"] and auc["p_new_not_worse"] == 1.0
    loss = M.paired_bootstrap_difference(perfect, scored, "log_loss", replicates=50)
    # -log .99 on every row, below every row's current loss (the lowest is a10's -log .95)
    assert loss["higher_is_better"] is False and loss["new"] == pytest.approx(-math.log(0.99), abs=1e-12)
    assert loss["low"] < loss["high"] < 0 and loss["p_new_not_worse"] == 1.0
    with pytest.raises(ValueError, match="unknown metric"):
        M.paired_bootstrap_difference(perfect, scored, "accuracy")


def test_calibration_errors_from_the_decile_rows_by_hand() -> None:
    deciles = [  # 10 + 10 + 20 rows
        {"rows": 10, "positives": 6, "mean_predicted": 0.5, "observed_rate": 0.6},
        {"rows": 10, "positives": 2, "mean_predicted": 0.3, "observed_rate": 0.2},
        {"rows": 20, "positives": 1, "mean_predicted": 0.1, "observed_rate": 0.05},
    ]
    # ece = 0.25 * 0.1 + 0.25 * 0.1 + 0.5 * 0.05 = 0.075; mean predicted (5 + 3 + 2) / 40 = 0.25,
    # observed 9 / 40 = 0.225: calibration-in-the-large +0.025 (over-predicts)
    got = M.calibration_errors(deciles)
    assert got["ece"] == pytest.approx(0.075, abs=1e-12)
    assert got["calibration_in_the_large"] == pytest.approx(0.025, abs=1e-12)
