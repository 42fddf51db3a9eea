"""`churn-spark score --as-of D [--model-version V]`: scores, reasons, drift and the target list for D.

Extract: the registered model, and features for D built by the features job's own code
(`build_labels_and_features`, so scoring encodes exactly what training saw). Check: the model's
feature-set version, the features' schema against the training schema, and that every eligible
account has one feature row. Transform: probabilities + reason codes, global rank and risk
decile, expected values and the budgeted selection. Load: `gold.churn_scores` slice
(as_of_date = D, model_version = V) and `gold.churn_targets` slice (as_of_date = D), each one
atomic Delta transaction; re-running replaces exactly those slices.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Sequence
from typing import Any

from pyspark import StorageLevel
from pyspark.ml import PipelineModel
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql.types import StructType
from pyspark.sql.utils import AnalysisException

from churn_spark import io, progress, schemas
from churn_spark.config import Settings
from churn_spark.errors import ContractError
from churn_spark.features.job import build_labels_and_features
from churn_spark.lakehouse import Lakehouse
from churn_spark.schemas import FEATURE_KEY_COLUMNS, KEYS
from churn_spark.score.drift import population_stability
from churn_spark.score.ranking import with_global_rank
from churn_spark.score.reasons import REASONS, is_linear, scores_with_reasons, source_importances, top_sources
from churn_spark.score.targeting import churn_targets, contact_limit
from churn_spark.train.pipeline import predict
from churn_spark.train.registry import RegisteredModel, load_model

log = logging.getLogger("churn_spark")

PROBABILITY = "churn_probability"
MRR = "__mrr"
TOP_TARGETS = 10


# --- checks before anything is written ---------------------------------------------------------------


def check_feature_set_version(registered: RegisteredModel, settings: Settings) -> None:
    """Refuse a model trained on another feature-set version: its columns may mean something else."""
    trained = str(registered.metadata.get("feature_set_version"))
    wanted = settings.features.feature_set_version
    if trained != wanted:
        raise ContractError(
            f"model {registered.version} was trained on feature set version {trained!r}, but the features "
            f"are now built as version {wanted!r}: retrain (`churn-spark train`) or pass --model-version of a "
            f"model trained on feature set {wanted!r}")


def feature_schema_problems(actual: StructType, metadata: dict[str, Any], allow_extra: bool) -> list[str]:
    """Missing, mistyped and (unless allowed) unknown feature columns against the training schema."""
    expected: dict[str, str] = metadata.get("feature_schema", {})
    ignored = set(metadata.get("dropped_features", [])) | set(
        metadata.get("config", {}).get("model", {}).get("exclude_features", []))
    have = {f.name: f.dataType.simpleString() for f in actual.fields if f.name not in FEATURE_KEY_COLUMNS}
    problems = []
    if missing := [n for n in expected if n not in have]:
        problems.append("missing columns: " + ", ".join(missing))
    if mistyped := [f"{n} is {have[n]}, model expects {t}" for n, t in expected.items() if n in have and have[n] != t]:
        problems.append("mistyped columns: " + "; ".join(mistyped))
    if not allow_extra and (extra := [n for n in have if n not in expected and n not in ignored]):
        problems.append("extra columns (unknown to the model): " + ", ".join(extra))
    return problems


def check_feature_schema(features: DataFrame, registered: RegisteredModel, allow_extra: bool) -> None:
    problems = feature_schema_problems(features.schema, registered.metadata, allow_extra)
    if problems:
        raise ContractError(f"features do not match the training schema of model {registered.version}: "
                            + "; ".join(problems))


def population_counts(eligible: DataFrame, features: DataFrame) -> dict[str, int]:
    """Eligible accounts vs feature rows (one small aggregate): who would be missed or scored twice."""
    per_account = features.groupBy("account_id").agg(
        F.count(F.lit(1)).alias("n"),
        (F.max(F.col("days_since_last_event").isNull().cast("int")) if "days_since_last_event" in features.columns
         else F.lit(0)).alias("no_events"))
    joined = eligible.select("account_id", F.lit(1).alias("e")).join(per_account, "account_id", "full")
    row = joined.agg(
        F.count("e").alias("eligible"), F.coalesce(F.sum("n"), F.lit(0)).alias("feature_rows"),
        F.count_if(F.col("e").isNotNull() & F.col("n").isNull()).alias("eligible_without_features"),
        F.count_if(F.col("e").isNull()).alias("features_not_eligible"),
        F.count_if(F.col("n") > 1).alias("accounts_with_duplicate_rows"),
        F.coalesce(F.sum("no_events"), F.lit(0)).alias("eligible_without_recent_events"),
    ).first()
    assert row is not None
    return {k: int(v) for k, v in row.asDict().items()}


def check_population(counts: dict[str, int], as_of: dt.date) -> None:
    if counts["eligible_without_features"] or counts["features_not_eligible"] or counts["accounts_with_duplicate_rows"]:
        raise ContractError(
            f"features for {as_of} do not cover the eligible accounts one-to-one: {counts['eligible']} eligible, "
            f"{counts['feature_rows']} feature rows, {counts['eligible_without_features']} eligible without "
            f"features, {counts['features_not_eligible']} not eligible, "
            f"{counts['accounts_with_duplicate_rows']} with duplicate rows")


# --- transforms --------------------------------------------------------------------------------------


def with_rank_and_decile(scored: DataFrame) -> DataFrame:
    """`rank` (1 = highest probability, ties by account_id) and `risk_decile` (1 = top 10% ... 10).

    Deciles are equal-count: decile = floor((rank - 1) * 10 / n) + 1, so sizes differ by at most one.
    """
    ranked = with_global_rank(scored, PROBABILITY, "account_id", "rank", total_col="__n")
    decile = (F.floor((F.col("rank") - 1) * 10 / F.col("__n")) + 1).cast("int")
    return ranked.withColumn("risk_decile", decile).drop("__n")


def churn_scores(scored: DataFrame, model_version: str, scored_at: dt.datetime) -> DataFrame:
    """`gold.churn_scores` columns from probabilities with reasons."""
    return scored.transform(with_rank_and_decile).select(
        *KEYS, F.lit(model_version).alias("model_version"),
        F.col(PROBABILITY).cast("double").alias(PROBABILITY), "risk_decile", "rank", *REASONS,
        F.lit(scored_at).cast("timestamp").alias("scored_at"))


def decile_distribution(scores: DataFrame) -> list[dict[str, Any]]:
    """Per risk decile: accounts and probability range/mean (ten rows)."""
    rows = scores.groupBy("risk_decile").agg(
        F.count(F.lit(1)).alias("accounts"), F.min(PROBABILITY).alias("min_p"), F.max(PROBABILITY).alias("max_p"),
        F.avg(PROBABILITY).alias("mean_p")).orderBy("risk_decile").collect()
    return [{"risk_decile": r["risk_decile"], "accounts": r["accounts"], "min_p": round(r["min_p"], 4),
             "max_p": round(r["max_p"], 4), "mean_p": round(r["mean_p"], 4)} for r in rows]


# --- drift against the training population -----------------------------------------------------------


def training_features(spark: SparkSession, settings: Settings, metadata: dict[str, Any]) -> DataFrame:
    """The rows the model was trained on: gold.churn_features at the recorded Delta version, train snapshots."""
    lineage = metadata["lineage"]
    table = lineage["tables"]["features"]
    dates = [dt.date.fromisoformat(d) for d in lineage["split"]["train"]["dates"]]
    path = table.get("path") or Lakehouse.from_settings(settings).churn_features
    return (spark.read.format("delta").option("versionAsOf", int(table["delta_version"])).load(path)
            .where(F.col("as_of_date").isin(dates) & (F.col("feature_set_version") == metadata["feature_set_version"])))


def drift_report(reference: DataFrame, features: DataFrame, scores: DataFrame, model: PipelineModel,
                 categorical: Sequence[str], settings: Settings) -> dict[str, Any]:
    """PSI of the score and of the model's top features; warnings above the configured threshold."""
    sc = settings.scoring
    top = top_sources(source_importances(model, features.limit(0)), sc.drift_top_features)
    top = [t for t in top if t in features.columns]
    score_psi = population_stability(reference, scores, [PROBABILITY], bins=sc.psi_bins)[PROBABILITY]
    feature_psi = population_stability(reference, features, [t for t in top if t not in categorical],
                                       [t for t in top if t in categorical], bins=sc.psi_bins)
    above = [name for name, v in [(PROBABILITY, score_psi), *feature_psi.items()] if v > sc.psi_warning_threshold]
    for name in above:
        value = score_psi if name == PROBABILITY else feature_psi[name]
        log.warning("score: drift: PSI of %s is %.3f (> %.2f) between training and scored population",
                    name, value, sc.psi_warning_threshold)
    return {"status": "ok", "threshold": sc.psi_warning_threshold, "score_psi": round(score_psi, 4),
            "feature_psi": {k: round(feature_psi[k], 4) for k in top}, "above_threshold": above}


def drift_or_reason(spark: SparkSession, settings: Settings, registered: RegisteredModel, features: DataFrame,
                    scores: DataFrame) -> dict[str, Any]:
    """Drift against the training data, or why it could not be computed (never fails the scoring run)."""
    try:
        train_rows = training_features(spark, settings, registered.metadata)
    except (KeyError, TypeError, ValueError, AnalysisException) as exc:
        reason = f"training data not readable from the model's lineage ({type(exc).__name__}: {exc})".splitlines()[0]
        log.warning("score: drift skipped: %s", reason)
        return {"status": "unavailable", "reason": reason}
    reference = predict(registered.model, train_rows).persist(StorageLevel.MEMORY_AND_DISK)
    try:
        categorical = registered.metadata.get("feature_columns", {}).get("categorical", [])
        return drift_report(reference, features, scores, registered.model, categorical, settings)
    finally:
        reference.unpersist()


# --- the job -----------------------------------------------------------------------------------------


def _top_targets(targets: DataFrame) -> list[dict[str, Any]]:
    rows = targets.where(F.col("target_rank") <= TOP_TARGETS).orderBy("target_rank").collect()
    return [{"target_rank": r["target_rank"], "account_id": r["account_id"],
             "churn_probability": round(r[PROBABILITY], 4), "account_value": round(r["account_value"], 2),
             "expected_value": round(r["expected_value"], 2), "reasons": [r[c] for c in REASONS if r[c]]}
            for r in rows]


def write_targets(scores: DataFrame, settings: Settings, as_of: dt.date, path: str) -> dict[str, Any]:
    """Select and write the target list for `as_of`; returns its totals and top rows."""
    targeting = settings.scoring.targeting
    selected = churn_targets(scores.withColumnRenamed(MRR, "mrr"), targeting)
    targets = selected.select(*[f.name for f in schemas.CHURN_TARGETS.fields])
    where = io.slice_predicate(equals={"as_of_date": as_of})
    io.write_slice(targets, path, where, ["as_of_date"], schema=schemas.CHURN_TARGETS)
    written = io.read_slice(targets.sparkSession, path, where)
    totals = written.agg(F.count(F.lit(1)).alias("n"), F.sum("expected_value").alias("ev"),
                         F.sum("contact_cost").alias("cost")).first()
    assert totals is not None
    return {"targets": {
        "count": int(totals["n"]), "total_expected_value": round(float(totals["ev"] or 0.0), 2),
        "total_cost": round(float(totals["cost"] or 0.0), 2), "contact_limit": contact_limit(targeting),
        "max_contacts": targeting.max_contacts, "budget": targeting.budget,
        "cost_per_contact": targeting.cost_per_contact, "success_rate": targeting.success_rate,
        "value_months": targeting.value_months},
        "top_targets": _top_targets(written)}


def run_score(spark: SparkSession, settings: Settings, as_of: dt.date,
              model_version: str | None = None) -> dict[str, Any]:
    """Score every eligible account at `as_of` with the current (or named) model; write scores and targets."""
    lake = Lakehouse.from_settings(settings)
    scored_at = dt.datetime.now(dt.UTC).replace(microsecond=0)
    registered = load_model(spark, settings, model_version)
    check_feature_set_version(registered, settings)
    labels, features = build_labels_and_features(spark, settings, [as_of])
    check_feature_schema(features, registered, settings.scoring.allow_extra_features)
    mrr_col = settings.scoring.targeting.mrr_column
    if mrr_col not in features.columns:
        raise ContractError(f"scoring.targeting.mrr_column {mrr_col!r} is not a feature column")
    features = features.withColumn(MRR, F.col(mrr_col)).persist(StorageLevel.MEMORY_AND_DISK)
    try:
        return _score(spark, settings, lake, registered, as_of, scored_at, labels, features)
    finally:
        features.unpersist()


def _score(spark: SparkSession, settings: Settings, lake: Lakehouse, registered: RegisteredModel, as_of: dt.date,
           scored_at: dt.datetime, labels: DataFrame, features: DataFrame) -> dict[str, Any]:
    model = registered.model
    candidates = settings.scoring.reason_candidates
    with progress.stage("score", f"features at {as_of}") as step:
        counts = population_counts(labels.where(F.col("as_of_date") == F.lit(as_of)), features)
        check_population(counts, as_of)
        step.done(f"features at {as_of}: {progress.rows(counts['eligible'])} eligible accounts, model "
                  f"{registered.version}, reasons by "
                  + ("LR contributions" if is_linear(model) else f"occlusion of the top {candidates}"))
    with progress.stage("score", "scores written") as step:
        with_reasons = scores_with_reasons(features, model, lambda df: predict(model, df), candidates, KEYS)
        scores = churn_scores(with_reasons, registered.version, scored_at).persist(StorageLevel.MEMORY_AND_DISK)
        where = io.slice_predicate(equals={"as_of_date": as_of, "model_version": registered.version})
        try:
            scored = scores.count()
            if scored != counts["eligible"]:
                raise ContractError(f"scored {scored} rows for {counts['eligible']} eligible accounts at {as_of}")
            io.write_slice(scores, lake.churn_scores, where, ["as_of_date"], schema=schemas.CHURN_SCORES)
        finally:
            scores.unpersist()
        step.done(f"{progress.rows(scored)} scores written to {lake.churn_scores}")
    # Everything after the write reads the slice back: targets, drift and the distribution are
    # derived from exactly the rows readers see, and their plans start at a Delta scan instead of
    # the whole feature + model + reasons lineage (which made the driver run out of heap planning them).
    written = io.read_slice(spark, lake.churn_scores, where).persist(StorageLevel.MEMORY_AND_DISK)
    try:
        with progress.stage("score", "targets written") as step:
            with_mrr = written.join(features.select("account_id", MRR), "account_id", "left")
            targets = write_targets(with_mrr, settings, as_of, lake.churn_targets)
            step.done(f"{targets['targets']['count']} accounts targeted, expected value "
                      f"{targets['targets']['total_expected_value']:.2f}")
        with progress.stage("score", "drift and score distribution"):
            drift = drift_or_reason(spark, settings, registered, features, written)
            distribution = decile_distribution(written)
    finally:
        written.unpersist()
    return {
        "as_of_date": as_of.isoformat(), "model_version": registered.version,
        "model_type": registered.metadata.get("model_type"),
        "feature_set_version": settings.features.feature_set_version,
        "counts": {**counts, "scored": scored},
        "reason_method": "lr_contributions" if is_linear(model) else f"occlusion_top_{candidates}",
        "score_distribution": distribution, "drift": drift, **targets,
        "scores_version": io.table_version(spark, lake.churn_scores),
        "targets_version": io.table_version(spark, lake.churn_targets),
    }
