"""Uplift metrics against hand computations on ten assignments (one tie), with and without propensities."""

from __future__ import annotations

import pytest
from chispa import assert_approx_df_equality
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from churn_spark.uplift import metrics as M

SCHEMA = "account_id string, uplift double, treated int, label int, true_uplift double"
ROWS = [  # account, score, treated, churned, true uplift -- a5 (treated) and a6 (control) tie at 0.5
    ("a1", 0.9, 1, 0, 0.30), ("a2", 0.8, 0, 1, 0.20), ("a3", 0.7, 1, 0, 0.25), ("a4", 0.6, 0, 1, 0.10),
    ("a5", 0.5, 1, 1, 0.05), ("a6", 0.5, 0, 0, 0.15), ("a7", 0.4, 1, 1, 0.00), ("a8", 0.3, 0, 0, -0.05),
    ("a9", 0.2, 1, 1, -0.10), ("a10", 0.1, 0, 0, 0.00),
]
# Cumulative by distinct score (n rows, n_t / T treated rows / churners, n_c / C control rows / churners),
# d = C/n_c - T/n_t (0 while an arm is empty), Q = n_t d (= C n_t/n_c - T), U = n d, x = n / 10:
#   0.9: n=1  t 1/0 c 0/0  d=0            Q=0     U=0      x=.1
#   0.8: n=2  t 1/0 c 1/1  d=1            Q=1     U=2      x=.2
#   0.7: n=3  t 2/0 c 1/1  d=1            Q=2     U=3      x=.3
#   0.6: n=4  t 2/0 c 2/2  d=1            Q=2     U=4      x=.4
#   0.5: n=6  t 3/1 c 3/2  d=2/3-1/3=1/3  Q=1     U=2      x=.6   (the tie enters as one group: no point at .5)
#   0.4: n=7  t 4/2 c 3/2  d=2/3-1/2=1/6  Q=2/3   U=7/6    x=.7
#   0.3: n=8  t 4/2 c 4/2  d=0            Q=0     U=0      x=.8
#   0.2: n=9  t 5/3 c 4/2  d=1/2-3/5      Q=-1/2  U=-9/10  x=.9
#   0.1: n=10 t 5/3 c 5/2  d=2/5-3/5=-1/5 Q=-1    U=-2     x=1
CURVE = [(0.9, 1, .1, 1, 0.0, 0.0, 0.0), (0.8, 2, .2, 1, 1.0, 1.0, 2.0), (0.7, 3, .3, 2, 1.0, 2.0, 3.0),
         (0.6, 4, .4, 2, 1.0, 2.0, 4.0), (0.5, 6, .6, 3, 1 / 3, 1.0, 2.0), (0.4, 7, .7, 4, 1 / 6, 2 / 3, 7 / 6),
         (0.3, 8, .8, 4, 0.0, 0.0, 0.0), (0.2, 9, .9, 5, -0.1, -0.5, -0.9), (0.1, 10, 1.0, 5, -0.2, -1.0, -2.0)]
# Qini area, trapezoids from (0, 0): 0 + .05 + .15 + .2 + .3 + 1/12 + 1/30 - .025 - .075 = 43/60;
# random line from (0, 0) to (1, Q=-1): area -1/2; Qini coefficient = 43/60 + 1/2 = 73/60
QINI = 73 / 60
# AUUC: 0 + .1 + .25 + .35 + .6 + 19/120 + 7/120 - .045 - .145 = 199/150
AUUC = 199 / 150


@pytest.fixture(scope="module")
def scored(spark: SparkSession) -> DataFrame:
    return spark.createDataFrame(ROWS, SCHEMA)


def test_qini_curve_has_one_point_per_distinct_score(spark: SparkSession, scored: DataFrame) -> None:
    expected = spark.createDataFrame(
        CURVE, "uplift double, targeted long, fraction double, treated long, rate_difference double, "
               "qini double, uplift_curve double")
    assert_approx_df_equality(M.qini_curve(scored).orderBy(F.desc("uplift")), expected, 1e-12,
                              ignore_nullable=True)


def test_qini_auuc_and_uplift_at_k_equal_the_hand_computation(scored: DataFrame) -> None:
    got = M.uplift_metrics(scored, fractions=(0.1, 0.2, 0.3, 0.5))
    # top 10 % = a1 only: no control row, undefined; 20 % = a1, a2: 1/1 - 0/1 = 1; 30 % = a1..a3: 1/1 - 0/2 = 1;
    # 50 % = 5 rows: a1..a4 and half of the tie {a5 (treated, churned), a6 (control, stayed)}:
    # control 2 churners / 2.5 rows - treated 0.5 / 2.5 = 0.8 - 0.2 = 0.6
    assert got == pytest.approx({
        "rows": 10, "treated_rows": 5, "uplift_overall": -0.2, "qini_coefficient": QINI, "auuc": AUUC,
        "uplift_at_10pct": None, "uplift_at_20pct": 1.0, "uplift_at_30pct": 1.0, "uplift_at_50pct": 0.6},
        abs=1e-12)


def test_ties_do_not_depend_on_row_order_or_ids(spark: SparkSession, scored: DataFrame) -> None:
    # swap the ids and the order of the tied rows a5 and a6: the same metrics and curve
    swapped = spark.createDataFrame(
        [("a6" if a == "a5" else "a5" if a == "a6" else a, s, t, y, u) for a, s, t, y, u in reversed(ROWS)], SCHEMA)
    assert M.uplift_metrics(swapped, fractions=(0.5,)) == pytest.approx(M.uplift_metrics(scored, fractions=(0.5,)))
    # all rows tied: one group, the curve is the random line itself, so the Qini coefficient is 0
    flat = scored.withColumn("uplift", F.lit(0.0))
    got = M.uplift_metrics(flat, fractions=(0.3,))
    # the single point (1, Q(G) = -1): area (1 - 0) * (0 - 1) / 2 = -1/2 = the random area. AUUC = U(G)/2 = -1;
    # top 30 %: 3 of the 10 tied rows, every row at share .3: control 2 * .3 / 1.5 - treated 3 * .3 / 1.5 = -.2
    assert got["qini_coefficient"] == pytest.approx(0.0, abs=1e-12)
    assert got["auuc"] == pytest.approx(-1.0, abs=1e-12)
    assert got["uplift_at_30pct"] == pytest.approx(-0.2, abs=1e-12)


def test_one_propensity_changes_nothing_and_unequal_ones_reweight(spark: SparkSession, scored: DataFrame) -> None:
    same = M.uplift_metrics(scored.withColumn("propensity", F.lit(0.8)), fractions=(0.5,))
    assert same == pytest.approx(M.uplift_metrics(scored, fractions=(0.5,)), abs=1e-12)
    # four rows, two campaigns: (e = .5) a treated stayer and a control churner scored .9; (e = .8) a treated
    # churner and a control stayer scored .1. Weights 1/e when treated, 1/(1-e) when held out:
    rows = [("b1", 0.9, 1, 0, 0.5), ("b2", 0.9, 0, 1, 0.5), ("b3", 0.1, 1, 1, 0.8), ("b4", 0.1, 0, 0, 0.8)]
    df = spark.createDataFrame(rows, "account_id string, uplift double, treated int, label int, propensity double")
    # group 0.9: treated w 2 churn 0, control w 2 churn 2: d = 1, Q = n_t d = 1, U = 2 d = 2, x = .5
    # all: treated w 2 + 1.25 = 3.25, churn 1.25; control w 2 + 5 = 7, churn 2: d = 2/7 - 1.25/3.25 = 2/7 - 5/13
    d = 2 / 7 - 5 / 13
    qini = 0.5 * 1 / 2 + 0.5 * (1 + 2 * d) / 2 - 2 * d / 2
    auuc = 0.5 * 2 / 2 + 0.5 * (2 + 4 * d) / 2
    got = M.uplift_metrics(df, fractions=(0.5,))
    assert got == pytest.approx({"rows": 4, "treated_rows": 2, "uplift_overall": d, "qini_coefficient": qini,
                                 "auuc": auuc, "uplift_at_50pct": 1.0}, abs=1e-12)


def test_a_weight_counts_as_copies(scored: DataFrame) -> None:
    # every account drawn twice: rates and shares are unchanged, the counts (so Q, U and their areas) double
    twice = M.uplift_metrics_frame(scored.withColumn("weight", F.lit(2)), fractions=(0.5,), weight_col="weight")
    row = twice.first()
    assert row is not None
    assert row.asDict() == pytest.approx({"rows": 20, "treated_rows": 10, "uplift_overall": -0.2,
                                          "qini_coefficient": 2 * QINI, "auuc": 2 * AUUC, "uplift_at_50pct": 0.6},
                                         abs=1e-12)
    # weight 0 removes a row: without a1 the top 10 % (1 row of 9) is a2, control only: undefined
    dropped = M.uplift_metrics_frame(scored.withColumn("weight", F.when(F.col("account_id") == "a1", 0).otherwise(1)),
                                     fractions=(0.1,), weight_col="weight").first()
    assert dropped is not None and dropped["rows"] == 9 and dropped["uplift_at_10pct"] is None


def test_bootstrap_intervals_are_reproducible_and_bracket_plausible_values(scored: DataFrame) -> None:
    got = M.uplift_intervals(scored, replicates=40, seed=3)
    assert got == M.uplift_intervals(scored, replicates=40, seed=3)
    assert set(got) == {"qini_coefficient", "auuc", "uplift_at_10pct", "uplift_at_20pct", "uplift_at_30pct"}
    for metric, iv in got.items():
        assert iv["low"] <= iv["high"], metric
        assert 0 < iv["replicates"] <= 40
    assert got["qini_coefficient"]["replicates"] == 40  # always defined
    assert got["qini_coefficient"]["low"] < QINI < got["qini_coefficient"]["high"]


def test_oracle_and_true_saved(scored: DataFrame) -> None:
    oracle = M.oracle_uplift_metrics(scored, fractions=(0.2,))
    by_truth = M.uplift_metrics(scored, "true_uplift", fractions=(0.2,))
    assert oracle == {f"oracle_{k}": by_truth[k] for k in ("qini_coefficient", "auuc", "uplift_at_20pct")}
    # by the model's score the top 3 are a1, a2, a3: .30 + .20 + .25 = .75; the top 5 cut the tie {a5, a6} in
    # half: .75 + .10 + (.05 + .15) / 2 = .95
    assert M.true_saved_at_counts(scored, "true_uplift", [3, 5]) == pytest.approx([0.75, 0.95], abs=1e-12)
    assert M.true_saved(scored, "true_uplift", 0) == 0.0
    # by the truth itself the top 2 are a1 (.30) and a3 (.25); 30 % of 10 rows = 3 -> + a2 (.20)
    assert M.true_saved_at(scored, fractions=(0.2, 0.3), score_col="true_uplift") == pytest.approx(
        {"true_saved_at_20pct": 0.55, "true_saved_at_30pct": 0.75}, abs=1e-12)


def test_evaluate_uplift_gathers_everything(scored: DataFrame) -> None:
    got = M.evaluate_uplift(scored, truth_col="true_uplift", replicates=5)
    assert got["qini_coefficient"] == pytest.approx(QINI, abs=1e-12)
    assert got["qini_vs_oracle"] == pytest.approx(QINI / got["oracle_qini_coefficient"], abs=1e-12)
    assert got["true_saved_at_10pct"] == pytest.approx(0.30, abs=1e-12)  # a1
    assert got["oracle_true_saved_at_10pct"] == pytest.approx(0.30, abs=1e-12)  # a1 has the largest truth
    assert set(got["intervals"]) == {"qini_coefficient", "auuc", "uplift_at_10pct", "uplift_at_20pct",
                                     "uplift_at_30pct"}


def test_uplift_by_decile_keeps_ties_together(spark: SparkSession, scored: DataFrame) -> None:
    # ten rows: one per decile, but the tie at 0.5 (ranks 5 and 5) stays in decile 5 and decile 6 is empty;
    # only decile 5 has both arms: control a6 stayed (0/1), treated a5 churned (1/1) -> uplift 0 - 1 = -1
    expected = spark.createDataFrame(
        [(1, 1, 1, 0.9, None), (2, 1, 0, 0.8, None), (3, 1, 1, 0.7, None), (4, 1, 0, 0.6, None),
         (5, 2, 1, 0.5, -1.0), (7, 1, 1, 0.4, None), (8, 1, 0, 0.3, None), (9, 1, 1, 0.2, None),
         (10, 1, 0, 0.1, None)],
        "decile int, rows long, treated_rows long, mean_score double, uplift double")
    assert_approx_df_equality(M.uplift_by_decile(scored), expected, 1e-12, ignore_nullable=True)


def test_arm_weight_and_rate_difference_on_edge_rows(spark: SparkSession) -> None:
    rows = [(1, 0.8, 1.0, 2.0, 1.0, 4.0), (0, 0.8, 0.0, 0.0, 1.0, 4.0), (None, None, 1.0, 2.0, 1.0, 0.0)]
    df = spark.createDataFrame(rows, "treated int, e double, y_t double, w_t double, y_c double, w_c double")
    got = df.select(M.arm_weight(F.col("treated"), F.col("e")).alias("w"),
                    M.rate_difference(F.col("y_t"), F.col("w_t"), F.col("y_c"), F.col("w_c")).alias("d"))
    # 1/.8 = 1.25 treated, 1/.2 = 5 held out, null unknown; 1/4 - 1/2, undefined without treated (or control) weight
    expected = spark.createDataFrame([(1.25, -0.25), (5.0, None), (None, None)], "w double, d double")
    assert_approx_df_equality(got, expected, 1e-12, ignore_nullable=True)
