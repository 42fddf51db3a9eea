from __future__ import annotations

import json
import os

import pytest
from pyspark.ml import PipelineModel
from pyspark.ml.feature import SQLTransformer
from pyspark.sql import SparkSession

from churn_spark.config import Settings
from churn_spark.errors import NotAvailableError
from churn_spark.train import registry as R
from churn_spark.train.pipeline import PlattCalibration


@pytest.mark.parametrize("metric,new,current,tolerance,promote", [
    ("roc_auc", 0.80, 0.81, 0.0, False),   # worse
    ("roc_auc", 0.80, 0.81, 0.02, True),   # worse, but within the tolerance
    ("roc_auc", 0.81, 0.81, 0.0, True),    # equal is not worse
    ("roc_auc", 0.756902866022239, 0.756902866022241, 0.0, True),  # equal but for the order of a sum
    ("roc_auc", 0.7569, 0.7570, 0.0, False),
    ("log_loss", 0.2135599550295291, 0.213559955029529, 0.0, True),
    ("roc_auc", 0.85, 0.81, 0.0, True),
    ("pr_auc", 0.30, 0.35, 0.01, False),
    ("log_loss", 0.30, 0.29, 0.0, False),  # lower is better
    ("log_loss", 0.30, 0.29, 0.02, True),
    ("brier", 0.10, 0.12, 0.0, True),
    ("brier", 0.13, 0.12, 0.005, False),
])
def test_promote_rule(metric: str, new: float, current: float, tolerance: float, promote: bool) -> None:
    ok, reason = R.decide_promotion({metric: new}, {metric: current}, metric, tolerance)
    assert ok is promote
    assert reason.startswith(("not worse" if promote else "worse") + f": {metric} {new:.4f} vs current {current:.4f}")


def test_promote_without_a_comparable_current_model() -> None:
    assert R.decide_promotion({"roc_auc": 0.6}, None, "roc_auc", 0.0) == (True, "no current model")
    ok, reason = R.decide_promotion({"roc_auc": 0.6}, {"brier": 0.1}, "roc_auc", 0.0)
    assert ok and "has no roc_auc" in reason


def _tiny_model() -> PipelineModel:
    return PipelineModel(stages=[SQLTransformer(statement="SELECT *, x * 2 AS y FROM __THIS__"),
                                 PlattCalibration(slope=1.5, intercept=-0.5)])


def test_save_load_and_pointer(spark: SparkSession, settings: Settings) -> None:
    with pytest.raises(NotAvailableError, match="no current model"):
        R.load_model(spark, settings)
    v1 = "20240101T000000Z-lr-aaaaaa"
    root = R.save_version(spark, settings, v1, _tiny_model(), {"version": v1, "metrics": {"roc_auc": 0.7}},
                          {"report/report.html": b"<html></html>"})
    assert root == f"{settings.lakehouse and os.path.abspath(settings.lakehouse)}/models/{v1}"
    assert sorted(os.listdir(root)) == ["metadata.json", "pipeline_model", "report"]
    R.write_pointer(spark, settings, v1, "no current model", "roc_auc", 0.7)
    loaded = R.load_model(spark, settings)
    assert (loaded.version, loaded.metadata, loaded.path) == (v1, {"version": v1, "metrics": {"roc_auc": 0.7}}, root)
    assert loaded.model.stages[-1].getOrDefault("slope") == 1.5
    with open(os.path.join(os.path.dirname(root), "current")) as fh:
        pointer = json.load(fh)
    assert pointer["version"] == v1 and pointer["reason"] == "no current model" and pointer["value"] == 0.7
    assert R.load_model(spark, settings, v1).version == v1


def test_incomplete_version_is_never_loaded(spark: SparkSession, settings: Settings) -> None:
    v = "20240101T000000Z-gbt-bbbbbb"
    _tiny_model().write().save(f"{R.version_path(settings, v)}/{R.PIPELINE_DIR}")  # no metadata.json
    with pytest.raises(NotAvailableError, match=f"model version {v} not found"):
        R.load_model(spark, settings, v)


def test_versions_sort_by_time() -> None:
    import datetime as dt

    a = R.new_version("gbt", dt.datetime(2024, 1, 2, 3, 4, 5, tzinfo=dt.UTC))
    b = R.new_version("lr", dt.datetime(2024, 1, 2, 3, 4, 6, tzinfo=dt.UTC))
    assert a.startswith("20240102T030405Z-gbt-") and a < b
