from __future__ import annotations

import datetime as dt
import math
from decimal import Decimal

import pytest
from chispa import assert_approx_df_equality, assert_df_equality
from pyspark.ml import PipelineModel
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from churn_spark.train import pipeline as P

pytestmark = pytest.mark.slow  # fits, saves and loads models: not in make test-fast

D = dt.date(2023, 1, 1)
SCHEMA = ("account_id string, as_of_date date, feature_set_version string, usage double, seats int, "
          "mrr decimal(18,2), trial boolean, plan string, first_seen date, label int")


@pytest.fixture(scope="module")
def train_df(spark: SparkSession) -> DataFrame:
    rows = [  # usage 1, 2, 3 and one null (median 2); plan: pro x3, basic x2, one null
        ("a1", D, "1", 1.0, 1, Decimal("10.00"), True, "pro", D, 1),
        ("a2", D, "1", 2.0, 2, Decimal("20.00"), False, "pro", D, 0),
        ("a3", D, "1", 3.0, 3, Decimal("30.00"), False, "basic", D, 0),
        ("a4", D, "1", None, 1, Decimal("15.00"), True, "pro", D, 1),
        ("a5", D, "1", 1.5, 2, Decimal("12.00"), False, "basic", D, 1),
        ("a6", D, "1", 2.5, 4, Decimal("40.00"), False, None, D, 0),
    ]
    return spark.createDataFrame(rows, SCHEMA).withColumn(P.WEIGHT_COL, F.lit(1.0))


def test_logistic_regression_sees_signed_log1p_values(spark: SparkSession) -> None:
    from pyspark.ml.feature import SQLTransformer

    df = spark.createDataFrame([(-3.0,), (0.0,), (3.0,), (None,)], "x double")
    cols = P.FeatureColumns(["x"], [], ["x"], {"x": 2})
    lr = SQLTransformer(statement=P.prepare_statement(cols, log_scale=True)).transform(df)
    # ln(1 + 3) = ln 4 with the sign kept; the missing flag and the cyclic position use the raw value
    got = [(r["dbl__x"], r["missing__x"], r["dbl__x_mod_2"]) for r in lr.orderBy("x").collect()]
    assert got == [(None, 1.0, None), (pytest.approx(-math.log(4)), 0.0, 1.0), (0.0, 0.0, 0.0),
                   (pytest.approx(math.log(4)), 0.0, 1.0)]
    gbt = SQLTransformer(statement=P.prepare_statement(cols)).transform(df)
    assert sorted(r["dbl__x"] for r in gbt.where("x is not null").collect()) == [-3.0, 0.0, 3.0]


def test_feature_columns_from_schema(train_df: DataFrame) -> None:
    cols = P.feature_columns(train_df.schema)
    assert cols.numeric == ["usage", "seats", "mrr", "trial"]  # label, weight and keys are not features
    assert cols.categorical == ["plan"]  # dates are not features
    assert P.feature_columns(train_df.schema, exclude=["mrr"]).numeric == ["usage", "seats", "trial"]
    assert P.feature_schema(train_df.schema, cols) == {
        "usage": "double", "seats": "int", "mrr": "decimal(18,2)", "trial": "boolean", "plan": "string"}


def _fit(train_df: DataFrame, model_type: str, params: dict) -> tuple[PipelineModel, P.FeatureColumns]:
    cols = P.FeatureColumns(["usage", "seats"], ["plan"], ["usage"])
    pipe, _ = P.build_pipeline(cols, model_type, params, seed=3)
    return P.with_calibration(pipe.fit(train_df), P.PlattCalibration(2.0, 0.0)), cols


def test_gbt_pipeline_imputes_encodes_and_handles_unseen_categories(spark: SparkSession, train_df: DataFrame,
                                                                    tmp_path) -> None:
    model, cols = _fit(train_df, "gbt", {"maxIter": 3, "maxDepth": 2, "minInstancesPerNode": 1})
    new = spark.createDataFrame(
        [("b1", D, "1", None, 2, Decimal("1.00"), None, "enterprise", D, None),  # unseen plan, null usage
         ("b2", D, "1", float("nan"), None, None, None, None, D, None),
         ("b3", D, "1", 3.0, 3, Decimal("1.00"), True, "basic", D, None)], SCHEMA)
    out = P.predict(model, new)
    assert out.columns == [*new.columns, "churn_probability", "churn_probability_raw", "features"]
    # vector: usage (null/NaN -> median 2.0), seats (null -> median 2), usage-missing flag,
    # plan one-hot over [pro, basic, __unknown] (frequency order; unseen and null share the last slot)
    got = {r["account_id"]: r["features"].toArray().tolist() for r in out.select("account_id", "features").collect()}
    assert got == {"b1": [2.0, 2.0, 1.0, 0.0, 0.0, 1.0], "b2": [2.0, 2.0, 1.0, 0.0, 0.0, 1.0],
                   "b3": [3.0, 3.0, 0.0, 0.0, 1.0, 0.0]}
    assert P.vector_feature_names(model, new, cols) == [
        "usage", "seats", "usage is missing", "plan=pro", "plan=basic", "plan=__unknown"]
    # churn_probability is the Platt mapping (slope 2) of the raw probability: p^2 / (p^2 + (1-p)^2)
    for r in out.collect():
        p = r["churn_probability_raw"]
        assert 0 < p < 1 and r["churn_probability"] == pytest.approx(p * p / (p * p + (1 - p) ** 2), abs=1e-9)


def test_cyclic_position_is_an_imputed_input_of_its_own(spark: SparkSession, train_df: DataFrame) -> None:
    # seats mod 3 in training: 1, 2, 0, 1, 2, 1 -> median 1; the seats slot keeps the raw value
    cols = P.FeatureColumns(["usage", "seats"], [], [], cyclic={"seats": 3})
    assert cols.imputed == ["usage", "seats", "seats_mod_3"]
    pipe, _ = P.build_pipeline(cols, "gbt", {"maxIter": 2, "maxDepth": 2, "minInstancesPerNode": 1}, seed=3)
    model = pipe.fit(train_df)
    new = spark.createDataFrame(
        [("b1", D, "1", 1.0, 7, None, None, None, D, None),  # 7 mod 3 = 1
         ("b2", D, "1", 1.0, -1, None, None, None, D, None),  # pmod: -1 mod 3 = 2, never negative
         ("b3", D, "1", 1.0, None, None, None, None, D, None)], SCHEMA)  # null -> medians (seats 2, mod 1)
    got = {r["account_id"]: r["features"].toArray().tolist()
           for r in P.predict(model, new).select("account_id", "features").collect()}
    assert got == {"b1": [1.0, 7.0, 1.0], "b2": [1.0, -1.0, 2.0], "b3": [1.0, 2.0, 1.0]}
    assert P.vector_feature_names(model, new, cols) == ["usage", "seats", "seats_mod_3"]


@pytest.mark.parametrize("model_type,params", [("lr", {}), ("gbt", {"maxIter": 3, "maxDepth": 2})])
def test_save_load_gives_identical_predictions(spark: SparkSession, train_df: DataFrame, tmp_path,
                                               model_type: str, params: dict) -> None:
    model, _ = _fit(train_df, model_type, params)
    model.write().overwrite().save(str(tmp_path / "m"))
    loaded = PipelineModel.load(str(tmp_path / "m"))
    assert isinstance(loaded.stages[-1], P.PlattCalibration)
    assert P.calibration_of(loaded) == {"method": "platt", "slope": 2.0, "intercept": 0.0}
    before = P.predict(model, train_df).select("account_id", "churn_probability", "churn_probability_raw")
    after = P.predict(loaded, train_df).select("account_id", "churn_probability", "churn_probability_raw")
    assert_df_equality(before, after, ignore_row_order=True)
    assert before.where(F.col("churn_probability").isNull()).count() == 0


@pytest.mark.parametrize("model_type,params", [("lr", {}), ("gbt", {"maxIter": 3, "maxDepth": 2,
                                                                    "minInstancesPerNode": 1})])
def test_fit_pipeline_fits_the_model_pipeline_fit_does_and_frees_its_checkpoint(
        spark: SparkSession, train_df: DataFrame, model_type: str, params: dict) -> None:
    cols = P.FeatureColumns(["usage", "seats"], ["plan"], ["usage"])
    pipe, _ = P.build_pipeline(cols, model_type, params, seed=3)
    held = spark.sparkContext._jsc.getPersistentRDDs().size()
    lean, plain = P.fit_pipeline(pipe, train_df), pipe.fit(train_df)
    assert spark.sparkContext._jsc.getPersistentRDDs().size() == held  # the local checkpoint's blocks are gone
    assert [type(s).__name__ for s in lean.stages] == [type(s).__name__ for s in plain.stages]
    if model_type == "lr":
        # equal to rounding: the checkpointed rows are summed in another floating-point order (last bits differ)
        assert lean.stages[-1].coefficients.toArray().tolist() == pytest.approx(
            plain.stages[-1].coefficients.toArray().tolist(), rel=1e-9, abs=1e-12)
        assert lean.stages[-1].intercept == pytest.approx(plain.stages[-1].intercept, rel=1e-9, abs=1e-12)
        # the scaler, fitted on the checkpointed vectors, learnt the same means and deviations
        for stat in ("mean", "std"):
            assert getattr(lean.stages[-2], stat).toArray().tolist() == pytest.approx(
                getattr(plain.stages[-2], stat).toArray().tolist(), rel=1e-9, abs=1e-12)
    else:
        assert lean.stages[-1].toDebugString == plain.stages[-1].toDebugString  # the same trees, split for split
    # the learner saw the weights: doubling a1's weight moves the fit
    heavier = train_df.withColumn(P.WEIGHT_COL, F.when(F.col("account_id") == "a1", 2.0).otherwise(1.0))
    moved = P.fit_pipeline(pipe, heavier).stages[-1]
    assert (moved.coefficients.toArray().tolist() != plain.stages[-1].coefficients.toArray().tolist()
            if model_type == "lr" else moved.toDebugString != plain.stages[-1].toDebugString)


def test_lr_explanation_names_coefficients_of_standardised_features(train_df: DataFrame) -> None:
    model, cols = _fit(train_df, "lr", {})
    names = P.vector_feature_names(model, train_df, cols)
    expl = P.explanation(model, names)
    clf = P.classifier_model(model)
    assert expl["kind"] == "coefficients" and list(expl["values"]) == names
    assert list(expl["values"].values()) == clf.coefficients.toArray().tolist()
    assert expl["intercept"] == clf.intercept
    # the LR input is standardised: the non-null usages 1, 2, 3, 1.5, 2.5 plus the median 2 for a4
    usage = [r["features"][0] for r in P.predict(model, train_df).collect()]
    assert sum(usage) == pytest.approx(0.0, abs=1e-9)


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


def test_fit_isotonic_pools_adjacent_violators(spark: SparkSession) -> None:
    # raw 0.1: 1 churner of 4; raw 0.2: 0 of 2; raw 0.3: 3 of 4 -- 0.1 and 0.2 violate the order and pool
    # to 1 of 6; so the knots are 0.1 and 0.2 at 1/6, then 0.3 at 3/4.
    rows = [(0.1, y) for y in (1, 0, 0, 0)] + [(0.2, 0), (0.2, 0)] + [(0.3, y) for y in (1, 1, 1, 0)]
    df = spark.createDataFrame(rows, "churn_probability_raw double, label int")
    fitted = P.fit_isotonic(df).describe()
    assert fitted["boundaries"] == pytest.approx([0.1, 0.2, 0.3])
    assert fitted["predictions"] == pytest.approx([1 / 6, 1 / 6, 0.75])


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


def test_an_isotonic_model_saves_and_loads_with_its_knots(spark: SparkSession, train_df: DataFrame,
                                                          tmp_path) -> None:  # type: ignore[no-untyped-def]
    model, _ = _fit(train_df, "lr", {})
    iso = P.with_calibration(model, P.IsotonicCalibration([0.3, 0.6], [0.2, 0.4]))
    iso.write().overwrite().save(str(tmp_path / "m"))
    loaded = PipelineModel.load(str(tmp_path / "m"))
    assert isinstance(loaded.stages[-1], P.IsotonicCalibration)
    assert P.calibration_of(loaded)["boundaries"] == [0.3, 0.6]
    got = P.predict(loaded, train_df).select("churn_probability").collect()
    assert all(0.2 <= r[0] <= 0.4 for r in got)
