"""`model.type: auto` fits each candidate family on the expanding-window folds and keeps the better one.

200 accounts x 7 monthly snapshots (2023-01 .. 2023-07, July censored), two 0/1 features `a` and `b`
and churn = a XOR b (flipped for every tenth account): no linear model can rank that (a logistic
regression's AUC stays near 0.5) and a depth-2 tree ensemble ranks it almost perfectly, so `auto` must
keep GBT. Horizon 1 month, no grace: folds evaluate April and May (validation 2), test June.
"""

from __future__ import annotations

import datetime as dt
import shutil
from typing import Any

import pytest
from modeldata import write_labelled_lake, xor_rows
from pyspark.sql import SparkSession

from churn_spark.asof import add_months
from churn_spark.config import Settings, with_overrides
from churn_spark.errors import ConfigError
from churn_spark.train import registry as R
from churn_spark.train.job import run_train

pytestmark = pytest.mark.slow  # a training run end to end

SNAPSHOTS = [add_months(dt.date(2023, 1, 1), i) for i in range(7)]
SMALL_GBT = {"maxIter": 5, "maxDepth": 2, "minInstancesPerNode": 1}


@pytest.fixture(scope="module")
def result(spark: SparkSession, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    root = str(tmp_path_factory.mktemp("selection") / "lakehouse")
    write_labelled_lake(spark, root, *xor_rows(SNAPSHOTS), "a int, b int")
    s = with_overrides(Settings(lakehouse=root), {
        "churn.horizon_months": 1, "churn.grace_days": 0, "model.validation_snapshots": 2,
        "model.test_snapshots": 1, "model.params_by_family": {"gbt": SMALL_GBT}, "model.bootstrap_replicates": 0,
        "model.cyclic_features": {}})
    out = run_train(spark, s)
    return {"summary": out, "metadata": R.load_metadata(spark, s, out["model_version"])}


def test_auto_compares_both_families_on_every_fold_and_keeps_gbt(result: dict[str, Any]) -> None:
    table = result["metadata"]["search"]
    assert [(t["family"], t["params"]) for t in table] == [("lr", {}), ("gbt", SMALL_GBT)]
    lr, gbt = (t["fold_roc_auc"] for t in table)
    assert len(lr) == len(gbt) == 2  # April and May
    assert all(v < 0.65 for v in lr) and all(v > 0.85 for v in gbt)
    assert result["metadata"]["selection"] == {"configured": "auto", "metric": "roc_auc", "chosen": "gbt",
                                               "candidates": ["lr", "gbt"]}
    assert result["summary"]["model_type"] == result["metadata"]["model_type"] == "gbt"
    assert {k: result["metadata"]["params"][k] for k in SMALL_GBT} == SMALL_GBT
    # The kept model's fold predictions are its calibration rows: April and May, 200 each.
    assert result["metadata"]["calibration"]["rows"] == 400
    assert result["summary"]["metrics"]["roc_auc"] > 0.85
    # early stopping is off by default: every GBT fit grows maxIter trees, and the record says so
    assert table[1]["fold_trees"] == [5, 5] and "fold_trees" not in table[0]
    assert result["metadata"]["trees"] == 5
    assert result["metadata"]["early_stopping"] == {"enabled": False, "held_out": None}


def test_early_stopping_holds_out_each_fits_latest_snapshot(spark: SparkSession,
                                                            tmp_path_factory: pytest.TempPathFactory) -> None:
    # XOR is learnt by a few depth-2 trees; the rest only chase the 10 % flipped labels, which the held-out
    # snapshot does not share: boosting stops well before the ceiling of 30
    root = str(tmp_path_factory.mktemp("early") / "lakehouse")
    write_labelled_lake(spark, root, *xor_rows(SNAPSHOTS), "a int, b int")
    s = with_overrides(Settings(lakehouse=root), {
        "churn.horizon_months": 1, "churn.grace_days": 0, "model.validation_snapshots": 2,
        "model.test_snapshots": 1, "model.type": "gbt", "model.params": {**SMALL_GBT, "maxIter": 30},
        "model.bootstrap_replicates": 0, "model.cyclic_features": {}, "model.early_stopping": True})
    out = run_train(spark, s)
    metadata = R.load_metadata(spark, s, out["model_version"])
    # the refit learns from January-April and watches May (its label window ends on June 1, the test snapshot)
    assert metadata["early_stopping"] == {"enabled": True, "held_out": "2023-05-01"}
    assert 1 <= metadata["trees"] < 30
    assert all(1 <= n < 30 for n in metadata["search"][0]["fold_trees"])
    assert out["metrics"]["roc_auc"] > 0.85


def test_auto_refuses_single_family_parameters(tmp_path) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(ConfigError, match="params and param_grid are MLlib parameters of one family"):
        with_overrides(Settings(lakehouse=str(tmp_path)), {"model.param_grid": {"maxDepth": [2, 3]}})
    shutil.rmtree(tmp_path, ignore_errors=True)
