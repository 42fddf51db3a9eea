"""`churn-spark score --as-of D [--model-version V]`: scores, reasons, drift and the target list for D.

Extract: the registered model, and the `gold.churn_features` / `gold.churn_labels` slices of D —
reused when they were built with the model's feature-set version and this configuration's
fingerprint, else built once by the features job's own code and written (so the next run reuses
them, and scoring encodes exactly what training saw). Check: the feed reaches D
(`scoring.max_feed_lag_days`), the model's feature-set version, the features' schema against the
training schema, and that every eligible account has one feature row. Transform: probabilities +
reason codes, global rank and risk decile, expected values and the budgeted selection. Load:
`gold.churn_scores` slice (as_of_date = D, model_version = V) and `gold.churn_targets` slice
(as_of_date = D), each one atomic Delta transaction; re-running replaces exactly those slices.

`scoring.targeting.mode: uplift` also needs the registered uplift model (`registered_uplift_model`,
checked and loaded first, before anything is written): its predicted `uplift` of each account at D
values the contacts instead of the churn probability (score/targeting.py).
"""

from __future__ import annotations

import datetime as dt
import importlib
import json
import logging
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, TypeVar

from pyspark import StorageLevel
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql.utils import AnalysisException

from churn_spark import io, progress, schemas
from churn_spark.config import Settings
from churn_spark.errors import ContractError, NotAvailableError
from churn_spark.features.job import (
    feature_config_fingerprint,
    frozen_event_types,
    read_bronze_events,
    resolve_event_types,
    write_labels_and_features,
)
from churn_spark.lakehouse import Lakehouse
from churn_spark.schemas import KEYS
from churn_spark.score.drift import excluded_features, stability_against
from churn_spark.score.ranking import with_global_rank
from churn_spark.score.reasons import REASONS, is_linear, scores_with_reasons
from churn_spark.score.targeting import UPLIFT, churn_targets, contact_limit, uplift_coverage
from churn_spark.silver.job import read_silver, silver_event_types
from churn_spark.train import registry as R
from churn_spark.train.pipeline import predict, release_checkpoint
from churn_spark.train.registry import RegisteredModel, load_model

log = logging.getLogger("churn_spark")

PROBABILITY = "churn_probability"
MRR = "__mrr"
TOP_TARGETS = 10
T = TypeVar("T")


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


def check_feature_schema(features: DataFrame, registered: RegisteredModel, allow_extra: bool) -> None:
    problems = R.feature_schema_problems(features.schema, registered.metadata, allow_extra)
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


def drift_report(reference: dict[str, Any], features: DataFrame, scores: DataFrame, model_version: str,
                 settings: Settings) -> dict[str, Any]:
    """PSI of the score and of the top features against the model's stored reference (metadata.json
    `drift_reference`, built at training); warnings above the configured threshold.

    Only the scored population is binned, at the stored edges. Features that grow by design and
    `scoring.drift_exclude_features` are skipped (also in a reference stored before they were excluded);
    `scoring.drift_top_features` caps the stored features checked, in importance order.
    """
    sc = settings.scoring
    excluded = excluded_features(settings)
    stored = {c: r for c, r in reference["features"].items() if c not in excluded and c in features.columns}
    checked = dict(list(stored.items())[:sc.drift_top_features])
    score_psi = stability_against({PROBABILITY: reference["score"]}, scores)[PROBABILITY]
    feature_psi = stability_against(checked, features)
    above = [name for name, v in [(PROBABILITY, score_psi), *feature_psi.items()] if v > sc.psi_warning_threshold]
    for name in above:
        value = score_psi if name == PROBABILITY else feature_psi[name]
        log.warning("score: drift: PSI of %s is %.3f (> %.2f) between training and scored population",
                    name, value, sc.psi_warning_threshold)
    return {"status": "ok", "threshold": sc.psi_warning_threshold, "score_psi": round(score_psi, 4),
            "feature_psi": {k: round(v, 4) for k, v in feature_psi.items()}, "above_threshold": above,
            "reference": {"model_version": model_version, "snapshots": reference.get("snapshots"),
                          "rows": reference.get("rows")},
            "excluded_features": excluded}


def drift_or_reason(settings: Settings, registered: RegisteredModel, features: DataFrame,
                    scores: DataFrame) -> dict[str, Any]:
    """Drift against the reference stored with the model, or why it could not be computed (never fails
    the scoring run). No training rows are read."""
    def unavailable(reason: str) -> dict[str, Any]:
        reason = reason.splitlines()[0]
        log.warning("score: drift skipped: %s", reason)
        return {"status": "unavailable", "reason": reason, "reference": {"model_version": registered.version}}

    reference = registered.metadata.get("drift_reference")
    if not isinstance(reference, dict):
        return unavailable(f"model {registered.version} has no stored drift reference (trained before references "
                           "were stored with the model): retrain to get drift")
    try:
        return drift_report(reference, features, scores, registered.version, settings)
    except (KeyError, TypeError, ValueError, AnalysisException) as exc:
        return unavailable(f"the stored drift reference of model {registered.version} is unusable "
                           f"({type(exc).__name__}: {exc})")


# --- uplift: the seam to the uplift model (churn_spark/uplift, built and registered by its own job) -------

UPLIFT_MODELS = "uplift"
UPLIFT_POINTER = f"{UPLIFT_MODELS}/current"
"""The uplift registry, under `<lakehouse>/models/`: `uplift/<version>/` holds a model and `uplift/current` is
JSON naming the `version` scoring uses, like the churn registry's `models/current`. Only `churn-spark uplift
train` (churn_spark/uplift/job.py) writes them; scoring only reads."""
NO_UPLIFT_MODEL = "scoring.targeting.mode is uplift but no uplift model is registered: run churn-spark uplift train"


@dataclass(frozen=True)
class RegisteredUplift:
    """The registered uplift model as scoring uses it: `predict` takes feature rows of D and returns them with
    a double `uplift` (predicted reduction of the account's churn probability by a contact)."""

    version: str
    predict: Callable[[DataFrame], DataFrame]


def uplift_pointer_path(settings: Settings) -> str:
    return f"{Lakehouse.from_settings(settings).models.rstrip('/')}/{UPLIFT_POINTER}"


def uplift_version_path(settings: Settings, version: str) -> str:
    return f"{Lakehouse.from_settings(settings).models.rstrip('/')}/{UPLIFT_MODELS}/{version}"


def registered_uplift_version(spark: SparkSession, settings: Settings) -> str:
    """The version `<lakehouse>/models/uplift/current` names; `NO_UPLIFT_MODEL` (one line) when it is absent."""
    path = uplift_pointer_path(settings)
    text = R.read_text(spark, path)
    if not text:
        raise NotAvailableError(NO_UPLIFT_MODEL)
    try:
        return str(json.loads(text)["version"])
    except (ValueError, KeyError, TypeError):
        raise ContractError(f"the uplift model pointer {path} is not JSON naming a `version`") from None


def _uplift_function(name: str) -> Callable[..., Any]:
    """`churn_spark.uplift.learners.<name>`, imported here and only in uplift mode, so risk mode never needs
    the package; one line when this installation does not have it."""
    qualified = "churn_spark.uplift.learners"
    try:
        found = getattr(importlib.import_module(qualified), name, None)
    except ModuleNotFoundError as exc:
        if not (exc.name or "").startswith("churn_spark.uplift"):
            raise  # the package is there but one of its own imports is broken: not ours to hide
        found = None
    if not callable(found):
        raise NotAvailableError(f"scoring.targeting.mode is uplift but this installation has no {qualified}.{name}")
    return found


def registered_uplift_model(spark: SparkSession, settings: Settings) -> RegisteredUplift:
    """The registered uplift model, loaded before anything is written (a missing one fails the run there).

    The contract with churn_spark/uplift: `<lakehouse>/models/uplift/current` names the version, whose model
    `churn_spark.uplift.learners.load_uplift_model(spark, <lakehouse>/models/uplift/<version>)` loads;
    `predict_uplift(model, features_df)` returns the feature rows with a double `uplift` column (the features
    of D as built for the churn model).
    """
    version = registered_uplift_version(spark, settings)
    load = _uplift_function("load_uplift_model")
    predict_uplift = _uplift_function("predict_uplift")
    model = load(spark, uplift_version_path(settings, version))
    return RegisteredUplift(version, lambda features: predict_uplift(model, features))


def predicted_uplift(features: DataFrame, uplift: RegisteredUplift) -> DataFrame:
    """`account_id`, `uplift` per feature row of D. Lazy, but the model's stages check their input columns
    here: features the uplift model cannot read fail the run before the scores are written."""
    predicted = uplift.predict(features)
    if "uplift" not in predicted.columns:
        raise ContractError(f"uplift model {uplift.version} returned no `uplift` column")
    return predicted.select("account_id", F.col("uplift").cast("double").alias("uplift"))


def with_predicted_uplift(scored: DataFrame, predicted: DataFrame) -> DataFrame:
    """Scored rows of D plus the account's predicted `uplift` (null where the model gives none: never contacted)."""
    return scored.join(predicted, "account_id", "left")


# --- the job -----------------------------------------------------------------------------------------


def _top_targets(targets: DataFrame) -> list[dict[str, Any]]:
    rows = targets.where(F.col("target_rank") <= TOP_TARGETS).orderBy("target_rank").collect()
    return [{"target_rank": r["target_rank"], "account_id": r["account_id"],
             "churn_probability": round(r[PROBABILITY], 4), "account_value": round(r["account_value"], 2),
             "expected_value": round(r["expected_value"], 2),
             "uplift": None if r["uplift"] is None else round(r["uplift"], 4),
             "reasons": [r[c] for c in REASONS if r[c]]}
            for r in rows]


def write_targets(scores: DataFrame, settings: Settings, as_of: dt.date, path: str,
                  uplift_version: str | None = None) -> dict[str, Any]:
    """Select and write the target list for `as_of`; returns its totals and top rows.

    `scores`: the scored rows with `__mrr` (and `uplift` in uplift mode). The write evolves a table created
    before `targeting_mode` and `uplift` existed (mergeSchema: its older slices read null there).
    """
    targeting = settings.scoring.targeting
    selected = churn_targets(scores.withColumnRenamed(MRR, "mrr"), targeting)
    targets = selected.select(*[f.name for f in schemas.CHURN_TARGETS.fields])
    where = io.slice_predicate(equals={"as_of_date": as_of})
    io.write_slice(targets, path, where, ["as_of_date"], schema=schemas.CHURN_TARGETS, merge_schema=True)
    written = io.read_slice(targets.sparkSession, path, where)
    totals = written.agg(F.count(F.lit(1)).alias("n"), F.sum("expected_value").alias("ev"),
                         F.sum("contact_cost").alias("cost"), F.sum("uplift").alias("saved")).first()
    assert totals is not None
    summary: dict[str, Any] = {
        "mode": targeting.mode,
        "count": int(totals["n"]), "total_expected_value": round(float(totals["ev"] or 0.0), 2),
        "total_cost": round(float(totals["cost"] or 0.0), 2), "contact_limit": contact_limit(targeting),
        "max_contacts": targeting.max_contacts, "budget": targeting.budget,
        "cost_per_contact": targeting.cost_per_contact, "success_rate": targeting.success_rate,
        "value_months": targeting.value_months}
    if targeting.mode == UPLIFT:  # churners the contacts are expected to keep: the sum of their uplifts
        summary |= {"expected_saved_churners": round(float(totals["saved"] or 0.0), 4),
                    "uplift_model_version": uplift_version, **uplift_coverage(scores)}
    return {"targets": summary, "top_targets": _top_targets(written)}


# --- the feed and the features of D --------------------------------------------------------------------


def feed_freshness(spark: SparkSession, settings: Settings) -> dict[str, str | None]:
    """The latest event day in bronze.events and the latest subscription start or end (ISO dates).

    max(`event_date`) is bronze's partition column: Delta answers it from the log, without a scan.
    """
    lake = Lakehouse.from_settings(settings)
    latest_event = None
    if io.table_exists(spark, lake.bronze_events):
        row = spark.read.format("delta").load(lake.bronze_events).agg(F.max("event_date").alias("d")).first()
        latest_event = row["d"] if row else None
    subscriptions = io.read_input(spark, settings, "subscriptions")
    latest_change = None
    if subscriptions is not None:
        row = subscriptions.good.agg(F.greatest(F.max("start_date"), F.max("end_date")).alias("d")).first()
        latest_change = row["d"] if row else None
    return {"latest_event_day": latest_event.isoformat() if latest_event else None,
            "latest_subscription_change": latest_change.isoformat() if latest_change else None}


def check_feed(freshness: dict[str, Any], as_of: dt.date, max_lag_days: int, allow_stale: bool) -> dict[str, Any]:
    """Refuse to score D when events stop more than `max_lag_days` before it (unless allowed, then say so).

    Stale activity windows look like disengagement: every account's risk would go up at once.
    """
    latest = freshness["latest_event_day"]
    lag = None if latest is None else (as_of - dt.date.fromisoformat(latest)).days
    stale = lag is None or lag > max_lag_days
    if stale and not allow_stale:
        seen = ("no events in bronze.events" if latest is None
                else f"the latest event day is {latest} ({lag} days before)")
        raise ContractError(f"feed is stale for {as_of}: {seen}, more than scoring.max_feed_lag_days={max_lag_days}; "
                            "ingest the missing days or pass --allow-stale-feed")
    if stale:
        log.warning("score: scoring %s on a stale feed (event lag %s days), allowed by --allow-stale-feed", as_of, lag)
    return {**freshness, "event_lag_days": lag, "max_feed_lag_days": max_lag_days, "stale": stale,
            "allowed_stale": stale and allow_stale}


def features_slice_problem(spark: SparkSession, settings: Settings, as_of: dt.date) -> str | None:
    """Why the stored features of `as_of` cannot be scored (None: they can).

    Reusable means: labels and features slices for D exist, and every feature row was written with the
    configured feature-set version and this configuration's fingerprint.
    """
    lake = Lakehouse.from_settings(settings)
    if not io.table_exists(spark, lake.churn_features):
        return "no features table yet"
    event_types = frozen_event_types(spark, settings)
    if event_types is None:
        return f"feature set {settings.features.feature_set_version!r} has no recorded event types"
    with_support = settings.inputs.support_tickets.enabled
    fingerprint = feature_config_fingerprint(settings, event_types, with_support)
    where = io.slice_predicate(equals={"as_of_date": as_of})
    stored = io.read_slice(spark, lake.churn_features, where)
    if "config_fingerprint" not in stored.columns:
        return "the features table predates configuration fingerprints"
    row = stored.agg(F.count(F.lit(1)).alias("n"), F.count_if(
        (F.col("feature_set_version") == settings.features.feature_set_version)
        & (F.col("config_fingerprint") == fingerprint)).alias("matching")).first()
    assert row is not None
    if not row["n"]:
        return f"no features slice for {as_of}"
    if row["matching"] != row["n"]:
        return f"the features slice for {as_of} was built with another feature set or configuration"
    if not io.table_exists(spark, lake.churn_labels) or io.read_slice(spark, lake.churn_labels, where).isEmpty():
        return f"no labels slice for {as_of}"
    return None


def features_of(spark: SparkSession, settings: Settings, as_of: dt.date, problem: str | None
                ) -> tuple[DataFrame, DataFrame, dict[str, Any]]:
    """(labels, features) of `as_of` from gold: the stored slices when reusable (`problem` None, from
    `features_slice_problem`), else built once and written."""
    lake = Lakehouse.from_settings(settings)
    built = None
    if problem is not None:
        with progress.stage("score", f"features of {as_of} built") as step:
            built = write_labels_and_features(spark, settings, [as_of])
            step.done(f"features of {as_of} built and written ({problem})")
    where = io.slice_predicate(equals={"as_of_date": as_of})
    version = io.table_version(spark, lake.churn_features)
    assert version is not None  # D's slice was just found reusable or written
    features = io.read_version(spark, lake.churn_features, version).where(where).drop("config_fingerprint")
    labels = io.read_slice(spark, lake.churn_labels, where)
    info = {"source": "reused" if built is None else "built", "reason": problem, "features_version": version}
    return labels, features, info


def new_event_types(spark: SparkSession, settings: Settings) -> list[str]:
    """Event types in the activity input that the model's frozen feature set ignores (reported, not scored).

    From the raw types silver's latest sync recorded (the log, no data read); else from one scan of silver,
    or of bronze when there is no silver: a report, so it never needs a sync.
    """
    if (recorded := silver_event_types(spark, settings)) is not None:
        return resolve_event_types(settings, read_silver(spark, settings), raw_types=recorded).new
    silver = io.table_exists(spark, Lakehouse.from_settings(settings).silver_account_daily_activity)
    events = read_silver(spark, settings) if silver else read_bronze_events(spark, settings)
    return resolve_event_types(settings, events).new


def concurrently(*reads: Callable[[], Any]) -> list[Any]:
    """The results of independent reads, run on threads (each its own Spark jobs): a run's checks read
    several Delta logs and the model's stages, mostly waiting on the driver, ~9 s one after the other at
    100k accounts. The first failure in argument order is raised, as if they had run in order."""
    with ThreadPoolExecutor(max_workers=len(reads), thread_name_prefix="score-check") as pool:
        futures = [pool.submit(read) for read in reads]
    return [f.result() for f in futures]


@contextmanager
def in_background(read: Callable[[], T]) -> Iterator[Future[T]]:
    """`read` on a thread while the block runs (its Spark jobs beside the block's driver work or jobs); leaving
    the block waits for it, so what it reads (a cache) can be released after."""
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="score-background") as pool:
        yield pool.submit(read)


def run_score(spark: SparkSession, settings: Settings, as_of: dt.date,
              model_version: str | None = None, allow_stale_feed: bool = False) -> dict[str, Any]:
    """Score every eligible account at `as_of` with the current (or named) model; write scores and targets."""
    lake = Lakehouse.from_settings(settings)
    scored_at = dt.datetime.now(dt.UTC).replace(microsecond=0)
    uplift = registered_uplift_model(spark, settings) if settings.scoring.targeting.mode == UPLIFT else None
    registered, freshness, unfeatured, problem = concurrently(
        lambda: load_model(spark, settings, model_version), lambda: feed_freshness(spark, settings),
        lambda: new_event_types(spark, settings), lambda: features_slice_problem(spark, settings, as_of))
    check_feature_set_version(registered, settings)
    feed = check_feed(freshness, as_of, settings.scoring.max_feed_lag_days, allow_stale_feed)
    labels, features, features_info = features_of(spark, settings, as_of, problem)
    check_feature_schema(features, registered, settings.scoring.allow_extra_features)
    mrr_col = settings.scoring.targeting.mrr_column
    if mrr_col not in features.columns:
        raise ContractError(f"scoring.targeting.mrr_column {mrr_col!r} is not a feature column")
    features = features.withColumn(MRR, F.col(mrr_col)).persist(StorageLevel.MEMORY_AND_DISK)
    try:
        # planned here, before anything is written: features the uplift model cannot read fail the run now
        predicted = None if uplift is None else (uplift.version, predicted_uplift(features.drop(MRR), uplift))
        result = _score(spark, settings, lake, registered, as_of, scored_at, labels, features, predicted)
        return {**result, "feed": feed, "features": features_info,
                "new_event_types": unfeatured}
    finally:
        features.unpersist()


def _score(spark: SparkSession, settings: Settings, lake: Lakehouse, registered: RegisteredModel, as_of: dt.date,
           scored_at: dt.datetime, labels: DataFrame, features: DataFrame,
           uplift: tuple[str, DataFrame] | None = None) -> dict[str, Any]:
    """Scores, targets, drift and distribution of D; `uplift`: (uplift model version, `predicted_uplift` rows)
    in uplift mode."""
    model = registered.model
    candidates = settings.scoring.reason_candidates
    eligible = labels.where(F.col("as_of_date") == F.lit(as_of))
    # The count reads (and caches) the features on the executors while the driver plans the reasons
    # (seconds of analysis of the model's pipeline); a population error still wins over a planning one.
    with progress.stage("score", f"features at {as_of}") as step, \
            in_background(lambda: population_counts(eligible, features)) as counting:
        try:
            planned = scores_with_reasons(features, model, lambda df: predict(model, df), candidates, KEYS)
        finally:
            counts = counting.result()
            check_population(counts, as_of)
        step.done(f"features at {as_of}: {progress.rows(counts['eligible'])} eligible accounts, model "
                  f"{registered.version}, reasons by "
                  + ("LR contributions" if is_linear(model) else f"occlusion of the top {candidates}") + ", planned")
    with progress.stage("score", "scores written") as step:
        # the model runs once, into a local checkpoint: the ranking reads its input three times (quantile edges,
        # bucket sizes, rows), and without it each read would re-run the encoding, the K+1 predictions and the
        # fold; and the plans after it start from the checkpoint's rows, not from the reasons' thousands of
        # expressions, which Spark analysed again for every join of the ranking and for the write (a cache
        # keeps the lineage). An executor lost before the write fails the run (the nightly's retry reruns it).
        with_reasons = planned.localCheckpoint(eager=True)
        where = io.slice_predicate(equals={"as_of_date": as_of, "model_version": registered.version})
        try:
            scored = with_reasons.count()
            if scored != counts["eligible"]:
                raise ContractError(f"scored {scored} rows for {counts['eligible']} eligible accounts at {as_of}")
            io.write_slice(churn_scores(with_reasons, registered.version, scored_at), lake.churn_scores, where,
                           ["as_of_date"], schema=schemas.CHURN_SCORES)
        finally:
            release_checkpoint(with_reasons)
        step.done(f"{progress.rows(scored)} scores written to {lake.churn_scores}")
    # Everything after the write reads the slice back: targets, drift and the distribution are
    # derived from exactly the rows readers see, and their plans start at a Delta scan instead of
    # the whole feature + model + reasons lineage (which made the driver run out of heap planning them).
    written = io.read_slice(spark, lake.churn_scores, where).persist(StorageLevel.MEMORY_AND_DISK)
    try:
        with in_background(lambda: (drift_or_reason(settings, registered, features, written),
                                    decile_distribution(written))) as monitored:
            # drift and the distribution only read: their jobs run beside the targets' ranking and write
            with progress.stage("score", "targets written") as step:
                with_mrr = written.join(features.select("account_id", MRR), "account_id", "left")
                if uplift is not None:
                    with_mrr = with_predicted_uplift(with_mrr, uplift[1])
                targets = write_targets(with_mrr, settings, as_of, lake.churn_targets, uplift[0] if uplift else None)
                t = targets["targets"]
                saved = (f", expected saved churners {t['expected_saved_churners']:.2f}, "
                         f"{t['accounts_without_uplift']} account(s) without a predicted uplift" if uplift else "")
                step.done(f"{t['count']} accounts targeted by {t['mode']}, expected value "
                          f"{t['total_expected_value']:.2f}{saved}")
            with progress.stage("score", "drift and score distribution"):
                drift, distribution = monitored.result()
    finally:  # in_background waited for the reads first
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
