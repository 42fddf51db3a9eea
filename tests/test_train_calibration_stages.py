"""The calibration stages and their fits, by hand on a few rows: Platt and isotonic as stages, their MLlib fits,
and the move of a calibrator fitted on centred predictions to the registered fit's prior (docs/model.md,
"Calibration"). No pipeline is fitted or saved here, so these run in `make test-fast`; saving a calibrated
model is in tests/test_train_pipeline.py."""

from __future__ import annotations

import math

import pytest
from chispa import assert_approx_df_equality
from pyspark.sql import SparkSession
from pyspark.sql import functions as F

from churn_spark import thresholds as T
from churn_spark.train import pipeline as P


def test_platt_stage_by_hand(spark: SparkSession) -> None:
    from pyspark.ml.linalg import Vectors

    df = spark.createDataFrame([(Vectors.dense([0.8, 0.2]),), (Vectors.dense([0.5, 0.5]),)], ["probability"])
    out = P.PlattCalibration(slope=2.0, intercept=0.0).transform(df).drop("probability")
    # logit(0.2) = ln(1/4); doubled = ln(1/16) -> 1/17. logit(0.5) = 0 -> 0.5.
    expected = spark.createDataFrame([(0.2, 1 / 17), (0.5, 0.5)],
                                     "churn_probability_raw double, churn_probability double")
    assert_approx_df_equality(out, expected, 1e-12, ignore_nullable=True)
    shifted = P.PlattCalibration(slope=1.0, intercept=math.log(3)).transform(df).select("churn_probability")
    assert [r[0] for r in shifted.collect()] == pytest.approx([3 * .2 / (3 * .2 + .8), 0.75])


def test_fit_platt_recovers_the_slope_of_a_two_point_design(spark: SparkSession) -> None:
    # raw 0.2 with observed rate 0.1, raw 0.8 with observed rate 0.9 (10 rows each): the MLE maps
    # logit(0.2) = -ln 4 to logit(0.1) = -ln 9, so slope = ln 9 / ln 4 and intercept 0.
    rows = [(0.2, 1 if i == 0 else 0) for i in range(10)] + [(0.8, 0 if i == 0 else 1) for i in range(10)]
    df = spark.createDataFrame(rows, "churn_probability_raw double, label int")
    fitted = P.fit_platt(df).describe()
    assert fitted["slope"] == pytest.approx(math.log(9) / math.log(4), abs=1e-4)
    assert fitted["intercept"] == pytest.approx(0.0, abs=1e-4)
    one_class = spark.createDataFrame([(0.2, 0), (0.3, 0)], "churn_probability_raw double, label int")
    assert P.fit_platt(one_class).describe() == {"method": "platt", "slope": 1.0, "intercept": 0.0}


def test_isotonic_stage_interpolates_between_knots_and_is_flat_outside(spark: SparkSession) -> None:
    from pyspark.ml.linalg import Vectors

    stage = P.IsotonicCalibration(boundaries=[0.2, 0.4, 0.4, 0.8], predictions=[0.1, 0.3, 0.5, 0.7])
    raws = [0.1, 0.2, 0.3, 0.4, 0.6, 0.8, 0.95]
    df = spark.createDataFrame([(Vectors.dense([1 - r, r]),) for r in raws], ["probability"])
    out = stage.transform(df).select("churn_probability_raw", "churn_probability")
    # below the first knot: 0.1; 0.3 halfway from (0.2, 0.1) to (0.4, 0.3): 0.2; at the repeated knot 0.4
    # the later one (0.5) holds; 0.6 halfway from (0.4, 0.5) to (0.8, 0.7): 0.6; beyond the last: 0.7.
    expected = [0.1, 0.1, 0.2, 0.5, 0.6, 0.7, 0.7]
    assert [r[1] for r in out.orderBy("churn_probability_raw").collect()] == pytest.approx(expected, abs=1e-12)


def test_count_at_or_below_by_hand(spark: SparkSession) -> None:
    # knots 1, 2, 2, 5: below 1 none; 1 and 1.5 pass one; at the repeated 2 both count (3); 5 and beyond all
    # four; NaN sorts after every number in Spark (4); a null passes none. Five knots (the tree's other shape):
    # 2 passes 2 of [1, 2, 3, 4, 5], 4.9 passes 4; with no knots every count is 0.
    # Strictly below (count_below), knots 1, 2, 2, 5: a value equal to a knot does not pass it: 1 -> 0,
    # 2 -> 1 (only the 1), 5 -> 3; 1.5 -> 1, 7 -> 4, NaN -> 4, null -> 0.
    xs = [None, 0.5, 1.0, 1.5, 2.0, 4.9, 5.0, 7.0, float("nan")]
    df = spark.createDataFrame([(x,) for x in xs], "x double")
    got = df.select(T.count_at_or_below(F.col("x"), [1.0, 2.0, 2.0, 5.0]).alias("n"),
                    T.count_at_or_below(F.col("x"), [1.0, 2.0, 3.0, 4.0, 5.0]).alias("n5"),
                    T.count_at_or_below(F.col("x"), []).alias("n0"),
                    T.count_below(F.col("x"), [1.0, 2.0, 2.0, 5.0]).alias("strict"),
                    F.expr(T.count_at_or_below_sql("`x`", [1.0, 2.0, 2.0, 5.0])).alias("sql")).collect()
    assert [r["n"] for r in got] == [0, 0, 1, 1, 3, 3, 4, 4, 4]
    assert [r["n5"] for r in got] == [0, 0, 1, 1, 2, 4, 5, 5, 5]
    assert {r["n0"] for r in got} == {0}
    assert [r["strict"] for r in got] == [0, 0, 0, 1, 1, 3, 3, 4, 4]
    assert [r["sql"] for r in got] == [0, 0, 1, 1, 3, 3, 4, 4, 4]  # the SQL text's tree: the same counts


def test_fit_isotonic_pools_adjacent_violators(spark: SparkSession) -> None:
    # raw 0.1: 1 churner of 4; raw 0.2: 0 of 2; raw 0.3: 3 of 4 -- 0.1 and 0.2 violate the order and pool
    # to 1 of 6; so the knots are 0.1 and 0.2 at 1/6, then 0.3 at 3/4. Both blocks are end blocks: they keep
    # their end knots (only interior blocks are centred, next test).
    rows = [(0.1, y) for y in (1, 0, 0, 0)] + [(0.2, 0), (0.2, 0)] + [(0.3, y) for y in (1, 1, 1, 0)]
    df = spark.createDataFrame(rows, "churn_probability_raw double, label int")
    fitted = P.fit_isotonic(df).describe()
    assert fitted["boundaries"] == pytest.approx([0.1, 0.2, 0.3])
    assert fitted["predictions"] == pytest.approx([1 / 6, 1 / 6, 0.75])
    assert fitted["tie_break"] == P.TIE_BREAK  # the fitted stage keeps the raw ranking where it is flat


def test_a_centred_isotonic_map_ranks_inside_a_pooled_block(spark: SparkSession) -> None:
    """Raw 0.1 (0 of 2), 0.2 (1 of 2), 0.3 (0 of 2), 0.4 (2 of 2): 0.2 and 0.3 pool to 1 of 4. Knots: 0.1 at 0,
    the interior block at its rows' mean 0.25 with 0.25, 0.4 at 1. Raw 0.2 maps to 0.25 x (0.2 - 0.1) / 0.15 =
    1/6 and 0.3 to 0.25 + 0.75 x 0.05 / 0.15 = 0.5 (up to the 1e-6 tie break); a plain isotonic map: both 0.25."""
    from pyspark.ml.linalg import Vectors

    rows = [(0.1, 0), (0.1, 0), (0.2, 1), (0.2, 0), (0.3, 0), (0.3, 0), (0.4, 1), (0.4, 1)]
    stage = P.fit_isotonic(spark.createDataFrame(rows, "churn_probability_raw double, label int"))
    assert stage.describe()["boundaries"] == pytest.approx([0.1, 0.25, 0.4])
    assert stage.describe()["predictions"] == pytest.approx([0.0, 0.25, 1.0])
    df = spark.createDataFrame([(Vectors.dense([1 - r, r]),) for r in (0.2, 0.3)], ["probability"])
    mapped = [r[0] for r in stage.transform(df).orderBy("churn_probability_raw").select("churn_probability").collect()]
    assert mapped == pytest.approx([1 / 6, 0.5], abs=1e-5)


def test_isotonic_tie_break_keeps_the_raw_order_inside_a_flat_step(spark: SparkSession) -> None:
    from pyspark.ml.linalg import Vectors

    # knots (0.2, 0.3), (0.6, 0.3): flat at 0.3 between them. w = 0.1: 0.9 map + 0.1 raw, so raw 0.3 -> 0.3,
    # raw 0.5 -> 0.32, raw 0.1 (below the first knot, map 0.3) -> 0.28; without the tie break all three are 0.3.
    raws = [0.1, 0.3, 0.5]
    df = spark.createDataFrame([(Vectors.dense([1 - r, r]),) for r in raws], ["probability"])

    def mapped(stage: P.IsotonicCalibration) -> list[float]:
        out = stage.transform(df).orderBy("churn_probability_raw").select("churn_probability")
        return [r[0] for r in out.collect()]

    assert mapped(P.IsotonicCalibration([0.2, 0.6], [0.3, 0.3], tieBreak=0.1)) == pytest.approx([0.28, 0.3, 0.32])
    assert mapped(P.IsotonicCalibration([0.2, 0.6], [0.3, 0.3])) == pytest.approx([0.3, 0.3, 0.3])
    moved = P.for_prior(P.IsotonicCalibration([0.2, 0.6], [0.3, 0.3], tieBreak=0.1), math.log(0.25))
    assert moved.describe()["tie_break"] == 0.1  # moving to the refit's prior keeps it


def test_a_calibrator_of_centred_predictions_moves_to_the_registered_fits_prior(spark: SparkSession) -> None:
    """A fit whose training churn rate was 20 % (prior logit ln(1/4)) gives raw 0.2 where an even-prior fit
    gives 0.5 (centred: sigmoid(logit(0.2) - ln(1/4)) = 0.5). The calibrator fitted on centred predictions
    must give the same probability on the raw one: Platt's intercept becomes b - a ln(1/4), an isotonic
    knot at 0.5 moves to 0.2 and one at 0.8 (logit ln 4) to sigmoid(ln 4 - ln 4) = 0.5; 0 and 1 stay."""
    from pyspark.ml.linalg import Vectors

    prior = math.log(0.25)
    raw = spark.createDataFrame([(0.2,)], "churn_probability_raw double")
    centred = raw.select(P.centred(F.col("churn_probability_raw"), prior).alias("c")).first()[0]
    assert centred == pytest.approx(0.5, abs=1e-12)
    moved = P.for_prior(P.PlattCalibration(slope=2.0, intercept=0.3), prior).describe()
    assert (moved["slope"], moved["intercept"]) == pytest.approx((2.0, 0.3 - 2.0 * math.log(0.25)))
    df = spark.createDataFrame([(Vectors.dense([0.8, 0.2]),)], ["probability"])
    # Platt at the centred 0.5 (logit 0): sigmoid(0.3)
    assert P.for_prior(P.PlattCalibration(2.0, 0.3), prior).transform(df).first()["churn_probability"] == \
        pytest.approx(1 / (1 + math.exp(-0.3)), abs=1e-9)
    iso = P.for_prior(P.IsotonicCalibration([0.0, 0.5, 0.8, 1.0], [0.05, 0.1, 0.6, 0.9]), prior).describe()
    assert iso["boundaries"] == pytest.approx([0.0, 0.2, 0.5, 1.0], abs=1e-12)
    assert iso["predictions"] == [0.05, 0.1, 0.6, 0.9]
    assert P.for_prior(P.PlattCalibration(2.0, 0.3), 0.0).describe()["intercept"] == 0.3  # even prior: unchanged


def test_seasonal_shift_moves_the_log_odds_by_the_season_and_round_trips(spark: SparkSession, tmp_path) -> None:
    from pyspark.ml.linalg import Vectors

    # Platt identity, then +0.5 x (cos - 0) - 1.0 x (sin - 0.5): raw 0.2 (log-odds -ln 4)
    #   cos 1, sin 0.5 -> -ln 4 + 0.5 -> 1 / (1 + 4 e^-0.5); cos 0, sin -0.5 -> -ln 4 + 1.0 -> 1 / (1 + 4 e^-1);
    #   no season (a slice built before the calendar features) -> not moved: 0.2.
    stage = P.PlattCalibration().with_season([0.5, -1.0, 0.0, 0.5])
    df = spark.createDataFrame([(1, Vectors.dense([0.8, 0.2]), 1.0, 0.5), (2, Vectors.dense([0.8, 0.2]), 0.0, -0.5),
                                (3, Vectors.dense([0.8, 0.2]), None, None)],
                               ["id", "probability", "season_cos", "season_sin"])
    expected = [1 / (1 + 4 * math.exp(-0.5)), 1 / (1 + 4 * math.exp(-1.0)), 0.2]
    out = stage.transform(df).orderBy("id").select("churn_probability").collect()
    assert [r[0] for r in out] == pytest.approx(expected, abs=1e-9)
    assert stage.describe() == {"method": "platt", "slope": 1.0, "intercept": 0.0,
                                "season": {"k_cos": 0.5, "k_sin": -1.0, "centre_cos": 0.0, "centre_sin": 0.5}}
    assert stage.input_columns() == ["season_cos", "season_sin"] and P.PlattCalibration().input_columns() == []
    stage.write().overwrite().save(str(tmp_path / "stage"))  # saved with the model, read back the same
    loaded = P.PlattCalibration.load(str(tmp_path / "stage"))
    assert [r[0] for r in loaded.transform(df).orderBy("id").select("churn_probability").collect()] == pytest.approx(
        expected, abs=1e-9)


def test_fit_seasonal_shift_recovers_the_seasons_log_odds_around_the_calibrated_level(spark: SparkSession) -> None:
    # Calibrated p = 0.1 everywhere; three seasons (cos, sin) with observed rates 2/10 at (1, 0), 1/20 at (-1, 0),
    # 1/10 at (0, 1). Three seasons, three parameters (intercept a, k_cos, k_sin; centre 0): each season's
    # log-odds is met exactly, a + k_cos = logit(0.2) - logit(0.1) = ln 2.25, a - k_cos = ln(9/19), a + k_sin = 0,
    # so k_cos = ln(2.25 x 19/9) / 2 = ln(4.75) / 2 and k_sin = -a = -ln(2.25 x 9/19) / 2.
    rows = ([(0.1, 1.0, 0.0, int(i < 2)) for i in range(10)] + [(0.1, -1.0, 0.0, int(i < 1)) for i in range(20)]
            + [(0.1, 0.0, 1.0, int(i < 1)) for i in range(10)])
    df = spark.createDataFrame(rows, "churn_probability double, season_cos double, season_sin double, label int")
    k_cos, k_sin, c_cos, c_sin = P.fit_seasonal_shift(df, (0.0, 0.0))
    assert (k_cos, k_sin) == pytest.approx((math.log(4.75) / 2, -math.log(2.25 * 9 / 19) / 2), abs=1e-6)
    assert (c_cos, c_sin) == (0.0, 0.0)
    # the centre moves the inputs, not the slopes: centred on (1, 0), the same k
    assert P.fit_seasonal_shift(df, (1.0, 0.0))[:2] == pytest.approx([k_cos, k_sin], abs=1e-6)
    two_seasons = df.where(F.col("season_sin") == 0.0)  # a, k_cos, k_sin not identified: no shift
    assert P.fit_seasonal_shift(two_seasons, (0.0, 0.0)) == []
