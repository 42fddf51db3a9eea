"""End to end: `run_train` on small hand-built labels/features Delta tables with a learnable signal.

60 accounts x 7 monthly snapshots (2023-01 .. 2023-07); July is censored (label null). Horizon 1
month, no grace: test = June, validation = May, train = January .. April; the registered model is
refitted on January .. May (every label window ends by June 1).
"""

from __future__ import annotations

import datetime as dt
import json
import math
import os
import random
import shutil
from typing import Any

import pytest
from modeldata import write_labelled_lake
from pyspark.sql import SparkSession
from pyspark.sql import functions as F

from churn_spark import io, schemas
from churn_spark.asof import add_months
from churn_spark.config import Settings, with_overrides
from churn_spark.lakehouse import Lakehouse
from churn_spark.train import metrics as M
from churn_spark.train import registry as R
from churn_spark.train.job import run_train
from churn_spark.train.pipeline import predict

pytestmark = pytest.mark.slow  # end to end: three training runs with search, report and registry

SNAPSHOTS = [add_months(dt.date(2023, 1, 1), i) for i in range(7)]
OVERRIDES = {"churn.horizon_months": 1, "churn.grace_days": 0, "model.type": "lr",
             "model.validation_snapshots": 1, "model.test_snapshots": 1,
             "model.param_grid": {"regParam": [0.01, 1.0]}}


def _rows() -> tuple[list[tuple], list[tuple], list[tuple]]:
    rnd = random.Random(11)
    labels, features, truth = [], [], []
    for i in range(60):
        plan = "basic" if i % 2 else "pro"
        for d in SNAPSHOTS:
            usage = rnd.random()
            p = 1 / (1 + math.exp(-(-1.0 - 5.0 * (usage - 0.5) + 2.0 * (plan == "basic"))))
            label = None if d == SNAPSHOTS[-1] else int(rnd.random() < p)
            labels.append((f"a{i:02d}", d, label, None, 30 * (i + 1)))
            features.append((f"a{i:02d}", d, "1", None if rnd.random() < 0.05 else usage, rnd.randint(0, 3),
                             plan if d != SNAPSHOTS[-2] or i != 0 else "enterprise"))  # one unseen plan in test
            truth.append((f"a{i:02d}", d, p))
    return labels, features, truth


@pytest.fixture(scope="module")
def lake(spark: SparkSession, tmp_path_factory) -> str:
    root = str(tmp_path_factory.mktemp("train_lake") / "lakehouse")
    labels, features, truth = _rows()
    # tests/test_train_label_definition.py covers labels that record their definition
    lh = write_labelled_lake(spark, root, labels, features, "usage double, tickets int, plan string")
    io.overwrite_table(spark.createDataFrame(truth, schemas.CHURN_TRUTH), lh.raw_churn_truth)
    return root


@pytest.fixture(scope="module")
def runs(spark: SparkSession, lake: str, tmp_path_factory) -> dict[str, Any]:
    """Three runs on one lakehouse: A, then B identical to A, then C, a deliberately weak model."""
    root = str(tmp_path_factory.mktemp("train_runs") / "lakehouse")
    shutil.copytree(lake, root)
    s = with_overrides(Settings(lakehouse=root), OVERRIDES)  # run_train never builds a session
    a = run_train(spark, s)
    pointer_after_a = R.read_pointer(spark, s)
    b = run_train(spark, s)
    weak = with_overrides(s, {"model.type": "gbt", "model.param_grid": {},
                              "model.params": {"maxIter": 1, "maxDepth": 1}})
    c = run_train(spark, weak)
    return {"settings": s, "a": a, "b": b, "c": c, "pointer_after_a": pointer_after_a,
            "pointer": R.read_pointer(spark, s)}


def test_summary_has_headline_metrics_and_says_what_it_did(runs: dict[str, Any]) -> None:
    a = runs["a"]
    assert set(a["metrics"]) == {"roc_auc", "oracle_roc_auc", "pr_auc", "log_loss", "brier", "lift_at_10pct",
                                 "ece", "oracle_ece", "calibration_in_the_large"}
    assert a["promoted"] is True and a["promotion_reason"] == "no current model"
    assert a["snapshots"] == {"train": "2023-01-01..2023-04-01", "validation": "2023-05-01..2023-05-01",
                              "test": "2023-06-01..2023-06-01", "refit": "2023-01-01..2023-05-01"}
    assert a["rows"] == {"train": 240, "validation": 60, "test": 60, "refit": 300}
    assert a["lineage"] == {"labels": 0, "features": 0}
    assert a["report"].endswith(f"models/{a['model_version']}/report/report.html")
    assert 0.5 < a["metrics"]["roc_auc"] <= 1 and 0.5 < a["metrics"]["oracle_roc_auc"] <= 1
    json.dumps(a)  # the run summary must be JSON-serialisable


def test_metrics_are_those_of_the_registered_model_on_the_test_snapshot_only(
        spark: SparkSession, runs: dict[str, Any]) -> None:
    s, a = runs["settings"], runs["a"]
    reg = R.load_model(spark, s, a["model_version"])
    lh = Lakehouse.from_settings(s)
    labels = spark.read.format("delta").load(lh.churn_labels).where("label IS NOT NULL")
    feats = spark.read.format("delta").load(lh.churn_features)
    june = feats.where(F.col("as_of_date") == dt.date(2023, 6, 1)).join(
        labels.select("account_id", "as_of_date", "label"), ["account_id", "as_of_date"])
    scored = predict(reg.model, june)
    assert M.roc_auc(scored) == pytest.approx(a["metrics"]["roc_auc"], abs=1e-12)
    assert M.probability_errors(scored)["brier"] == pytest.approx(a["metrics"]["brier"], abs=1e-12)
    truth = spark.read.format("delta").load(lh.raw_churn_truth)
    oracle = M.oracle_metrics(scored, truth)
    for key in ("oracle_roc_auc", "oracle_ece"):  # the run summary's headline
        assert oracle[key] == pytest.approx(a["metrics"][key]), key


def test_metadata_records_config_features_lineage_and_split(spark: SparkSession, runs: dict[str, Any]) -> None:
    s, a = runs["settings"], runs["a"]
    reg = R.load_model(spark, s, a["model_version"])
    md = reg.metadata
    assert md["version"] == reg.version == a["model_version"] and md["model_type"] == "lr"
    assert md["feature_columns"] == {"numeric": ["usage", "tickets"], "categorical": ["plan"],
                                     "missing_indicators": ["usage"], "cyclic": {}}
    assert md["feature_schema"] == {"usage": "double", "tickets": "int", "plan": "string"}
    assert md["feature_names"] == ["usage", "tickets", "usage is missing", "plan=basic", "plan=pro", "plan=__unknown"]
    assert list(md["explanation"]["values"]) == md["feature_names"]
    assert md["feature_set_version"] == "1" and md["config"]["model"]["type"] == "lr"
    assert md["lineage"]["tables"]["labels"]["delta_version"] == 0
    assert md["lineage"]["split"]["train"]["dates"] == ["2023-01-01", "2023-02-01", "2023-03-01", "2023-04-01"]
    assert md["lineage"]["split"]["refit"]["dates"] == [*md["lineage"]["split"]["train"]["dates"], "2023-05-01"]
    assert md["lineage"]["split"]["refit"]["rows"] == 300
    assert md["lineage"]["code"]["package"] == "0.1.0"
    assert [t["params"] for t in md["search"]] == [{"regParam": 0.01}, {"regParam": 1.0}]
    best = max(md["search"], key=lambda t: t["mean_roc_auc"])["params"]["regParam"]
    assert md["params"]["regParam"] == best
    assert set(md["metrics"]) >= {"precision_at_5pct", "recall_at_20pct", "log_loss_raw", "roc_auc_raw"}
    assert [d["decile"] for d in md["calibration_by_decile"]] == list(range(1, 11))
    # Refit on: the calibrator learnt from the May predictions of the model fitted on January .. April.
    assert (md["calibration"]["method"], md["calibration"]["rows"]) == ("isotonic", 60)
    assert md["calibration"]["fitted_on"].startswith("predictions on 2023-05-01 of models fitted on the snapshots")


def _hand_distribution(values: list[Any], bins: int = 10) -> dict[str, Any]:
    """Edges and shares worked out in plain Python: the i/bins quantile is the smallest value with at least
    i/bins of the non-null values at or below it; a value's bin is how many edges are <= it; nulls apart."""
    known = sorted(v for v in values if v is not None)
    edges = sorted({float(known[-(-i * len(known) // bins) - 1]) for i in range(1, bins)})
    counts: dict[str, int] = {}
    for v in values:
        b = "null" if v is None else str(sum(e <= v for e in edges))
        counts[b] = counts.get(b, 0) + 1
    return {"type": "numeric", "edges": edges, "shares": {b: n / len(values) for b, n in counts.items()}}


def test_drift_reference_is_stored_with_the_model(spark: SparkSession, runs: dict[str, Any]) -> None:
    """metadata.json `drift_reference`: edges and shares of the train snapshots (January .. April), by hand
    from the input rows; the score's from the registered model's probabilities of those rows."""
    s, a = runs["settings"], runs["a"]
    reg = R.load_model(spark, s, a["model_version"])
    ref = reg.metadata["drift_reference"]
    april = dt.date(2023, 4, 1)
    train = [f for f in _rows()[1] if f[1] <= april]
    assert (ref["snapshots"], ref["rows"], ref["bins"]) == (
        ["2023-01-01", "2023-02-01", "2023-03-01", "2023-04-01"], 240, 10)
    assert ref["excluded_features"] == ["season_cos", "season_sin", "tenure_days"]  # by design, and the season
    assert set(ref["features"]) == {"usage", "tickets", "plan"}  # drift_top_features 10: all three
    assert ref["features"]["plan"] == {"type": "categorical", "shares": {"basic": 0.5, "pro": 0.5}}
    assert ref["features"]["usage"] == _hand_distribution([f[3] for f in train])
    assert ref["features"]["tickets"] == _hand_distribution([f[4] for f in train])
    rows = spark.read.format("delta").load(Lakehouse.from_settings(s).churn_features).where(
        F.col("as_of_date") <= april)
    probabilities = [r["churn_probability"] for r in predict(reg.model, rows).collect()]
    assert ref["score"] == _hand_distribution(probabilities)


def test_report_is_self_contained_html_with_plots(runs: dict[str, Any]) -> None:
    a = runs["a"]
    folder = os.path.dirname(a["report"])
    for png in ("roc.png", "pr.png", "gains.png", "calibration.png", "explanation.png", "score_distribution.png"):
        with open(os.path.join(folder, png), "rb") as fh:
            assert fh.read(8) == b"\x89PNG\r\n\x1a\n"
    with open(a["report"]) as fh:
        page = fh.read()
    assert page.count('src="data:image/png;base64,') == 6 and "<script" not in page and 'src="http' not in page
    assert f"{a['metrics']['roc_auc']:.4f}" in page and "2023-01-01" in page and "2023-06-01" in page


def test_same_data_config_seed_gives_same_metrics_and_equal_model_is_promoted(runs: dict[str, Any]) -> None:
    a, b = runs["a"], runs["b"]
    assert a["model_version"] != b["model_version"]
    # Equal to 1e-12, not to the bit: MLlib's LBFGS merges partial sums in task-completion order, so
    # the coefficients of two fits on the same rows can differ in the last bit.
    def flat(metrics: dict[str, Any]) -> dict[str, float]:
        intervals = {f"{k}_{end}": v[end] for k, v in metrics["intervals"].items() for end in ("low", "high")}
        return {**{k: v for k, v in metrics.items() if k != "intervals"}, **intervals}

    assert flat(b["metrics_detail"]) == pytest.approx(flat(a["metrics_detail"]), rel=1e-12, abs=1e-15)
    assert b["promoted"] is True and b["promotion_reason"].startswith("not worse: roc_auc")
    # The same model twice: the paired bootstrap of the difference is zero in every account resample.
    paired = b["paired_bootstrap"]
    assert (paired["low"], paired["high"], paired["p_new_not_worse"]) == pytest.approx((0.0, 0.0, 1.0), abs=1e-12)


def test_intervals_bracket_the_test_metrics(runs: dict[str, Any]) -> None:
    """200 account resamples of the 60 June rows: each 95 % interval holds the point estimate."""
    a = runs["a"]
    for key in ("roc_auc", "pr_auc", "lift_at_10pct"):
        interval = a["intervals"][key]
        assert interval["low"] < a["metrics_detail"][key] < interval["high"], key
        assert interval["replicates"] == 200
    # calibration's intervals come from the same replicates; in the large is a mean, so its interval holds the point
    # (ece's need not: an absolute error is biased upwards under resampling)
    assert a["intervals"]["ece"]["replicates"] == 200 and a["intervals"]["ece"]["low"] >= 0
    interval = a["intervals"]["calibration_in_the_large"]
    assert interval["low"] < a["metrics_detail"]["calibration_in_the_large"] < interval["high"]


def test_worse_model_is_not_promoted_and_current_stays(runs: dict[str, Any]) -> None:
    b, c = runs["b"], runs["c"]
    assert runs["pointer_after_a"]["version"] == runs["a"]["model_version"]
    assert c["metrics"]["roc_auc"] < b["metrics"]["roc_auc"]
    assert c["promoted"] is False and c["promotion_reason"].startswith("worse: roc_auc")
    paired = c["paired_bootstrap"]  # recorded beside the rule: new minus current on the same June rows
    assert paired["difference"] == pytest.approx(c["metrics"]["roc_auc"] - b["metrics"]["roc_auc"], abs=1e-9)
    assert paired["low"] <= paired["difference"] <= paired["high"] and paired["higher_is_better"] is True
    assert runs["pointer"]["version"] == b["model_version"] == c["current_version"]
    assert os.path.isfile(os.path.join(c["model_path"], "metadata.json"))  # registered all the same


def test_no_labels_is_one_clear_error(spark: SparkSession, settings: Settings) -> None:
    from churn_spark.errors import NotAvailableError

    with pytest.raises(NotAvailableError, match="gold.churn_labels not found"):
        run_train(spark, settings)


def test_registered_model_is_refitted_on_every_snapshot_before_the_test_gap(
        spark: SparkSession, runs: dict[str, Any]) -> None:
    """The statistics the registered pipeline learnt are those of January .. May, computed here in plain
    Python from the input rows (train-only January .. April would give other numbers)."""
    from pyspark.ml.feature import ImputerModel, StandardScalerModel

    s, a = runs["settings"], runs["a"]
    stages = R.load_model(spark, s, a["model_version"]).model.stages
    scaler = next(st for st in stages if isinstance(st, StandardScalerModel))
    imputer = next(st for st in stages if isinstance(st, ImputerModel))
    _, features, _ = _rows()

    def tickets_mean(last: dt.date) -> float:  # LR sees counts as log1p
        values = [math.log1p(f[4]) for f in features if f[1] <= last]
        return sum(values) / len(values)

    def usage_missing_share(last: dt.date) -> float:
        values = [f[3] for f in features if f[1] <= last]
        return sum(v is None for v in values) / len(values)

    # Slots: usage (imputed), tickets, "usage is missing", then the plan one-hots.
    mean = scaler.mean.toArray()
    may, april = dt.date(2023, 5, 1), dt.date(2023, 4, 1)
    assert mean[1] == pytest.approx(tickets_mean(may), abs=1e-12)
    assert mean[2] == pytest.approx(usage_missing_share(may), abs=1e-12)
    assert tickets_mean(april) != pytest.approx(tickets_mean(may), abs=1e-9)  # the check can tell them apart
    usage = sorted(math.log1p(f[3]) for f in features if f[1] <= may and f[3] is not None)
    median = imputer.surrogateDF.first()["dbl__usage"]
    # Spark's approximate median (relative error 0.001): within one rank of the lower middle value.
    middle = (len(usage) - 1) // 2
    assert usage[middle - 1] <= median <= usage[middle + 1]


@pytest.fixture()
def trained_once(spark: SparkSession, lake: str, tmp_path) -> tuple[Settings, str]:  # type: ignore[no-untyped-def]
    """A copy of the module's lakehouse with one model trained and promoted (no parameter search)."""
    root = str(tmp_path / "lakehouse")
    shutil.copytree(lake, root)
    s = with_overrides(Settings(lakehouse=root), {**OVERRIDES, "model.param_grid": {}})
    return s, run_train(spark, s)["model_version"]


def test_a_model_that_recorded_other_features_is_replaced_without_a_comparison(
        spark: SparkSession, trained_once: tuple[Settings, str]) -> None:
    s, first = trained_once
    lh = Lakehouse.from_settings(s)
    io.overwrite_table(spark.read.format("delta").load(lh.churn_features).drop("tickets"), lh.churn_features,
                       ["as_of_date"])  # the feature set lost a column the first model was trained on
    second = run_train(spark, s)
    assert second["promoted"] is True
    reason = f"current model {first} is incompatible (missing columns: tickets): no comparison"
    assert second["promotion_reason"] == reason
    assert R.read_pointer(spark, s)["version"] == second["model_version"]  # type: ignore[index]


def test_a_current_model_that_fails_to_load_blocks_promotion_and_stays_current(
        spark: SparkSession, trained_once: tuple[Settings, str]) -> None:
    from churn_spark.errors import PromotionError

    s, first = trained_once
    shutil.rmtree(os.path.join(R.version_path(s, first), R.PIPELINE_DIR))  # metadata intact, model files gone
    versions_before = set(os.listdir(R.models_root(s)))
    with pytest.raises(PromotionError, match=f"saved but not promoted: current model {first} could not be "
                                             "evaluated on the new test rows"):
        run_train(spark, s)
    assert R.read_pointer(spark, s)["version"] == first  # type: ignore[index]
    (new,) = set(os.listdir(R.models_root(s))) - versions_before
    with open(os.path.join(R.models_root(s), new, R.METADATA)) as f:
        saved = json.load(f)
    assert saved["promotion"]["promoted"] is False and "models/current unchanged" in saved["promotion"]["reason"]
