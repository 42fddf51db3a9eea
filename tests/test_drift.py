"""PSI: the formula by hand, then bins cut on the reference and shares from Spark, by hand; the reference
stored with a model and PSI against it, by hand; features that grow by design never warn."""

from __future__ import annotations

import datetime as dt
import json
import math

import pytest
from chispa import assert_df_equality
from pyspark.sql import SparkSession
from pyspark.sql import functions as F

from churn_spark.config import Settings, with_overrides
from churn_spark.score.drift import numeric_bin, population_stability, psi, reference_distributions, stability_against
from churn_spark.score.job import drift_report
from churn_spark.score.reasons import source_importances, top_sources
from churn_spark.train import pipeline as P
from churn_spark.train.job import drift_reference

D0 = dt.date(2023, 6, 1)


def test_psi_formula_by_hand() -> None:
    # (0.25-0.5)*ln(0.25/0.5) + (0.75-0.5)*ln(0.75/0.5)
    assert psi({"0": 0.5, "1": 0.5}, {"0": 0.25, "1": 0.75}) == pytest.approx(
        0.25 * math.log(2) + 0.25 * math.log(1.5))
    assert psi({"a": 0.3, "b": 0.7}, {"a": 0.3, "b": 0.7}) == 0.0
    # A bin missing on one side is floored at 1e-4, not infinite.
    assert psi({"a": 1.0}, {"a": 0.5, "b": 0.5}) == pytest.approx(
        (0.5 - 1.0) * math.log(0.5) + (0.5 - 1e-4) * math.log(0.5 / 1e-4))


def test_numeric_bin_counts_edges_passed_and_keeps_nulls(spark: SparkSession) -> None:
    df = spark.createDataFrame([(1.0,), (5.0,), (7.5,), (None,)], "x double")
    got = df.select("x", numeric_bin(F.col("x"), [5.0, 7.0]).alias("bin"))
    expected = spark.createDataFrame([(1.0, "0"), (5.0, "1"), (7.5, "2"), (None, "null")], "x double, bin string")
    assert_df_equality(got, expected, ignore_row_order=True, ignore_nullable=True)


def test_a_boolean_feature_bins_as_zero_and_one(spark: SparkSession) -> None:
    """Booleans are numeric features (train/pipeline.py); Spark refuses `boolean >= double`, so the bin casts."""
    df = spark.createDataFrame([(False,), (True,), (None,)], "flag boolean")
    got = df.select("flag", numeric_bin(F.col("flag"), [0.5]).alias("bin"))
    expected = spark.createDataFrame([(False, "0"), (True, "1"), (None, "null")], "flag boolean, bin string")
    assert_df_equality(got, expected, ignore_row_order=True, ignore_nullable=True)


def test_population_stability_by_hand(spark: SparkSession) -> None:
    # Reference x = 1..10: the approximate median is 5, so with 2 bins the edge is 5 -> shares 0.4 / 0.6.
    reference = spark.createDataFrame([(float(i), "de" if i <= 5 else "fr") for i in range(1, 11)],
                                      "x double, country string")
    # Current: 1, 2, 3 (bin 0), 9 (bin 1), one null -> shares 0.6 / 0.2 / 0.2; countries de, de, es, es, null.
    current = spark.createDataFrame([(1.0, "de"), (2.0, "de"), (3.0, "es"), (9.0, "es"), (None, None)],
                                    "x double, country string")
    got = population_stability(reference, current, ["x"], ["country"], bins=2)
    floor = 1e-4
    x = (0.6 - 0.4) * math.log(0.6 / 0.4) + (0.2 - 0.6) * math.log(0.2 / 0.6) + (0.2 - floor) * math.log(0.2 / floor)
    country = ((0.4 - 0.5) * math.log(0.4 / 0.5) + (floor - 0.5) * math.log(floor / 0.5)
               + (0.4 - floor) * math.log(0.4 / floor) + (0.2 - floor) * math.log(0.2 / floor))
    assert got == pytest.approx({"x": x, "country": country})


# --- the reference stored with the model, and PSI against it --------------------------------------------


def test_reference_distributions_by_hand(spark: SparkSession) -> None:
    """Ten training rows reduced to what metadata.json stores: 4 bins -> edges at the 25/50/75% points."""
    rows = [(1.0, 1, "de"), (2.0, 1, "de"), (3.0, 1, "de"), (4.0, 1, "de"), (5.0, 1, "de"), (6.0, 1, "fr"),
            (7.0, 1, "fr"), (8.0, 1, "fr"), (None, 2, None), (None, 3, None)]
    reference = spark.createDataFrame(rows, "x double, seats int, country string")
    got = reference_distributions(reference, ["x", "seats"], ["country"], bins=4)
    # x: 8 non-null values 1..8; the p-quantile is the smallest value with at least p of them at or below
    # it: 25% -> 2, 50% -> 4, 75% -> 6. Bins: 1 -> "0"; 2, 3 -> "1"; 4, 5 -> "2"; 6, 7, 8 -> "3"; 2 nulls.
    # seats: 1 eight times, then 2 and 3: every quartile is 1, so one edge and one bin holding every row.
    # country: de 5, fr 3, null 2 of 10.
    assert got == {
        "x": {"type": "numeric", "edges": [2.0, 4.0, 6.0],
              "shares": {"0": 0.1, "1": 0.2, "2": 0.2, "3": 0.3, "null": 0.2}},
        "seats": {"type": "numeric", "edges": [1.0], "shares": {"1": 1.0}},
        "country": {"type": "categorical", "shares": {"de": 0.5, "fr": 0.3, "null": 0.2}},
    }
    assert json.loads(json.dumps(got)) == got  # stored as JSON in metadata.json, read back unchanged


# As a model's metadata.json stores it: score bins cut at 0.2 and 0.5, usage at 10, plan by category.
STORED = {
    "snapshots": ["2023-01-01"], "rows": 10, "bins": 10, "excluded_features": ["tenure_days"],
    "score": {"type": "numeric", "edges": [0.2, 0.5], "shares": {"0": 0.5, "1": 0.3, "2": 0.2}},
    "features": {"usage": {"type": "numeric", "edges": [10.0], "shares": {"0": 0.5, "1": 0.5}},
                 "plan": {"type": "categorical", "shares": {"basic": 0.6, "pro": 0.4}}},
}
SCORED = [("a1", 0.1, 5.0, "basic", 400.0), ("a2", 0.3, 20.0, "basic", 410.0), ("a3", 0.4, 30.0, "pro", 500.0),
          ("a4", 0.6, None, "pro", 610.0), ("a5", 0.7, 10.0, "basic", 700.0)]
SCORED_SCHEMA = "account_id string, churn_probability double, usage double, plan string, tenure_days double"


def test_psi_of_a_scored_population_against_a_stored_reference_by_hand(spark: SparkSession,
                                                                        settings: Settings) -> None:
    scored = spark.createDataFrame(SCORED, SCORED_SCHEMA)
    # score: 0.1 -> "0"; 0.3, 0.4 -> "1"; 0.6, 0.7 -> "2": shares 0.2 / 0.4 / 0.4 against 0.5 / 0.3 / 0.2
    #   (0.2-0.5)*ln(0.4) + (0.4-0.3)*ln(4/3) + (0.4-0.2)*ln(2)
    #   = -0.3*(-0.916291) + 0.1*0.287682 + 0.2*0.693147 = 0.274887 + 0.028768 + 0.138629 = 0.442285
    # usage: 5 -> "0"; 20, 30, 10 (10 is at the edge: counted above it) -> "1"; a4 -> "null", a bin the
    #   reference does not have (share floored at 1e-4): 0.2 / 0.6 / 0.2 against 0.5 / 0.5 / 0
    #   (0.2-0.5)*ln(0.4) + (0.6-0.5)*ln(1.2) + (0.2-0.0001)*ln(0.2/0.0001)
    #   = 0.274887 + 0.1*0.182322 + 0.1999*7.600902 = 0.274887 + 0.018232 + 1.519420 = 1.812540
    # plan: basic 3/5, pro 2/5: as in training, 0.
    assert stability_against(STORED["features"], scored) == pytest.approx(
        {"usage": 1.812540, "plan": 0.0}, abs=1e-6)
    drift = drift_report(STORED, scored, scored, "v-1", settings)
    assert drift == {"status": "ok", "threshold": 0.2, "score_psi": 0.4423,
                     "feature_psi": {"usage": 1.8125, "plan": 0.0}, "above_threshold": ["churn_probability", "usage"],
                     "reference": {"model_version": "v-1", "snapshots": ["2023-01-01"], "rows": 10},
                     "excluded_features": ["season_cos", "season_sin", "tenure_days"]}


def test_a_feature_that_grows_by_design_shifted_by_months_never_warns(spark: SparkSession,
                                                                      settings: Settings) -> None:
    """tenure_days is flagged `grows_by_design` in the catalogue: even in a reference that holds it (stored
    by an older model), scoring skips it. Six months later every tenure is 182 days longer: outside every
    reference bin, a PSI near 9 -- and no warning. An operator's `scoring.drift_exclude_features` adds to it."""
    stored = {**STORED, "features": {
        "tenure_days": {"type": "numeric", "edges": [200.0, 400.0], "shares": {"0": 0.3, "1": 0.4, "2": 0.3}},
        **STORED["features"]}}
    later = spark.createDataFrame(SCORED, SCORED_SCHEMA).withColumn("tenure_days", F.col("tenure_days") + 182)
    assert stability_against({"tenure_days": stored["features"]["tenure_days"]}, later)["tenure_days"] > 5
    drift = drift_report(stored, later, later, "v-1", settings)
    assert "tenure_days" not in drift["feature_psi"] and "tenure_days" not in drift["above_threshold"]
    assert drift["above_threshold"] == ["churn_probability", "usage"]
    assert drift["excluded_features"] == ["season_cos", "season_sin", "tenure_days"]
    operator = with_overrides(settings, {"scoring.drift_exclude_features": ["usage"]})
    quiet = drift_report(stored, later, later, "v-1", operator)
    assert quiet["above_threshold"] == ["churn_probability"]
    assert quiet["excluded_features"] == ["season_cos", "season_sin", "tenure_days", "usage"]


def test_the_season_of_one_night_against_a_year_of_seasons_never_warns(spark: SparkSession,
                                                                        settings: Settings) -> None:
    """season_cos is one value per scoring night (every account is scored on the same D) against the spread
    of the training year: outside most reference bins by design. Flagged `calendar`, it is never checked."""
    stored = {**STORED, "features": {
        "season_cos": {"type": "numeric", "edges": [-0.5, 0.5], "shares": {"0": 0.3, "1": 0.4, "2": 0.3}},
        **STORED["features"]}}
    january = spark.createDataFrame(SCORED, SCORED_SCHEMA).withColumn("season_cos", F.lit(1.0))
    # every row in bin "2" (>= 0.5): 1.0 against 0.3 there, 0.0001 against 0.3 and 0.4 elsewhere
    assert stability_against({"season_cos": stored["features"]["season_cos"]}, january)["season_cos"] > 5
    drift = drift_report(stored, january, january, "v-1", settings)
    assert "season_cos" not in drift["feature_psi"] and "season_cos" not in drift["above_threshold"]
    assert drift["feature_psi"] == {"usage": 1.8125, "plan": 0.0}
    off = with_overrides(settings, {"features.season": False})
    assert drift_report(stored, january, january, "v-1", off)["feature_psi"]["season_cos"] > 5


def test_training_reference_leaves_out_features_that_grow_by_design(spark: SparkSession, settings: Settings) -> None:
    """The reference a model is registered with (train/job.py `drift_reference`): the short-tenure accounts
    churn, so tenure_days is the model's most important feature -- and is not in the reference."""
    rows = [(f"a{i:02d}", D0, "1", 30.0 * i, float(i % 3), int(i <= 6)) for i in range(1, 13)]
    train = spark.createDataFrame(rows, "account_id string, as_of_date date, feature_set_version string, "
                                        "tenure_days double, usage double, label int")
    columns = P.feature_columns(train.schema)
    pipeline, _ = P.build_pipeline(columns, "lr", {"regParam": 0.01}, seed=1, weighted=False)
    model = pipeline.fit(train)
    assert top_sources(source_importances(model, train.limit(0)), 1) == ["tenure_days"]
    ref = drift_reference(model, train.drop("label"), [D0], columns, settings)
    assert list(ref["features"]) == ["usage"]
    assert ref["excluded_features"] == ["season_cos", "season_sin", "tenure_days"]
    # usage is 1, 2, 0, 1, 2, 0, ...: four of each; deciles 0 (10%, 20%, 30%), 1 (40% .. 60%), 2 (70% .. 90%).
    assert ref["features"]["usage"] == {"type": "numeric", "edges": [0.0, 1.0, 2.0],
                                        "shares": {"1": 4 / 12, "2": 4 / 12, "3": 4 / 12}}
    assert (ref["snapshots"], ref["rows"], ref["bins"]) == (["2023-06-01"], 12, 10)
    assert sum(ref["score"]["shares"].values()) == pytest.approx(1.0)
