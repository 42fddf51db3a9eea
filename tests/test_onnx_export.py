"""ONNX export: the registered model, trained by the real train job, scores the same in onnxruntime as in Spark.

Lakehouse: 80 accounts x 7 monthly snapshots (2023-01 .. 2023-07, July censored), features `usage` (double,
about 10 % null), `spend` (double, some null), `tickets` (int), `tenure_days` (int: a cyclic input mod 365 by
default), `plan` (string, some null) and the snapshot's `season_cos`/`season_sin` (churn rises in winter). The
parity sample is June's stored rows plus hand-made rows with every numeric null, NaN and +-inf, a negative
tenure (pmod), huge counts, an unseen plan, a null plan and a row without a season.
GBT models get the seasonal shift (`seasonal_calibration: auto`); the isotonic one excludes the season from the
classifier's inputs, so the shift reads graph inputs the classifier does not.
"""

from __future__ import annotations

import datetime as dt
import json
import math
import os
import random
import shutil
from typing import Any

import numpy as np
import onnx
import pytest
from modeldata import write_labelled_lake
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from churn_spark.asof import add_months
from churn_spark.config import Settings, with_overrides
from churn_spark.errors import ConfigError, ContractError
from churn_spark.lakehouse import Lakehouse
from churn_spark.onnx.job import run_export
from churn_spark.onnx.runtime import OnnxChurnModel, contributions, top_three_positive
from churn_spark.onnx.schema import (
    SCALED_OUTPUT,
    Feature,
    FeatureRowError,
    FeatureSchema,
    LinearReasons,
    check_rows,
    to_inputs,
)
from churn_spark.score.reasons import REASONS, scores_with_reasons
from churn_spark.train import pipeline as P
from churn_spark.train import registry as R
from churn_spark.train.job import run_train

pytestmark = pytest.mark.slow  # trains models and exports them: not in make test-fast

SNAPSHOTS = [add_months(dt.date(2023, 1, 1), i) for i in range(7)]
FEATURES_DDL = ("usage double, spend double, tickets int, tenure_days int, plan string, seats int, "
                "season_cos double, season_sin double")
SEASON = ["season_cos", "season_sin"]
OVERRIDES = {"churn.horizon_months": 1, "churn.grace_days": 0, "model.validation_snapshots": 1,
             "model.test_snapshots": 1, "model.bootstrap_replicates": 0}
FAMILIES = {"lr": {"model.type": "lr", "model.params": {"regParam": 0.01}},
            "gbt": {"model.type": "gbt", "model.params": {"maxIter": 15, "maxDepth": 3, "minInstancesPerNode": 5}}}
TOLERANCE = 1e-5
DOUBLE, STRING = onnx.TensorProto.DOUBLE, onnx.TensorProto.STRING


def _rows() -> tuple[list[tuple], list[tuple]]:
    rnd = random.Random(24)
    labels, features = [], []
    for i in range(80):
        plan = [None, "basic", "pro", "team"][i % 4] if i % 9 else None
        for k, d in enumerate(SNAPSHOTS):
            usage = None if rnd.random() < 0.1 else rnd.random()
            spend = None if rnd.random() < 0.05 else round(rnd.uniform(0, 500), 2)
            tickets, tenure = rnd.randint(0, 6), 20 * i + 30 * k
            angle = 2 * math.pi * (d.timetuple().tm_yday - 1) / 365  # features/calendar.py (2023: 365 days)
            z = (-0.5 - 3.0 * ((usage if usage is not None else 0.5) - 0.5) + 0.4 * tickets - 1.5 * (plan == "pro")
                 + 0.8 * math.cos(angle))
            label = None if d == SNAPSHOTS[-1] else int(rnd.random() < 1 / (1 + math.exp(-z)))
            labels.append((f"a{i:02d}", d, label, None, tenure))
            features.append((f"a{i:02d}", d, "1", usage, spend, tickets, tenure, plan, 5,  # seats: constant
                             math.cos(angle), math.sin(angle)))
    return labels, features


# the hand-made parity rows: (account_id, usage, spend, tickets, tenure_days, plan, seats); `seats` is 5 in every
# training row (a standard deviation of 0: Spark scales it by 0), so other values here must not change anything.
# Each gets June's season, except x01's, which is null (a row without a season: not shifted).
EDGE_ROWS = [
    ("x01", None, None, None, None, None, None),                    # every input null, the season too
    ("x02", float("nan"), float("inf"), 3, 400, "enterprise", 7),   # NaN, +inf, unseen plan
    ("x03", 0.9, float("-inf"), 0, -20, "pro", 5),                  # -inf, negative tenure (pmod wraps)
    ("x04", 0.0, 0.0, 2_000_000_000, 3650, "basic", 0),             # huge count, tenure a multiple of 365
    ("x05", 1.0, 1e9, 1, 364, "", 40),                              # empty string: an unseen category
    ("x06", -5.0, -120.5, 5, 0, "team", 1),                         # negative values (signed log1p)
]


@pytest.fixture(scope="module")
def lake(spark: SparkSession, tmp_path_factory) -> str:
    root = str(tmp_path_factory.mktemp("onnx_lake") / "lakehouse")
    write_labelled_lake(spark, root, *_rows(), FEATURES_DDL)
    return root


def _trained(spark: SparkSession, lake: str, root: str, family: str, calibration: str,
             season_excluded: bool) -> Settings:
    shutil.copytree(lake, root)
    s = with_overrides(Settings(lakehouse=root), {**OVERRIDES, **FAMILIES[family], "model.calibration": calibration,
                                                  "model.exclude_features": SEASON if season_excluded else []})
    run_train(spark, s)
    return s


@pytest.fixture(scope="module", params=[("lr", "platt", False), ("gbt", "platt", False), ("lr", "isotonic", False),
                                        ("gbt", "isotonic", True)],
                ids=lambda p: "-".join(p[:2]) + ("-season-excluded" if p[2] else ""))
def exported(request: pytest.FixtureRequest, spark: SparkSession, lake: str,
             tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    family, calibration, season_excluded = request.param
    s = _trained(spark, lake, str(tmp_path_factory.mktemp(f"onnx_{family}_{calibration}") / "lakehouse"),
                 family, calibration, season_excluded)
    result = run_export(spark, s)
    return {"settings": s, "result": result, "family": family, "calibration": calibration,
            "season_excluded": season_excluded}


def _sample(spark: SparkSession, settings: Settings) -> DataFrame:
    stored = spark.read.format("delta").load(Lakehouse.from_settings(settings).churn_features)
    june = stored.where(F.col("as_of_date") == SNAPSHOTS[5])
    season = june.select(*SEASON).first()
    assert season is not None
    edges = spark.createDataFrame([(a, SNAPSHOTS[5], "1", *rest, *((None, None) if a == "x01" else season))
                                   for a, *rest in EDGE_ROWS], stored.schema)
    return june.unionByName(edges)


def _dicts(df: DataFrame) -> list[dict[str, Any]]:
    return [r.asDict() for r in df.orderBy("account_id").collect()]  # a test sample: 86 rows


def test_onnxruntime_probabilities_equal_sparks(spark: SparkSession, exported: dict[str, Any],
                                                record_property: Any) -> None:
    s, result = exported["settings"], exported["result"]
    registered = R.load_model(spark, s)
    assert result["model_version"] == registered.version and result["calibration"] == exported["calibration"]
    sample = _sample(spark, s)
    spark_rows = P.predict(registered.model, sample).orderBy("account_id").select(
        "account_id", P.OUTPUT_COL, P.RAW_OUTPUT_COL).collect()
    onnx_model = OnnxChurnModel.load(result["path"])
    rows = _dicts(sample)
    got = onnx_model.predict(rows)
    raw = onnx_model.session.run([P.RAW_OUTPUT_COL], to_inputs(onnx_model.schema, rows))[0].reshape(-1)
    want = np.array([r[P.OUTPUT_COL] for r in spark_rows])
    want_raw = np.array([r[P.RAW_OUTPUT_COL] for r in spark_rows])
    assert [r["account_id"] for r in rows] == [r["account_id"] for r in spark_rows]
    assert len(rows) == 86 and np.isfinite(got).all()
    record_property("max_abs_diff", float(np.max(np.abs(got - want))))  # --junitxml keeps the measured parity
    assert np.max(np.abs(got - want)) <= TOLERANCE, list(zip([r["account_id"] for r in rows], got - want, strict=True))
    assert np.max(np.abs(raw - want_raw)) <= TOLERANCE
    assert np.ptp(want) > 0.05  # the sample spreads over the model's range: parity is not one constant
    graph = onnx.load(result["path"]).graph
    # the season is an input of every graph: the classifier's, or (excluded from it) only the seasonal shift's
    assert [(i.name, i.type.tensor_type.elem_type) for i in graph.input] == [
        ("usage", DOUBLE), ("spend", DOUBLE), ("tickets", DOUBLE), ("tenure_days", DOUBLE), ("seats", DOUBLE),
        ("season_cos", DOUBLE), ("season_sin", DOUBLE), ("plan", STRING)]
    columns = P.FeatureColumns(**registered.metadata["feature_columns"])
    assert (set(SEASON) <= set(columns.numeric)) is not exported["season_excluded"]
    shifted = P.calibration_stage(registered.model).season_terms()
    assert bool(shifted) is (exported["family"] == "gbt")  # `auto`: tree ensembles get the shift, LR does not
    if shifted:  # the shift moves the probabilities: without the season inputs parity could not hold
        unshifted = P.with_calibration(registered.model, P.calibration_stage(registered.model).with_season([]))
        plain = np.array([r[P.OUTPUT_COL] for r in P.predict(unshifted, sample).orderBy("account_id").collect()])
        assert np.max(np.abs(plain - want)) > 1e-3
    assert [o.name for o in graph.output] == (  # the calibrated probability last: the service may read it so
        [P.RAW_OUTPUT_COL, SCALED_OUTPUT, P.OUTPUT_COL] if exported["family"] == "lr"
        else [P.RAW_OUTPUT_COL, P.OUTPUT_COL])
    if exported["family"] == "gbt":  # a split sends one-hot slot == 1 left: onnxmltools' own GBT gets it wrong
        modes = {m for n in graph.node if n.op_type == "TreeEnsembleRegressor"
                 for a in n.attribute if a.name == "nodes_modes" for m in a.strings}
        assert modes == {b"LEAF", b"BRANCH_LEQ", b"BRANCH_GT"}


def test_onnx_reasons_equal_the_batch_reasons(spark: SparkSession, exported: dict[str, Any]) -> None:
    """LR: reason_1..3 from the graph's `features_scaled` and the schema's slots and coefficients are the score
    pipeline's (score/reasons.py) for every sample row, nulls and unseen categories included; GBT: none."""
    s, result = exported["settings"], exported["result"]
    onnx_model = OnnxChurnModel.load(result["path"])
    sample = _sample(spark, s)
    rows = _dicts(sample)
    probabilities, got = onnx_model.score(rows)
    assert np.array_equal(probabilities, onnx_model.predict(rows))
    if exported["family"] == "gbt":
        assert got is None and onnx_model.schema.reasons is None and result["reasons"] is False
        return
    model = R.load_model(spark, s).model
    batch = scores_with_reasons(sample, model, lambda df: P.predict(model, df), 5, ["account_id"])
    want = [[r[c] for c in REASONS if r[c] is not None]
            for r in batch.orderBy("account_id").select(*REASONS).collect()]  # 86 rows
    assert got is not None and len(got) == len(want) == 86
    assert got == want, [(r["account_id"], g, w) for r, g, w in zip(rows, got, want, strict=True) if g != w]
    assert {len(w) for w in want} >= {3} and len({tuple(w) for w in want}) > 5  # the sample exercises the ranking
    reasons = onnx_model.schema.reasons
    assert reasons is not None and set(reasons.slot_sources) == {"usage", "spend", "tickets", "tenure_days", "seats",
                                                                 "season_cos", "season_sin", "plan"}
    assert len(reasons.coefficients) == len(reasons.slot_sources)


def test_cli_exports_a_named_version(spark: SparkSession, exported: dict[str, Any]) -> None:
    from churn_spark.cli import main

    result = exported["result"]
    os.remove(result["path"])
    argv = ["--quiet", "--lakehouse", exported["settings"].lakehouse, "model", "export", "--format", "onnx",
            "--model-version", result["model_version"]]
    assert main(argv) == 0
    assert OnnxChurnModel.load(result["path"]).schema.model_version == result["model_version"]
    assert result["path"] == f"{R.version_path(exported['settings'], result['model_version'])}/model.onnx"


def test_schema_file_holds_inputs_vocabulary_version_and_calibration(spark: SparkSession,
                                                                     exported: dict[str, Any]) -> None:
    result = exported["result"]
    with open(result["schema_path"]) as fh:
        schema = json.load(fh)
    meta = R.load_metadata(spark, exported["settings"], result["model_version"])
    assert schema["model_version"] == result["model_version"] and schema["model_type"] == exported["family"]
    assert [(f["name"], f["type"], f["kind"]) for f in schema["features"]] == [
        ("usage", "double", "numeric"), ("spend", "double", "numeric"), ("tickets", "int", "numeric"),
        ("tenure_days", "int", "numeric"), ("seats", "int", "numeric"), ("season_cos", "double", "numeric"),
        ("season_sin", "double", "numeric"), ("plan", "string", "categorical")]
    # a row must carry the season the shift reads, excluded from the classifier or not; scoring checks it too
    assert not set(SEASON) & set(schema["ignored_fields"])
    assert set(SEASON) <= set(meta["feature_schema"])
    # StringIndexer's order: `basic`, `pro`, `team` on 18 accounts each (the rest null), ties alphabetical
    assert schema["features"][-1]["vocabulary"] == ["basic", "pro", "team"]
    assert {k: meta["calibration"][k] for k in schema["calibration"]} == schema["calibration"]  # as trained
    assert schema["calibration"]["method"] == exported["calibration"]
    assert {"account_id", "as_of_date"} <= set(schema["ignored_fields"])


def _schema() -> FeatureSchema:
    return FeatureSchema("v1", "lr", {"method": "platt", "slope": 1.0, "intercept": 0.0},
                         [Feature("usage", "double", "numeric"), Feature("tickets", "int", "numeric"),
                          Feature("plan", "string", "categorical", ["basic", "pro"])],
                         null_category="\u0000null", ignored_fields=["account_id"])


def test_row_with_missing_field_is_rejected_with_its_name() -> None:
    with pytest.raises(FeatureRowError, match=r"missing fields: tickets$") as err:
        check_rows(_schema(), [{"usage": 0.5, "plan": "pro"}])
    assert err.value.fields == ["tickets"]


def test_row_with_wrongly_typed_fields_is_rejected_with_their_names() -> None:
    row = {"usage": "0.5", "tickets": 1.5, "plan": 3, "account_id": "a1"}
    with pytest.raises(FeatureRowError) as err:
        check_rows(_schema(), [row])
    assert err.value.fields == ["usage", "tickets", "plan"]
    assert str(err.value) == ("feature row: wrongly typed fields: usage (expected double, got str), "
                              "tickets (expected int, got float), plan (expected string, got int)")


def test_bool_is_not_a_number_and_unknown_fields_are_named() -> None:
    with pytest.raises(FeatureRowError) as err:
        check_rows(_schema(), [{"usage": 0.1, "tickets": 1, "plan": None}, {"usage": True, "tickets": 1,
                                                                             "plan": "pro", "colour": "red"}])
    assert err.value.fields == ["usage", "colour"] and str(err.value).startswith("feature row 1: ")


def test_valid_rows_become_onnxruntime_inputs_with_nulls_encoded() -> None:
    feed = to_inputs(_schema(), [{"usage": None, "tickets": 2, "plan": None, "account_id": "a1"},
                                 {"usage": 0.25, "tickets": None, "plan": "pro"}])
    assert set(feed) == {"usage", "tickets", "plan"}
    assert np.isnan(feed["usage"][0, 0]) and feed["usage"][1, 0] == 0.25 and feed["usage"].dtype == np.float64
    assert feed["tickets"][0, 0] == 2.0 and np.isnan(feed["tickets"][1, 0]) and feed["tickets"].shape == (2, 1)
    assert feed["plan"].tolist() == [["\u0000null"], ["pro"]]


def test_schema_round_trips_through_json() -> None:
    assert FeatureSchema.from_json(_schema().to_json()) == _schema()


def test_reasons_rank_positive_contributions_ties_by_name() -> None:
    """Hand-computed: slots (usage, usage, plan, plan, tickets, spend, seats), coefficients (1, 2, 0.5, -1, 3, 0, 4).
    Row 1: usage 1*0.5 + 2*0.25 = 1.0, plan 0.5*2 - 1*0 = 1.0, tickets 3*(-1) = -3, seats 4*0.25 = 1.0
    (spend has coefficient 0: no contribution): three ties at 1.0 -> by name. Row 2: usage 1*1 + 2*(-1) = -1,
    plan 0.5*0 - 1*(-0.5) = 0.5, tickets 0, seats 4*(-1) = -4: one positive. Row 3: nothing positive."""
    reasons = LinearReasons(["usage", "usage", "plan", "plan", "tickets", "spend", "seats"],
                            [1.0, 2.0, 0.5, -1.0, 3.0, 0.0, 4.0])
    scaled = np.array([[0.5, 0.25, 2.0, 0.0, -1.0, 9.0, 0.25],
                       [1.0, -1.0, 0.0, -0.5, 0.0, 9.0, -1.0],
                       [0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0]], dtype=np.float32)
    sources, effects = contributions(reasons, scaled)
    assert sources == ["usage", "plan", "tickets", "seats"]
    assert effects.tolist() == [[1.0, 1.0, -3.0, 1.0], [-1.0, 0.5, 0.0, -4.0], [0.0, 0.0, 0.0, 0.0]]
    assert [top_three_positive(sources, e) for e in effects] == [["plan", "seats", "usage"], ["plan"], []]
    assert top_three_positive(["a", "b", "c", "d"], [0.1, 0.4, 0.3, 0.2]) == ["b", "c", "d"]  # largest first
    with pytest.raises(ContractError, match="7 slot sources and 7 coefficients for a vector of shape"):
        contributions(reasons, scaled[:, :6])


def test_old_schema_format_reads_as_a_model_without_reasons_and_unknown_fails() -> None:
    data = json.loads(_schema().to_json())
    assert data["format"] == 2 and data["reasons"] is None
    old = {k: v for k, v in data.items() if k != "reasons"} | {"format": 1}
    assert FeatureSchema.from_json(json.dumps(old)).reasons is None
    with_reasons = FeatureSchema.from_json(json.dumps(data | {"reasons": {"slot_sources": ["usage"],
                                                                          "coefficients": [0.5]}}))
    assert with_reasons.reasons == LinearReasons(["usage"], [0.5])
    with pytest.raises(ContractError, match=r"^ONNX feature schema format 3, this code reads 1, 2$"):
        FeatureSchema.from_json(json.dumps(data | {"format": 3}))


def test_unknown_format_is_one_clear_error(spark: SparkSession, settings: Settings) -> None:
    with pytest.raises(ConfigError, match="--format 'pmml': supported formats are onnx"):
        run_export(spark, settings, fmt="pmml")


def test_tree_split_with_category_one_on_the_left_becomes_greater_than() -> None:
    """onnxmltools reads leftCategories [1.0] as `x <= 1` (always left); Spark sends x == 1 left only."""
    from pyspark.sql import Row

    from churn_spark.onnx.convert import split_mode

    assert split_mode(Row(featureIndex=3, leftCategoriesOrThreshold=[1.0], numCategories=2)) == ("BRANCH_GT", 3, 0.5)
    assert split_mode(Row(featureIndex=3, leftCategoriesOrThreshold=[0.0], numCategories=2)) == ("BRANCH_LEQ", 3, 0.5)
    assert split_mode(Row(featureIndex=1, leftCategoriesOrThreshold=[2.5], numCategories=-1)) == ("BRANCH_LEQ", 1, 2.5)
    with pytest.raises(ContractError, match="splits feature 0 on 3 categories"):
        split_mode(Row(featureIndex=0, leftCategoriesOrThreshold=[0.0, 2.0], numCategories=3))


def test_a_stage_the_export_does_not_know_is_one_clear_error() -> None:
    from pyspark.ml import PipelineModel
    from pyspark.ml.feature import Bucketizer, SQLTransformer

    from churn_spark.onnx.convert import split_stages

    columns = P.FeatureColumns(["usage"], [])
    other = Bucketizer(splits=[-math.inf, 0.5, math.inf], inputCol="usage", outputCol="b")
    model = PipelineModel([SQLTransformer(statement=P.prepare_statement(columns, log_scale=True)), other,
                           P.PlattCalibration()])
    with pytest.raises(ContractError, match="supports model.type lr and gbt; this model has stage.s. Bucketizer"):
        split_stages(model, columns, "lr")
    with pytest.raises(ContractError, match="cleaning statement differs"):  # gbt's statement has no log1p
        split_stages(model, columns, "gbt")


def test_validation_and_runtime_import_no_pyspark() -> None:
    """The REST service imports them in a process without a JVM or pyspark."""
    import subprocess
    import sys

    code = ("import sys, churn_spark.onnx.runtime, churn_spark.onnx.schema; "
            "print(sorted(m for m in sys.modules if m.split('.')[0] in ('pyspark', 'py4j')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"

