"""Reason codes agree with the model: LR contributions by hand, tree occlusion by a plain per-feature loop."""

from __future__ import annotations

import datetime as dt
import math
import statistics

import pytest
from chispa import assert_df_equality
from pyspark.ml import PipelineModel
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from churn_spark.score import trees
from churn_spark.score.reasons import (
    REASONS,
    categorical_baselines,
    classifier_stage,
    lr_contributions,
    numeric_baselines,
    reason_coefficients,
    scores_with_reasons,
    slot_sources,
    source_importances,
    with_slots,
)
from churn_spark.thresholds import sql_string
from churn_spark.train.pipeline import FeatureColumns, PlattCalibration, build_pipeline, predict, with_calibration

SCHEMA = "account_id string, as_of_date date, feature_set_version string, x1 double, x2 double, c string"
D0, D1 = dt.date(2024, 1, 1), dt.date(2024, 2, 1)
COLUMNS = FeatureColumns(numeric=["x1", "x2"], categorical=["c"])
# c: 'a' x6, 'b' x5, 'z' x3 (distinct frequencies -> index order a, b, z); x1 raises risk, x2 lowers it.
# One-hot slots: a, b, z and the indexer's unseen-category slot (constant 0 in training, std 0 -> scaled to 0).
TRAIN = [
    (1.0, 9.0, "a", 0), (2.0, 7.0, "a", 0), (3.0, 8.0, "b", 0), (4.0, 5.0, "a", 0), (5.0, 6.0, "z", 1),
    (6.0, 4.0, "b", 0), (7.0, 3.0, "a", 1), (8.0, 5.0, "z", 1), (9.0, 2.0, "b", 1), (10.0, 1.0, "a", 1),
    (2.5, 6.5, "a", 0), (8.5, 2.5, "b", 1), (3.5, 3.0, "z", 1), (7.5, 8.0, "a", 0), (5.5, 5.5, "b", 0),
]
SCORE = [("s1", 9.5, 1.5, "z"), ("s2", 1.5, 8.5, "a"), ("s3", 5.0, 2.0, "b"), ("s4", None, 9.0, "new")]


def _train_df(spark: SparkSession) -> DataFrame:
    rows = [(f"t{i}", None, "1", x1, x2, c, y) for i, (x1, x2, c, y) in enumerate(TRAIN)]
    df = spark.createDataFrame(rows, SCHEMA + ", label int")
    return df.withColumn("as_of_date", F.lit("2024-01-01").cast("date"))


def _score_df(spark: SparkSession) -> DataFrame:
    rows = [(a, None, "1", x1, x2, c) for a, x1, x2, c in SCORE]
    return spark.createDataFrame(rows, SCHEMA).withColumn("as_of_date", F.lit("2024-02-01").cast("date"))


def _fit(spark: SparkSession, model_type: str, params: dict[str, object]) -> PipelineModel:
    pipeline, _ = build_pipeline(COLUMNS, model_type, params, seed=3, weighted=False)
    return pipeline.fit(_train_df(spark))


@pytest.fixture(scope="module")
def lr_model(spark: SparkSession) -> PipelineModel:
    return _fit(spark, "lr", {"regParam": 0.05})


@pytest.fixture(scope="module")
def gbt_model(spark: SparkSession) -> PipelineModel:
    return _fit(spark, "gbt", {"maxIter": 8, "maxDepth": 2, "minInstancesPerNode": 1, "subsamplingRate": 1.0})


def _hand_contributions(model: PipelineModel) -> dict[str, dict[str, float]]:
    """coefficient * (value - training mean) / training std (sample std), summed per source, in plain Python;
    LR sees numeric values as ln(1 + v) (all values here are positive)."""
    beta = classifier_stage(model).coefficients.toArray()
    x1s, x2s = [math.log1p(r[0]) for r in TRAIN], [math.log1p(r[1]) for r in TRAIN]
    cs = [r[2] for r in TRAIN]
    x1_median = sorted(x1s)[len(x1s) // 2]  # the Imputer's median of 15 (log) values: the 8th
    slots = [("x1", lambda r: math.log1p(r[1]) if r[1] is not None else x1_median, x1s),
             ("x2", lambda r: math.log1p(r[2]), x2s)]
    for cat in ["a", "b", "z"]:
        slots.append(("c", lambda r, cat=cat: 1.0 if r[3] == cat else 0.0, [1.0 if c == cat else 0.0 for c in cs]))
    slots.append(("c", lambda r: 1.0 if r[3] not in ("a", "b", "z") else 0.0, [0.0] * len(cs)))
    out: dict[str, dict[str, float]] = {}
    for row in SCORE:
        per: dict[str, float] = {}
        for j, (source, value, train_values) in enumerate(slots):
            std = statistics.stdev(train_values)
            z = (value(row) - statistics.mean(train_values)) / std if std > 0 else 0.0
            per[source] = per.get(source, 0.0) + beta[j] * z
        out[row[0]] = per
    return out


def test_lr_slots_map_back_to_source_features(spark: SparkSession, lr_model: PipelineModel) -> None:
    assert slot_sources(lr_model, _score_df(spark).limit(0)) == ["x1", "x2", "c", "c", "c", "c"]


def test_lr_contributions_equal_coefficient_times_standardised_value(spark: SparkSession,
                                                                     lr_model: PipelineModel) -> None:
    scored = _score_df(spark)
    contributions = lr_contributions(lr_model, scored.limit(0))
    got = with_slots(predict(lr_model, scored)).selectExpr("account_id",
                                                           *[f"{c} AS {s}" for s, c in contributions.items()])
    hand = _hand_contributions(lr_model)
    for row in got.collect():  # four accounts
        assert {s: row[s] for s in ("x1", "x2", "c")} == pytest.approx(hand[row["account_id"]], abs=1e-9)


def test_lr_reasons_are_the_largest_positive_contributions(spark: SparkSession, lr_model: PipelineModel) -> None:
    scored = _score_df(spark)
    got = scores_with_reasons(scored, lr_model, lambda df: predict(lr_model, df), 10, ["account_id"])
    expected_rows = []
    for account, per in _hand_contributions(lr_model).items():
        positive = sorted((s for s, v in per.items() if v > 0), key=lambda s: -per[s])
        expected_rows.append((account, *(positive + [None, None, None])[:3]))
    expected = spark.createDataFrame(expected_rows, "account_id string, reason_1 string, reason_2 string, "
                                                    "reason_3 string")
    assert_df_equality(got.select("account_id", *REASONS), expected, ignore_row_order=True, ignore_nullable=True)
    # Not vacuous: at least one account has three reasons and one has fewer than three.
    assert {sum(r is not None for r in row[1:]) for row in expected_rows} >= {3} and any(
        row[3] is None for row in expected_rows)


def test_tree_baselines_are_the_training_median_and_mode(gbt_model: PipelineModel) -> None:
    assert numeric_baselines(gbt_model) == {"x1": statistics.median(r[0] for r in TRAIN),
                                            "x2": statistics.median(r[1] for r in TRAIN)}
    assert categorical_baselines(gbt_model) == {"c": "a"}


@pytest.fixture(scope="module")
def gbt_cyclic_model(spark: SparkSession) -> PipelineModel:
    """A GBT that also sees `x1 mod 4`, a position the pipeline derives from x1 (like tenure_days mod 365)."""
    columns = FeatureColumns(numeric=["x1", "x2"], categorical=["c"], cyclic={"x1": 4})
    pipeline, _ = build_pipeline(columns, "gbt", {"maxIter": 8, "maxDepth": 2, "minInstancesPerNode": 1,
                                                  "subsamplingRate": 1.0}, seed=3, weighted=False)
    return pipeline.fit(_train_df(spark))


def test_a_derived_cyclic_input_is_credited_to_its_column(spark: SparkSession,
                                                          gbt_cyclic_model: PipelineModel) -> None:
    assert slot_sources(gbt_cyclic_model, _score_df(spark).limit(0)) == ["x1", "x2", "x1", "c", "c", "c", "c"]


@pytest.fixture(scope="module")
def gbt_seasonal_model(gbt_model: PipelineModel) -> PipelineModel:
    """The GBT with a Platt calibration followed by a seasonal shift (`model.seasonal_calibration`): the
    occluded probabilities must go through both, reading each row's season."""
    return with_calibration(gbt_model, PlattCalibration(1.3, -0.2).with_season([0.7, -0.4, 0.1, 0.2]))


def _with_seasons(df: DataFrame) -> DataFrame:
    """A season per row (one per D in real data; distinct here so a row never reads another's)."""
    position = F.coalesce(F.col("x1"), F.lit(0.0))
    return df.withColumn("season_cos", F.cos(position)).withColumn("season_sin", F.sin(position))


@pytest.mark.parametrize(("model_name", "max_cases"), [("gbt_model", trees.MAX_CASES),
                                                       ("gbt_cyclic_model", trees.MAX_CASES),
                                                       ("gbt_seasonal_model", trees.MAX_CASES),
                                                       ("gbt_seasonal_model", 0)],
                         ids=["trees", "cyclic-trees", "seasonal-trees", "seasonal-rescored"])
def test_tree_reasons_equal_a_plain_occlusion_loop(spark: SparkSession, model_name: str, max_cases: int,
                                                   request: pytest.FixtureRequest,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    gbt_model: PipelineModel = request.getfixturevalue(model_name)
    monkeypatch.setattr(trees, "MAX_CASES", max_cases)  # 0: every GBT re-scores its occluded vectors
    scored = _score_df(spark)
    if model_name == "gbt_seasonal_model":
        scored = _with_seasons(scored)
    importances = source_importances(gbt_model, scored.limit(0))
    assert set(importances) <= {"x1", "x2", "c"} and sum(importances.values()) == pytest.approx(1.0)
    got = scores_with_reasons(scored, gbt_model, lambda df: predict(gbt_model, df), 10, ["account_id"])
    # The same thing the slow way: one prediction per occluded feature, compared in Python.
    def probs(df: DataFrame) -> dict[str, float]:
        return {r["account_id"]: r["churn_probability"] for r in predict(gbt_model, df).collect()}

    base = probs(scored)
    baselines = {"x1": statistics.median(r[0] for r in TRAIN), "x2": statistics.median(r[1] for r in TRAIN), "c": "a"}
    drops: dict[str, dict[str, float]] = {a: {} for a in base}
    for source in (s for s, v in importances.items() if v > 0):
        occluded = probs(scored.withColumn(source, F.lit(baselines[source])))
        for a in base:
            drops[a][source] = base[a] - occluded[a]
    expected_rows = []
    for a, per in drops.items():
        positive = sorted((s for s, v in per.items() if v > 0), key=lambda s: (-per[s], s))
        expected_rows.append((a, base[a], *(positive + [None, None, None])[:3]))
    expected = spark.createDataFrame(expected_rows, "account_id string, churn_probability double, "
                                                    "reason_1 string, reason_2 string, reason_3 string")
    assert_df_equality(got.select("account_id", "churn_probability", *REASONS), expected,
                       ignore_row_order=True, ignore_nullable=True)
    if model_name == "gbt_cyclic_model":
        return  # there the imputed x1 mod 4 (median of the positions) differs from the median's position
    # s4's x1 is null (imputed with the median): occluding it changes nothing, so it is never a reason.
    assert "x1" not in [got.where("account_id = 's4'").first()[r] for r in REASONS]


# The season (a calendar feature, the same for every account at D) drives these labels more than x1 does:
# season_cos -1 (July): no churner; +1 (January): the 4 accounts with x1 >= 6 churn. x1's median is 5.
SEASONAL = [(1.0, -1.0, 0), (2.0, -1.0, 0), (3.0, -1.0, 0), (4.0, -1.0, 0), (7.0, -1.0, 0), (8.0, -1.0, 0),
            (2.0, 1.0, 0), (3.0, 1.0, 0), (6.0, 1.0, 1), (7.0, 1.0, 1), (8.0, 1.0, 1), (9.0, 1.0, 1)]


@pytest.mark.parametrize("model_type, params", [
    ("lr", {"regParam": 0.05}),
    ("gbt", {"maxIter": 8, "maxDepth": 2, "minInstancesPerNode": 1, "subsamplingRate": 1.0})])
def test_the_season_is_never_a_reason(spark: SparkSession, model_type: str, params: dict[str, object]) -> None:
    """The season raises every January account's risk, but it is no account's reason: s1 (x1 = 9, the
    highest; at the median 5 it would not churn) has x1 as its only reason, s2 (x1 = 1, the lowest) none at
    all -- although the model leans on the season as much as on x1."""
    schema = "account_id string, as_of_date date, feature_set_version string, x1 double, season_cos double"
    rows = [(f"t{i}", D0, "1", x1, s, y) for i, (x1, s, y) in enumerate(SEASONAL)]
    train = spark.createDataFrame(rows, schema + ", label int")
    pipeline, _ = build_pipeline(FeatureColumns(numeric=["x1", "season_cos"], categorical=[]), model_type, params,
                                 seed=3, weighted=False)
    model = pipeline.fit(train)
    importances = source_importances(model, train.limit(0))
    assert importances["season_cos"] > 0 and importances["x1"] > 0
    if model_type == "lr":  # what the ONNX service's reasons get too (onnx/job.py `linear_reasons`)
        sources = slot_sources(model, train.limit(0))
        coefs = classifier_stage(model).coefficients.toArray()
        assert reason_coefficients(model, sources) == [0.0 if s == "season_cos" else float(c)
                                                       for s, c in zip(sources, coefs, strict=True)]
        assert "season_cos" in sources and coefs[sources.index("season_cos")] != 0.0
    january = spark.createDataFrame([("s1", D1, "1", 9.0, 1.0), ("s2", D1, "1", 1.0, 1.0)], schema)
    got = scores_with_reasons(january, model, lambda df: predict(model, df), 10, ["account_id"])
    want = spark.createDataFrame([("s1", "x1", None, None), ("s2", None, None, None)],
                                 "account_id string, reason_1 string, reason_2 string, reason_3 string")
    assert_df_equality(got.select("account_id", *REASONS), want, ignore_row_order=True, ignore_nullable=True)


def test_reason_names_are_sql_literals_that_read_back_exactly(spark: SparkSession) -> None:
    """Reasons name features inside SQL text (`with_top_three`): a name with quotes or backslashes must survive."""
    names = ["it's", "back\\slash", 'dbl"quote', "plain"]
    row = spark.sql("SELECT " + ", ".join(f"{sql_string(n)} AS c{i}" for i, n in enumerate(names))).first()
    assert row is not None and list(row) == names
