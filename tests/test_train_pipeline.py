from __future__ import annotations

import datetime as dt
import math
from decimal import Decimal

import pytest
from chispa import assert_df_equality
from pyspark.ml import PipelineModel
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from churn_spark.train import pipeline as P
from churn_spark.train.split import with_latest_snapshot_held_out

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


@pytest.mark.parametrize(("early_stopping", "trees"), [(True, 1), (False, 4)])
def test_early_stopping_keeps_the_trees_the_held_out_snapshot_gains_from(spark: SparkSession, early_stopping: bool,
                                                                         trees: int) -> None:
    # January: high usage churns; February (the latest snapshot, held out): low usage churns. The first tree
    # learns January's rule; every further tree pushes the same way and February's log loss only grows, so
    # boosting stops and keeps one tree. Without early stopping every row is learnt from: all maxIter trees.
    jan, feb = dt.date(2023, 1, 1), dt.date(2023, 2, 1)
    rows = [(f"{m}{i}", d, "1", float(u), 3, Decimal("10.00"), False, "pro", d, int(u >= 5) ^ int(d == feb))
            for m, d in (("j", jan), ("f", feb)) for i, u in enumerate(range(10))]
    df = spark.createDataFrame(rows, SCHEMA)
    cols = P.FeatureColumns(["usage"], [], [])
    pipe, _ = P.build_pipeline(cols, "gbt", {"maxIter": 4, "maxDepth": 1, "minInstancesPerNode": 1,
                                             "subsamplingRate": 1.0}, seed=3, weighted=False,
                               early_stopping=early_stopping)
    if early_stopping:
        df = with_latest_snapshot_held_out(df, [jan, feb], P.HELD_OUT_COL)
    model = P.fit_pipeline(pipe, df)
    assert P.classifier_model(model).getNumTrees == trees
