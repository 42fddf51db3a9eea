"""`run_score` end to end on a tiny lakehouse: every eligible account scored (also without events),
idempotent slices, the target list, and the checks that refuse a mismatched model before writing.

Seven eligible accounts at D = 2023-07-01 (a6, a7 have no events at all; a8's subscription ended
before D, so it is not eligible). The model is an LR pipeline built with the training code on the
features of D0 = 2023-06-01 and registered with the registry's own functions.
"""

from __future__ import annotations

import datetime as dt
import math
import shutil
from pathlib import Path
from typing import Any

import pytest
from chispa import assert_approx_df_equality, assert_df_equality
from conftest import TEST_SPARK
from featuredata import D, T, accounts, events, subs, write_inputs
from modeldata import register, train_on_stored
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from churn_spark import io, schemas
from churn_spark.config import Settings, with_overrides
from churn_spark.errors import ContractError
from churn_spark.features.job import build_labels_and_features
from churn_spark.lakehouse import Lakehouse
from churn_spark.score.job import run_score
from churn_spark.train import pipeline as P

pytestmark = pytest.mark.slow  # end to end: a lakehouse, two trained models, several scoring runs

D0, D1 = D(2023, 6, 1), D(2023, 7, 1)
OVERRIDES: dict[str, Any] = {
    "churn.lookback_months": 2, "churn.data_end": "2023-08-01",
    "features.windows_days": [7, 28], "features.trend_windows_days": [7], "features.per_seat_windows_days": [7],
    "features.change_windows_days": [28], "features.event_types": ["login"],
    "inputs.support_tickets.enabled": False,
    "scoring.targeting.max_contacts": 3, "scoring.targeting.cost_per_contact": 10.0,
    "scoring.targeting.success_rate": 0.5, "scoring.targeting.value_months": 12.0,
    "scoring.drift_top_features": 3,
    "scoring.max_feed_lag_days": 11,  # the tiny feed's last event is 2023-06-20, 11 days before D1
}
MRR = {"a1": 100, "a2": 200, "a3": 50, "a4": 300, "a5": 80, "a6": 120, "a7": 10, "a8": 90}
LOGINS = {"a1": 20, "a2": 12, "a3": 8, "a4": 4, "a5": 1}  # logins per month; a6, a7: none
# Churners are the three quietest accounts, so the median account (a4) is a non-churner: occluding a
# churner's activity with the training median lowers its risk, and the tree model has reasons to give.
TRAIN_LABELS = {"a1": 0, "a2": 0, "a3": 0, "a4": 0, "a5": 1, "a6": 1, "a7": 1}


def _events(spark: SparkSession) -> DataFrame:
    rows = []
    for acc, per_month in LOGINS.items():
        for month in (4, 5, 6):
            rows += [(f"{acc}-{month}-{i}", acc, "login", T(2023, month, 1 + i, 10)) for i in range(per_month)]
    return events(spark, rows)


@pytest.fixture(scope="module")
def lake(spark: SparkSession, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    s = with_overrides(Settings(lakehouse=str(tmp_path_factory.mktemp("score") / "lakehouse"), spark=TEST_SPARK),
                       OVERRIDES)
    ids = sorted(MRR)
    write_inputs(
        s,
        accounts(spark, [(a, T(2022, 12, 1), "DE" if i % 2 else "FR", "web", "retail") for i, a in enumerate(ids)],
                 ("country", "channel", "industry")),
        subs(spark, [(f"s-{a}", a, D(2023, 1, 1), D(2023, 5, 1) if a == "a8" else None, MRR[a]) for a in ids]),
        _events(spark), None)
    # The training snapshot D0 goes to gold.churn_features, whose Delta version is the model's lineage.
    lh = Lakehouse.from_settings(s)
    _, train_features = build_labels_and_features(spark, s, [D0])
    io.write_slice(train_features, lh.churn_features, io.slice_predicate(equals={"as_of_date": D0}), ["as_of_date"])
    model, meta = train_on_stored(spark, s, TRAIN_LABELS, [D0])
    register(spark, s, "v-lr", model, meta, current=True)
    gbt_model, gbt_meta = train_on_stored(spark, s, TRAIN_LABELS, [D0], "gbt", {
        "maxIter": 5, "maxDepth": 2, "minInstancesPerNode": 1, "subsamplingRate": 1.0})
    register(spark, s, "v-gbt", gbt_model, gbt_meta)
    register(spark, s, "v-no-reference", model, {k: v for k, v in meta.items() if k != "drift_reference"})
    bad = dict(meta["feature_schema"])
    dropped = next(iter(bad))
    bad.pop(dropped)
    bad.update({"ghost_feature": "double", "mrr": "string"})
    register(spark, s, "v-bad-schema", model, {**meta, "feature_schema": bad})
    register(spark, s, "v-old-features", model, {**meta, "feature_set_version": "0"})
    return {"settings": s, "model": model, "gbt_model": gbt_model, "lake": lh, "dropped": dropped}


def _seed_other_slices(spark: SparkSession, lh: Lakehouse) -> None:
    """Rows that re-scoring D with v-lr must never touch: D with another model, and D0 with v-lr."""
    at = dt.datetime(2023, 1, 1)
    scores = spark.createDataFrame(
        [("a1", D1, "v-other", 0.5, 1, 1, None, None, None, at), ("a1", D0, "v-lr", 0.25, 1, 1, "x", None, None, at)],
        schemas.CHURN_SCORES)
    io.write_slice(scores, lh.churn_scores, "as_of_date IS NOT NULL", ["as_of_date"], schema=schemas.CHURN_SCORES)
    targets = spark.createDataFrame([("a1", D0, "v-lr", 0.25, 10.0, 5.0, 10.0, 1, None, None, None, at, "risk", None)],
                                    schemas.CHURN_TARGETS)
    io.write_slice(targets, lh.churn_targets, "as_of_date IS NOT NULL", ["as_of_date"], schema=schemas.CHURN_TARGETS)


@pytest.fixture(scope="module")
def scored(spark: SparkSession, lake: dict[str, Any]) -> dict[str, Any]:
    _seed_other_slices(spark, lake["lake"])
    first = run_score(spark, lake["settings"], D1)
    lh = lake["lake"]
    after_first = {t: spark.read.format("delta").load(p).drop("scored_at").collect()
                   for t, p in (("scores", lh.churn_scores), ("targets", lh.churn_targets))}
    second = run_score(spark, lake["settings"], D1, "v-lr")
    return {"first": first, "second": second, "after_first": after_first}


def _expected_probabilities(spark: SparkSession, lake: dict[str, Any]) -> dict[str, float]:
    _, features = build_labels_and_features(spark, lake["settings"], [D1])
    return {r["account_id"]: r["churn_probability"] for r in P.predict(lake["model"], features).collect()}


def _sources_of_slots(model: Any, encoded: DataFrame, categorical: list[str]) -> list[str]:
    """Source column of each slot of the assembled vector, read off Spark's ML attribute names by hand:
    `num__x` / `missing__x` -> x, one-hot `cat__c_<value>` -> c."""
    attrs = encoded.schema["assembled_features" if "assembled_features" in encoded.columns else "features"]
    slots = sorted((a for group in attrs.metadata["ml_attr"]["attrs"].values() for a in group), key=lambda a: a["idx"])
    names = [a["name"] for a in slots]
    return [next((c for c in categorical if n.startswith(f"cat__{c}_")), n.split("__", 1)[1]) for n in names]


def _top3(per: dict[str, float]) -> list[str | None]:
    positive = sorted((s for s, v in per.items() if v > 0), key=lambda s: (-per[s], s))
    return (positive + [None, None, None])[:3]


def _lr_reasons_by_hand(spark: SparkSession, lake: dict[str, Any]) -> dict[str, list[str | None]]:
    """coefficient x standardised value (the pipeline's own scaled vector), summed per source column."""
    from pyspark.ml.functions import vector_to_array

    _, features = build_labels_and_features(spark, lake["settings"], [D1])
    model = lake["model"]
    encoded = model.transform(features)
    categorical = [f.name for f in features.schema.fields if f.dataType.typeName() == "string"
                   and f.name not in ("account_id", "feature_set_version")]
    sources = _sources_of_slots(model, encoded, categorical)
    beta = next(st for st in model.stages if hasattr(st, "coefficients")).coefficients.toArray()
    out = {}
    for row in encoded.select("account_id", vector_to_array("features").alias("z")).collect():
        per: dict[str, float] = {}
        for source, b, z in zip(sources, beta, row["z"], strict=True):
            per[source] = per.get(source, 0.0) + b * z
        out[row["account_id"]] = _top3(per)
    return out


def _occlusion_reasons_by_hand(spark: SparkSession, lake: dict[str, Any]) -> dict[str, list[str | None]]:
    """The slow way: for each of the 10 most important sources, replace the column by the training median
    (the Imputer's) or most frequent category (the StringIndexer's), re-score, keep the largest drops."""
    from pyspark.ml.feature import ImputerModel, StringIndexerModel

    _, features = build_labels_and_features(spark, lake["settings"], [D1])
    model = lake["gbt_model"]
    categorical = [f.name for f in features.schema.fields if f.dataType.typeName() == "string"
                   and f.name not in ("account_id", "feature_set_version")]
    sources = _sources_of_slots(model, model.transform(features), categorical)
    importance: dict[str, float] = {}
    trees = next(st for st in model.stages if hasattr(st, "featureImportances"))
    for source, v in zip(sources, trees.featureImportances.toArray(), strict=True):
        importance[source] = importance.get(source, 0.0) + float(v)
    top = sorted((s for s, v in importance.items() if v > 0), key=lambda s: (-importance[s], s))[:10]
    imputer = next(st for st in model.stages if isinstance(st, ImputerModel))
    medians = imputer.surrogateDF.first().asDict()
    indexer = next(st for st in model.stages if isinstance(st, StringIndexerModel))
    modes = {c: labels[0] for c, labels in zip(indexer.getInputCols(), indexer.labelsArray, strict=True)}

    def probs(df: DataFrame) -> dict[str, float]:
        return {r["account_id"]: r["churn_probability"] for r in P.predict(model, df).collect()}

    base = probs(features)
    drops: dict[str, dict[str, float]] = {a: {} for a in base}
    for source in top:
        value = modes[source] if source in modes else medians[f"dbl__{source}"]
        occluded = probs(features.withColumn(source, F.lit(value).cast(features.schema[source].dataType)))
        for a in base:
            drops[a][source] = base[a] - occluded[a]
    return {a: _top3(per) for a, per in drops.items()}


def test_every_eligible_account_is_scored_with_rank_and_decile(spark: SparkSession, lake: dict[str, Any],
                                                               scored: dict[str, Any]) -> None:
    probs = _expected_probabilities(spark, lake)
    assert sorted(probs) == ["a1", "a2", "a3", "a4", "a5", "a6", "a7"]  # a6, a7 have no events; a8 ineligible
    order = sorted(probs, key=lambda a: (-probs[a], a))
    expected = spark.createDataFrame(
        [(a, D1, "v-lr", probs[a], math.floor(i * 10 / 7) + 1, i + 1) for i, a in enumerate(order)],
        "account_id string, as_of_date date, model_version string, churn_probability double, risk_decile int, "
        "rank long")
    got = spark.read.format("delta").load(lake["lake"].churn_scores).where(
        (F.col("as_of_date") == D1) & (F.col("model_version") == "v-lr"))
    assert_df_equality(got.select(*expected.columns), expected, ignore_row_order=True, ignore_nullable=True)
    counts = scored["first"]["counts"]
    assert (counts["eligible"], counts["feature_rows"], counts["scored"]) == (7, 7, 7)
    assert counts["eligible_without_recent_events"] == 2
    assert sum(d["accounts"] for d in scored["first"]["score_distribution"]) == 7
    # The written reasons are each account's three largest positive LR contributions, worked out by hand.
    want = _lr_reasons_by_hand(spark, lake)
    written = {r["account_id"]: [r["reason_1"], r["reason_2"], r["reason_3"]] for r in got.collect()}
    assert written == want
    assert any(reasons[0] is not None for reasons in want.values())


def test_rescoring_replaces_only_its_slice(spark: SparkSession, lake: dict[str, Any], scored: dict[str, Any]) -> None:
    lh = lake["lake"]
    for table, path in (("scores", lh.churn_scores), ("targets", lh.churn_targets)):
        now = spark.read.format("delta").load(path).drop("scored_at")
        before = spark.createDataFrame(scored["after_first"][table], now.schema)
        assert_df_equality(now, before, ignore_row_order=True, ignore_nullable=True)
    keys = spark.read.format("delta").load(lh.churn_scores).groupBy("account_id", "as_of_date", "model_version")
    assert keys.count().where("count > 1").count() == 0
    other = spark.read.format("delta").load(lh.churn_scores).where(
        "model_version = 'v-other' OR as_of_date = '2023-06-01'")
    assert sorted((r["as_of_date"], r["model_version"], r["churn_probability"]) for r in other.collect()) == [
        (D0, "v-lr", 0.25), (D1, "v-other", 0.5)]
    old_targets = spark.read.format("delta").load(lh.churn_targets).where(F.col("as_of_date") == D0)
    assert [(r["account_id"], r["expected_value"]) for r in old_targets.collect()] == [("a1", 5.0)]


def test_target_list_is_the_best_positive_expected_values_within_the_budget(
        spark: SparkSession, lake: dict[str, Any], scored: dict[str, Any]) -> None:
    probs = _expected_probabilities(spark, lake)
    ev = {a: p * 0.5 * MRR[a] * 12.0 - 10.0 for a, p in probs.items()}
    best = sorted((a for a in ev if ev[a] > 0), key=lambda a: (-ev[a], a))[:3]
    expected = spark.createDataFrame([(a, D1, "v-lr", float(MRR[a] * 12), ev[a], 10.0, i + 1)
                                      for i, a in enumerate(best)],
                                     "account_id string, as_of_date date, model_version string, account_value double, "
                                     "expected_value double, contact_cost double, target_rank long")
    got = spark.read.format("delta").load(lake["lake"].churn_targets).where(F.col("as_of_date") == D1)
    assert_approx_df_equality(got.select(*expected.columns), expected, 1e-9, ignore_row_order=True,
                              ignore_nullable=True)
    summary = scored["second"]["targets"]
    assert summary["count"] == len(best)
    assert summary["total_expected_value"] == pytest.approx(sum(ev[a] for a in best), abs=0.01)
    assert [t["account_id"] for t in scored["second"]["top_targets"]] == best


def _hand_psi(reference: list[float], current: list[float], bins: int = 10, floor: float = 1e-4) -> float:
    """PSI worked out in plain Python: edges = the reference's deciles (the smallest value with at least
    i/10 of the values at or below it), a value's bin = how many edges are <= it, shares floored."""
    ref = sorted(reference)
    edges = sorted({ref[math.ceil(i / bins * len(ref)) - 1] for i in range(1, bins)})

    def shares(values: list[float]) -> dict[int, float]:
        out: dict[int, float] = {}
        for v in values:
            b = sum(e <= v for e in edges)
            out[b] = out.get(b, 0.0) + 1 / len(values)
        return out

    e, a = shares(reference), shares(current)
    return sum((max(a.get(b, 0), floor) - max(e.get(b, 0), floor)) * math.log(max(a.get(b, 0), floor)
                                                                            / max(e.get(b, 0), floor))
               for b in set(e) | set(a))


def test_drift_is_reported_against_the_training_snapshot(spark: SparkSession, lake: dict[str, Any],
                                                         scored: dict[str, Any]) -> None:
    drift = scored["first"]["drift"]
    # Reference: the training snapshot D0 as stored in gold, scored by the model (stored with the model as
    # edges and shares when it was registered); current: the scores of D1.
    train_rows = spark.read.format("delta").load(lake["lake"].churn_features).where(F.col("as_of_date") == D0)
    reference = [r["churn_probability"] for r in P.predict(lake["model"], train_rows).collect()]
    current = list(_expected_probabilities(spark, lake).values())
    assert len(reference) == 7 and sorted(reference) != sorted(current)
    assert drift["status"] == "ok"
    assert drift["score_psi"] == pytest.approx(_hand_psi(reference, current), abs=1e-4)
    assert drift["score_psi"] > 0.01  # D1 is not D0: a drift check that always said 0 would fail here
    assert 0 < len(drift["feature_psi"]) <= 3
    assert drift["reference"] == {"model_version": "v-lr", "snapshots": [D0.isoformat()], "rows": 7}


def test_drift_needs_no_training_rows(spark: SparkSession, lake: dict[str, Any], scored: dict[str, Any],
                                      tmp_path: Path) -> None:
    """On a copy of the scored lakehouse without gold.churn_features at all -- neither the training snapshot
    D0 nor the table version in the model's lineage exists -- drift is the same as in the first run: it
    comes from the reference stored with the model. A model registered without one (older models) still
    scores, with drift `unavailable` and why."""
    copy = tmp_path / "lakehouse"
    shutil.copytree(lake["lake"].root, copy)
    shutil.rmtree(Lakehouse(str(copy)).churn_features)
    s = with_overrides(lake["settings"], {"lakehouse": str(copy)})
    assert run_score(spark, s, D1, "v-lr")["drift"] == scored["first"]["drift"]
    older = run_score(spark, s, D1, "v-no-reference")
    assert older["counts"]["scored"] == 7
    assert older["drift"] == {
        "status": "unavailable", "reference": {"model_version": "v-no-reference"},
        "reason": "model v-no-reference has no stored drift reference (trained before references were stored "
                  "with the model): retrain to get drift"}


def test_schema_mismatch_is_one_clear_error_and_writes_nothing(spark: SparkSession, lake: dict[str, Any],
                                                                scored: dict[str, Any]) -> None:
    lh = lake["lake"]
    versions = (io.table_version(spark, lh.churn_scores), io.table_version(spark, lh.churn_targets))
    with pytest.raises(ContractError) as err:
        run_score(spark, lake["settings"], D1, "v-bad-schema")
    msg = str(err.value)
    assert "training schema of model v-bad-schema" in msg
    assert "missing columns: ghost_feature" in msg
    assert "mistyped columns: mrr is double, model expects string" in msg
    assert f"extra columns (unknown to the model): {lake['dropped']}" in msg
    with pytest.raises(ContractError, match=r"trained on feature set version '0'.*built as version '1'"):
        run_score(spark, lake["settings"], D1, "v-old-features")
    assert (io.table_version(spark, lh.churn_scores), io.table_version(spark, lh.churn_targets)) == versions


def test_tree_model_scores_with_occlusion_reasons(spark: SparkSession, lake: dict[str, Any],
                                                  scored: dict[str, Any], tmp_path: Path) -> None:
    """On a copy of the scored lakehouse: scoring D with v-gbt replaces D's target list, which the other
    tests read from the original."""
    copy = tmp_path / "lakehouse"
    shutil.copytree(lake["lake"].root, copy)
    result = run_score(spark, with_overrides(lake["settings"], {"lakehouse": str(copy)}), D1, "v-gbt")
    assert result["reason_method"] == "occlusion_top_10" and result["counts"]["scored"] == 7
    want = _occlusion_reasons_by_hand(spark, lake)
    scores = spark.read.format("delta").load(Lakehouse(str(copy)).churn_scores).where(F.col("as_of_date") == D1)
    got = scores.where(F.col("model_version") == "v-gbt")
    written = {r["account_id"]: [r["reason_1"], r["reason_2"], r["reason_3"]] for r in got.collect()}
    assert written == want
    assert any(reasons[0] is not None for reasons in want.values())
    assert scores.where(F.col("model_version") == "v-lr").count() == 7  # the other model's slice stays


def test_scoring_builds_the_features_slice_once_then_reuses_it(spark: SparkSession, lake: dict[str, Any],
                                                               scored: dict[str, Any]) -> None:
    from churn_spark.score.job import features_slice_problem

    first, second = scored["first"]["features"], scored["second"]["features"]
    assert (first["source"], first["reason"]) == ("built", f"no features slice for {D1}")
    assert (second["source"], second["reason"]) == ("reused", None)
    assert second["features_version"] == first["features_version"]  # the second run wrote no features
    # Another churn definition or feature setting gives another fingerprint: the slice is not reused.
    for change in ({"churn.grace_days": 7}, {"features.windows_days": [7]}, {"features.feature_set_version": "2"}):
        problem = features_slice_problem(spark, with_overrides(lake["settings"], change), D1)
        assert problem is not None, change
    assert features_slice_problem(spark, lake["settings"], D(2023, 9, 1)) == "no features slice for 2023-09-01"


def test_a_stale_feed_is_refused_before_anything_is_written(spark: SparkSession, lake: dict[str, Any],
                                                           scored: dict[str, Any]) -> None:
    lh = lake["lake"]
    tables = (lh.churn_scores, lh.churn_targets, lh.churn_features, lh.churn_labels)
    versions = [io.table_version(spark, t) for t in tables]
    strict = with_overrides(lake["settings"], {"scoring.max_feed_lag_days": 10})
    with pytest.raises(ContractError, match=r"feed is stale for 2023-07-01: the latest event day is 2023-06-20 "
                                            r"\(11 days before\), more than scoring.max_feed_lag_days=10"):
        run_score(spark, strict, D1)
    assert [io.table_version(spark, t) for t in tables] == versions
    assert scored["first"]["feed"] == {
        "latest_event_day": "2023-06-20", "latest_subscription_change": "2023-05-01", "event_lag_days": 11,
        "max_feed_lag_days": 11, "stale": False, "allowed_stale": False}
