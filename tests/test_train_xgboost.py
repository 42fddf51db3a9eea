"""The optional `xgboost` family (xgboost.spark) inside the project's Pipeline, trained by the train job.

The data of test_train_selection.py: 200 accounts x 7 monthly snapshots (2023-01 .. 2023-07, July
censored), two 0/1 features `a` and `b`, churn = a XOR b, flipped for every tenth account. A logistic
regression cannot rank XOR (fold AUC near 0.5); trees of depth 2 can. A score of a XOR b alone reaches
0.9 on each month (100 positives, 90 with XOR 1; 100 negatives, 90 with XOR 0: 0.9 * 0.9 + 0.5 *
(0.9 * 0.1 + 0.1 * 0.9)); which XOR cell holds the flipped accounts alternates by month, so the pooled
training months say nothing more. So `auto` with candidates [lr, xgboost] must keep xgboost, with a test
AUC near 0.9 (> 0.85 leaves room for subsampling and the order inside the two cells of each XOR value).
Horizon 1 month, no grace: folds evaluate April and May (validation 2), test June; refit on, as by default.
"""

from __future__ import annotations

import datetime as dt
import importlib.util
from pathlib import Path
from typing import Any

import pytest
from modeldata import write_labelled_lake, xor_rows
from pyspark.sql import SparkSession
from pyspark.sql import functions as F

from churn_spark.asof import add_months
from churn_spark.config import ModelSettings, Settings, with_overrides
from churn_spark.errors import ConfigError
from churn_spark.lakehouse import Lakehouse
from churn_spark.schemas import KEYS
from churn_spark.score.reasons import REASONS, scores_with_reasons
from churn_spark.train import metrics as M
from churn_spark.train import pipeline as P
from churn_spark.train import registry as R
from churn_spark.train.job import run_train, score_rows

SNAPSHOTS = [add_months(dt.date(2023, 1, 1), i) for i in range(7)]
SMALL_XGB = {"n_estimators": 5, "max_depth": 2, "learning_rate": 0.3}
needs_xgboost = pytest.mark.skipif(importlib.util.find_spec("xgboost") is None,
                                   reason="xgboost not installed (pip install -e '.[xgboost]')")


def _settings(root: str, **model: Any) -> Settings:
    return with_overrides(Settings(lakehouse=root), {
        "churn.horizon_months": 1, "churn.grace_days": 0, "model.validation_snapshots": 2,
        "model.test_snapshots": 1, "model.bootstrap_replicates": 0, "model.cyclic_features": {},
        **{f"model.{k}": v for k, v in model.items()}})


@pytest.fixture(scope="module")
def trained(spark: SparkSession, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    root = str(tmp_path_factory.mktemp("xgboost") / "lakehouse")
    write_labelled_lake(spark, root, *xor_rows(SNAPSHOTS), "a int, b int")
    s = _settings(root, candidates=["lr", "xgboost"], params_by_family={"xgboost": SMALL_XGB})
    out = run_train(spark, s)
    return {"settings": s, "summary": out, "metadata": R.load_metadata(spark, s, out["model_version"])}


@pytest.mark.slow
@needs_xgboost
def test_auto_compares_lr_and_xgboost_and_keeps_xgboost(trained: dict[str, Any]) -> None:
    meta = trained["metadata"]
    assert [(t["family"], t["params"]) for t in meta["search"]] == [("lr", {}), ("xgboost", SMALL_XGB)]
    lr, xgb = (t["fold_roc_auc"] for t in meta["search"])
    assert len(lr) == len(xgb) == 2  # April and May
    assert all(v < 0.65 for v in lr) and all(v > 0.85 for v in xgb)
    assert meta["selection"] == {"configured": "auto", "metric": "roc_auc", "chosen": "xgboost",
                                 "candidates": ["lr", "xgboost"]}
    assert trained["summary"]["model_type"] == meta["model_type"] == "xgboost"
    assert meta["params"] == {**P.DEFAULT_PARAMS["xgboost"], **SMALL_XGB}
    assert trained["summary"]["metrics"]["roc_auc"] > 0.85
    # calibrated on the cross-fitted fold predictions (April and May, 200 rows each), not the identity
    assert meta["calibration"]["method"] == "isotonic" and meta["calibration"]["rows"] == 400
    assert len(set(meta["calibration"]["predictions"])) > 1  # a fitted map, not one constant
    assert meta["calibration"]["season"] is None  # shifted by default as a tree model, but it has no season columns
    # importances by source feature, as for MLlib's GBT: only `a` and `b` exist, and XOR needs both
    assert meta["explanation"]["kind"] == "importances"
    values = meta["explanation"]["values"]
    assert set(values) == {"a", "b"} and all(v > 0 for v in values.values())
    assert sum(values.values()) == pytest.approx(1.0)


@pytest.mark.slow
@needs_xgboost
def test_registered_xgboost_model_loads_and_scores_as_before_saving(spark: SparkSession,
                                                                   trained: dict[str, Any]) -> None:
    s, meta = trained["settings"], trained["metadata"]
    registered = R.load_model(spark, s)  # through the `current` pointer: the first model is promoted
    assert registered.version == trained["summary"]["model_version"]
    stages = [type(st).__name__ for st in registered.model.stages]
    assert stages[-2:] == ["XGBoostClassificationModel", "IsotonicCalibration"]
    clf = P.classifier_model(registered.model)
    # unweighted by default (model.class_weights false); the seed survived saving
    assert not clf.isSet("weightCol") and clf.getOrDefault("random_state") == s.model.seed
    described = P.calibration_of(registered.model)
    assert described == {k: meta["calibration"][k] for k in described} and described["tie_break"] == P.TIE_BREAK
    # The metrics recorded before saving came from the in-memory model's probabilities on the test rows;
    # log loss and Brier are functions of every one of them, so the loaded model must reproduce them.
    lh = Lakehouse.from_settings(s)
    features = spark.read.format("delta").load(lh.churn_features).where(F.col("as_of_date") == SNAPSHOTS[-2])
    labels = spark.read.format("delta").load(lh.churn_labels).select(*KEYS, F.col("label").cast("int"))
    scored = score_rows(registered.model, features.join(labels, list(KEYS)))
    again = M.probability_errors(scored)
    assert again["log_loss"] == pytest.approx(meta["metrics"]["log_loss"], abs=1e-12)
    assert again["brier"] == pytest.approx(meta["metrics"]["brier"], abs=1e-12)
    assert M.roc_auc(scored) == pytest.approx(meta["metrics"]["roc_auc"], abs=1e-12)
    # the MLlib-style accessor agrees with the stage's own raw_prediction column
    row = registered.model.transform(features.limit(1)).select(P.FEATURES_COL, "raw_prediction").first()
    assert row is not None
    raw = clf.predictRaw(row[P.FEATURES_COL])
    assert raw.toArray().tolist() == pytest.approx(row["raw_prediction"].toArray().tolist(), abs=1e-6)


@pytest.mark.slow
@needs_xgboost
def test_occlusion_reasons_work_on_the_xgboost_stage(spark: SparkSession, trained: dict[str, Any]) -> None:
    """The scorer's tree path (importances, encoding split at the classifier, occluded vectors) as scoring
    calls it. Whatever the training baselines (medians of a and b), one of the two high-risk cells
    (0, 1), (1, 0) differs from them, and moving it to the baseline makes it a low-risk cell: some account
    must get a positive reason, and a reason can only be `a` or `b`."""
    model = R.load_model(spark, trained["settings"]).model
    lh = Lakehouse.from_settings(trained["settings"])
    features = spark.read.format("delta").load(lh.churn_features).where(F.col("as_of_date") == SNAPSHOTS[-1])
    out = scores_with_reasons(features, model, lambda df: P.predict(model, df), 2, KEYS)
    plain = P.predict(model, features).select(*KEYS, P.OUTPUT_COL)
    rows = out.join(plain.withColumnRenamed(P.OUTPUT_COL, "p"), list(KEYS)).collect()  # 200 rows
    assert len(rows) == 200
    assert all(r[P.OUTPUT_COL] == pytest.approx(r["p"], abs=1e-12) for r in rows)
    reasons = {r[c] for r in rows for c in REASONS}
    assert reasons - {None} and reasons <= {"a", "b", None}


def test_xgboost_is_optional_and_never_a_default_candidate() -> None:
    assert "xgboost" not in ModelSettings().candidates
    assert ModelSettings(type="xgboost", params={"n_estimators": 3}).family_params("xgboost") == {"n_estimators": 3}


def test_xgboost_without_the_package_fails_with_one_line_before_reading(spark: SparkSession, tmp_path: Path,
                                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "xgboost" else find_spec(name, *a))  # as if not installed
    for model in ({"type": "xgboost"}, {"candidates": ["lr", "xgboost"]}):
        with pytest.raises(ConfigError, match=r"^model family xgboost needs the xgboost package: pip install"):
            run_train(spark, _settings(str(tmp_path / "nothing-here"), **model))  # no tables: fails before reading
