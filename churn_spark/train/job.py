"""`churn-spark train`: read labels + features, split by time, search, fit, calibrate, evaluate,
report and register -- extract -> transform -> load, with the transforms in pipeline/split/metrics.

Reads the Delta versions it records (time travel), so the lineage in metadata.json is exact even if
the features job writes while training runs.
"""

from __future__ import annotations

import datetime as dt
import logging
import subprocess
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from functools import reduce
from itertools import product
from pathlib import Path
from typing import Any

from pyspark import StorageLevel
from pyspark.ml import PipelineModel
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from churn_spark import __version__, io, progress
from churn_spark.config import ModelSettings, Settings
from churn_spark.errors import ConfigError, ContractError, NotAvailableError, PromotionError
from churn_spark.features.catalog import SEASON_COS, SEASON_SIN
from churn_spark.labels import definition_of_snapshots
from churn_spark.lakehouse import Lakehouse
from churn_spark.schemas import KEYS
from churn_spark.score.drift import excluded_features, reference_distributions
from churn_spark.score.reasons import source_importances, top_sources
from churn_spark.train import metrics as M
from churn_spark.train import pipeline as P
from churn_spark.train import registry as R
from churn_spark.train.report import build_report, score_histogram
from churn_spark.train.split import (
    Snapshots,
    TimeSplit,
    filter_snapshots,
    plan_time_split,
    with_latest_snapshot_held_out,
)

log = logging.getLogger("churn_spark")
HEADLINE = ("roc_auc", "oracle_roc_auc", "pr_auc", "log_loss", "brier", "lift_at_10pct", "ece", "oracle_ece",
            "calibration_in_the_large")


# --- extract -------------------------------------------------------------------------------------


def read_delta_at(spark: SparkSession, path: str, what: str) -> tuple[DataFrame, int]:
    """The Delta table at `path` as of its latest version, and that version (for lineage)."""
    version = io.table_version(spark, path)
    if version is None:
        raise NotAvailableError(f"{what} not found at {path}: run `churn-spark features` first")
    return io.read_version(spark, path, version), version


def read_truth(spark: SparkSession, settings: Settings) -> DataFrame | None:
    """The generator's true probabilities, when the table exists (generated data only)."""
    try:
        conformed = io.read_input(spark, settings, "churn_truth")
    except ContractError:
        return None
    return None if conformed is None else conformed.good


# --- transform -----------------------------------------------------------------------------------


def labelled_rows(labels: DataFrame, features: DataFrame, feature_set_version: str) -> DataFrame:
    """Grain (account_id, as_of_date): features of `feature_set_version` joined to non-null labels.

    Censored snapshots (label null) can be scored, never trained or evaluated on.
    """
    return (features.where(F.col("feature_set_version") == feature_set_version)
            .join(labels.where(F.col("label").isNotNull()).select(*KEYS, F.col("label").cast("int").alias("label")),
                  list(KEYS)))


def labelled_dataset(labels: DataFrame, features: DataFrame, feature_set_version: str,
                     partitions: int | None = None) -> DataFrame:
    """`labelled_rows` in the stable layout (`partitions` of them; None: spark.sql.shuffle.partitions)."""
    return labelled_rows(labels, features, feature_set_version).transform(lambda df: in_stable_layout(df, partitions))


def in_stable_layout(df: DataFrame, partitions: int | None = None) -> DataFrame:
    """Rows hash-partitioned by key (`partitions`, else spark.sql.shuffle.partitions) and sorted within partitions.

    MLlib's tree bagging and bin sampling draw per partition (seed + partition index, in row
    order), so the same rows laid out differently -- other Delta files, other cluster -- would
    train another model. A layout that depends only on the keys and the row count makes training
    reproducible anywhere the config is the same.
    """
    laid_out = df.repartition(partitions, *KEYS) if partitions else df.repartition(*KEYS)
    return laid_out.sortWithinPartitions(*KEYS)


def training_partitions(rows: int, rows_per_partition: int, most: int) -> int:
    """Partitions of the labelled dataset: one per `rows_per_partition` rows, at most `most` (the shuffle
    partitions). MLlib's iterative fits pay every partition's task in each of their hundreds of jobs: the demo's
    28k rows trained in 300 s on 8 partitions on 2 cores, in 257 s on 2 (docs/model.md)."""
    return max(1, min(most, -(-rows // rows_per_partition)))


def with_class_weight(df: DataFrame, positive_rate: float) -> DataFrame:
    """`class_weight` balancing the classes: each class carries half of the total weight."""
    rate = min(max(positive_rate, 1e-9), 1 - 1e-9)
    return df.withColumn(P.WEIGHT_COL, F.when(F.col("label") == 1, F.lit(0.5 / rate))
                         .otherwise(F.lit(0.5 / (1 - rate))))


def label_rate(stats: dict[dt.date, tuple[int, int]], days: Sequence[dt.date]) -> float:
    """Positives / rows over the snapshots `days` (from the per-snapshot counts: no Spark job)."""
    rows = sum(stats[d][0] for d in days)
    return sum(stats[d][1] for d in days) / rows if rows else 0.5


def profile_columns(train: DataFrame, columns: P.FeatureColumns, indicators: bool,
                    cycles: dict[str, int] | None = None) -> tuple[P.FeatureColumns, list[str]]:
    """Drop numeric columns with no value in training (nothing to impute from); flag the ones with gaps;
    add the cyclic positions of the configured `cycles` whose column is a kept numeric feature."""
    if not columns.numeric:
        return columns, []
    # SQL text, not Columns: ~240 columns of dozens of JVM calls each took seconds to build on the driver
    row = train.selectExpr("count(1) AS __n", *[f"sum(CAST({P.missing_sql(c)} AS BIGINT)) AS m{i}"
                                                for i, c in enumerate(columns.numeric)]).first()
    assert row is not None
    n = row["__n"]
    missing = {c: row[f"m{i}"] for i, c in enumerate(columns.numeric)}
    empty = [c for c in columns.numeric if missing[c] == n]
    numeric = [c for c in columns.numeric if c not in empty]
    flags = [c for c in numeric if missing[c] > 0] if indicators else []
    cyclic = {c: p for c, p in (cycles or {}).items() if c in numeric}
    return P.FeatureColumns(numeric, columns.categorical, flags, cyclic), empty


def stops_early(ms: ModelSettings, family: str, days: Sequence[dt.date]) -> bool:
    """Whether a fit on `days` holds out its latest snapshot to stop boosting: GBT only, and only when another
    snapshot is left to learn from."""
    return ms.early_stopping and family == "gbt" and len(set(days)) > 1


def trees_of(model: PipelineModel) -> int | None:
    """Trees in the fitted classifier of `model` (None: not a tree ensemble)."""
    clf = P.classifier_model(model)
    return int(clf.getNumTrees) if hasattr(clf, "getNumTrees") else None


def snapshot_stats(dataset: DataFrame) -> dict[dt.date, tuple[int, int]]:
    """{as_of_date: (rows, positives)}: one small aggregate, one row per snapshot."""
    rows = dataset.groupBy("as_of_date").agg(F.count(F.lit(1)).alias("n"), F.sum("label").alias("pos")).collect()
    return {r["as_of_date"]: (int(r["n"]), int(r["pos"] or 0)) for r in rows}


def split_summary(split: TimeSplit, stats: dict[dt.date, tuple[int, int]]) -> dict[str, dict[str, Any]]:
    out = {}
    roles = [("train", split.train), ("validation", split.validation), ("test", split.test)]
    for name, days in roles + ([("refit", split.refit)] if split.refit else []):
        n = sum(stats[d][0] for d in days)
        pos = sum(stats[d][1] for d in days)
        out[name] = {"from": days[0].isoformat(), "to": days[-1].isoformat(), "snapshots": len(days),
                     "rows": n, "positives": pos, "label_rate": pos / n if n else 0.0}
    return out


def _split_lineage(split: TimeSplit, splits: dict[str, Any]) -> dict[str, Any]:
    """Per role: dates, first/last snapshot, rows, positives and label rate; plus the gap and the folds."""
    plan = split.as_dict()
    return {**plan, **{role: {**plan[role], **splits[role]} for role in splits}}


@dataclass(frozen=True)
class Candidate:
    """One model the folds compare: a family and its configured MLlib parameters (over the defaults)."""

    family: str
    params: dict[str, Any]


def candidates(ms: ModelSettings) -> list[Candidate]:
    """`auto`: every family of `model.candidates`; one family: each point of its `param_grid` (or just it)."""
    for family in ms.candidates if ms.type == "auto" else [ms.type]:
        P.require_family(family)  # an optional family without its package: one line (run_train calls this first)
    if ms.type == "auto":
        return [Candidate(f, ms.family_params(f)) for f in dict.fromkeys(ms.candidates)]
    probe = P.classifier(ms.type, {}, ms.seed, weighted=False)
    unknown = [name for name in ms.param_grid if not probe.hasParam(name)]
    if unknown:
        raise ConfigError(f"model.param_grid: unknown {ms.type} parameter(s): {', '.join(unknown)}")
    base, names = ms.family_params(ms.type), list(ms.param_grid)
    points = [dict(zip(names, values, strict=True)) for values in product(*ms.param_grid.values())] if names else [{}]
    return [Candidate(ms.type, {**base, **point}) for point in points]


@dataclass
class FoldResults:
    """A candidate's out-of-time predictions on the folds' evaluation snapshots (persisted) and its metric on each."""

    candidate: Candidate
    values: list[float]
    predictions: list[DataFrame]
    trees: list[int | None] = field(default_factory=list)  # per fold: trees kept (GBT), None otherwise

    @property
    def mean(self) -> float:
        return sum(self.values) / len(self.values)

    def pooled(self) -> DataFrame:
        return reduce(DataFrame.unionByName, self.predictions)

    def release(self) -> None:
        for p in self.predictions:
            p.unpersist()


def compare_on_folds(cands: Sequence[Candidate], fit: Callable[[Candidate, Snapshots], PipelineModel],
                     rows: Callable[[Snapshots], DataFrame], split: TimeSplit, metric: str,
                     parallelism: int, prior: Callable[[Snapshots], float] = lambda days: 0.0) -> list[FoldResults]:
    """Expanding-window folds: for each validation snapshot, each candidate is fitted on the snapshots whose
    label window ends before it and predicts it. Its predictions are kept, centred by the prior logit of the
    fit's rows (`prior`, P.centred): the winner's are the out-of-time rows its calibrator learns from
    (cross-fitting), so no fit is done twice."""
    score = M.roc_auc if metric == "roc_auc" else M.pr_auc

    def one(c: Candidate) -> FoldResults:
        result = FoldResults(c, [], [])
        for fit_days, eval_days in split.folds:
            raw = P.centred(F.col(P.RAW_OUTPUT_COL), prior(fit_days)).alias(P.RAW_OUTPUT_COL)
            model = fit(c, fit_days)
            predicted = (score_rows(model, rows(eval_days)).select(*KEYS, "label", raw)
                         .persist(StorageLevel.MEMORY_AND_DISK))
            result.trees.append(trees_of(model))
            result.predictions.append(predicted)
            result.values.append(score(predicted, P.RAW_OUTPUT_COL))  # calibration is monotone: same ranking
        return result

    with ThreadPoolExecutor(max_workers=parallelism) as pool:
        return list(pool.map(one, cands))


def selection_table(results: Sequence[FoldResults], metric: str) -> list[dict[str, Any]]:
    """What metadata.json `search` and the report show: every candidate's fold metrics and their mean."""
    return [{"family": r.candidate.family, "params": r.candidate.params, f"fold_{metric}": r.values,
             f"mean_{metric}": r.mean, **({"fold_trees": r.trees} if any(t is not None for t in r.trees) else {})}
            for r in results]


def score_rows(model: PipelineModel, rows: DataFrame) -> DataFrame:
    """Keys, label and both probabilities of `rows` under `model`."""
    return P.predict(model, rows).select(*KEYS, "label", P.OUTPUT_COL, P.RAW_OUTPUT_COL)


def out_of_time_predictions(fits: Sequence[tuple[PipelineModel, DataFrame]]) -> DataFrame:
    """Label and raw probability of each model on its later, unseen snapshots, pooled and persisted:
    what a calibrator may learn from, since no model's own training rows say how it errs on new ones."""
    parts = [score_rows(model, rows).select("label", P.RAW_OUTPUT_COL) for model, rows in fits]
    return reduce(DataFrame.unionByName, parts).persist(StorageLevel.MEMORY_AND_DISK)


def calibration_source(split: TimeSplit) -> str:
    """Where the calibrator's rows came from, in words (metadata.json and the report)."""
    if split.refit:
        return ("predictions on " + ", ".join(str(e[0]) for _, e in split.folds) + " of models fitted on the "
                "snapshots before each (time-ordered cross-fitting); applied to the refitted model")
    return f"predictions of the registered model on the validation snapshots {split.validation[0]}.." \
           f"{split.validation[-1]}"


def calibration_days(split: TimeSplit) -> list[dt.date]:
    """The snapshots the calibrator's rows came from (see `calibration_source`)."""
    return sorted({d for _, evaluated in split.folds for d in evaluated}) if split.refit else list(split.validation)


def shifts_season(ms: ModelSettings, family: str) -> bool:
    """Whether the registered model gets a seasonal shift (`model.seasonal_calibration`). `auto`: calibrated tree
    ensembles only. Why: logistic regression has the season's cosine and sine among its inputs, fitted on the same rows
    the shift would be fitted on, so a shift only re-fits its in-sample residue (demo: in-the-large -0.002 ->
    -0.011); trees split on the season rarely and carry the calibration season's level to the whole year
    (8,000 accounts: +0.0085 -> +0.0013; docs/model.md, "Calibration")."""
    if ms.seasonal_calibration == "auto":
        return family != "lr" and ms.calibration != "none"
    return bool(ms.seasonal_calibration)


def with_seasonal_shift(model: PipelineModel, calibration: dict[str, Any], dataset: DataFrame,
                        split: TimeSplit) -> tuple[PipelineModel, dict[str, Any]]:
    """`model` whose calibration also shifts the log-odds by season (`P.fit_seasonal_shift`), fitted on the
    registered fit's own rows and centred on the calibrator's snapshots; and the calibration's description."""
    if not {SEASON_COS, SEASON_SIN} <= set(dataset.columns):
        log.info("train: no seasonal shift: gold.churn_features has no season_cos/season_sin (features.season)")
        return model, {**calibration, "season": None}
    with progress.stage("train", "seasonal shift fitted") as step:
        centre = filter_snapshots(dataset, calibration_days(split)).agg(
            F.avg(SEASON_COS).alias("c"), F.avg(SEASON_SIN).alias("s")).first()
        assert centre is not None
        rows = P.predict(model, filter_snapshots(dataset, split.final)).select(
            P.LABEL_COL, P.OUTPUT_COL, SEASON_COS, SEASON_SIN)
        terms = P.fit_seasonal_shift(rows, (float(centre["c"] or 0.0), float(centre["s"] or 0.0)))
        if not terms:
            step.done("seasonal shift: not fitted (one class or fewer than three seasons in the fit's rows)")
            return model, {**calibration, "season": None}
        shifted = P.calibration_stage(model).with_season(terms)
        step.done(f"seasonal shift fitted on the registered fit's rows: log-odds {terms[0]:+.3f} x cos "
                  f"{terms[1]:+.3f} x sin, centred on {terms[2]:.3f}, {terms[3]:.3f}")
        return P.with_calibration(model, shifted), {**calibration, **shifted.describe()}


def calibration_text(calibration: dict[str, Any]) -> str:
    method = calibration["method"]
    if calibration["configured"] == "none":
        return "not calibrated"
    what = (f"Platt-scaled (slope {calibration['slope']:.3f}, intercept {calibration['intercept']:.3f})"
            if method == "platt" else f"isotonic-calibrated ({calibration['knots']} knots)")
    season = calibration.get("season")
    shift = (f"; then a seasonal shift of the log-odds ({season['k_cos']:+.3f} x cos, {season['k_sin']:+.3f} x sin "
             "of the snapshot's season, 0 in the calibration season) fitted on the registered fit's rows"
             if season else "")
    return f"{what}, fitted on {calibration['rows']} out-of-time {calibration['fitted_on']}{shift}"


def drift_reference(model: PipelineModel, features: DataFrame, dates: Sequence[dt.date], columns: P.FeatureColumns,
                    settings: Settings) -> dict[str, Any]:
    """What scoring's drift is measured against, stored in metadata.json (`drift_reference`): bin edges
    and shares of the calibrated score and of the model's top `scoring.drift_top_features` features
    (minus `excluded_features`: tenure and the like) on the training snapshots `dates` of `features`
    (gold.churn_features or the labelled dataset: on training snapshots the same rows, as no label there is
    censored). A few hundred numbers, so scoring never reads or re-scores the training rows."""
    sc = settings.scoring
    rows = features.where(F.col("as_of_date").isin(list(dates))
                          & (F.col("feature_set_version") == settings.features.feature_set_version))
    excluded = excluded_features(settings)
    importances = source_importances(model, rows.limit(0))
    top = [t for t in top_sources(importances, len(importances)) if t in rows.columns and t not in excluded]
    top = top[:sc.drift_top_features]
    categorical = [t for t in top if t in columns.categorical]
    scored = P.predict(model, rows).select(P.OUTPUT_COL, *[F.col(f"`{t}`") for t in top]) \
        .persist(StorageLevel.MEMORY_AND_DISK)
    try:
        n = scored.count()
        dists = reference_distributions(scored, [P.OUTPUT_COL, *[t for t in top if t not in categorical]],
                                        categorical, sc.psi_bins)
    finally:
        scored.unpersist()
    return {"snapshots": [d.isoformat() for d in dates], "rows": n, "bins": sc.psi_bins,
            "excluded_features": excluded, "score": dists[P.OUTPUT_COL], "features": {t: dists[t] for t in top}}


# --- registry / promotion ------------------------------------------------------------------------


def code_version() -> dict[str, Any]:
    """Package version and, when running from a git checkout, the commit (and whether it was dirty)."""
    out: dict[str, Any] = {"package": __version__, "git_commit": None}
    here = Path(__file__).resolve().parent
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=here, capture_output=True, text=True,
                                timeout=10, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--", "."], cwd=here, capture_output=True,
                               text=True, timeout=10, check=True).stdout.strip()
        out.update(git_commit=commit or None, git_dirty=bool(dirty))
    except (OSError, subprocess.SubprocessError):
        pass
    return out


@dataclass(frozen=True)
class CurrentModel:
    """The current model against the new test rows: its metrics, or why it was not compared."""

    version: str | None = None
    metrics: dict[str, Any] | None = None
    incompatible: str | None = None  # recorded: another feature-set version or schema
    error: str | None = None  # anything else: the comparison failed
    paired: dict[str, Any] | None = None  # new minus current on the same rows, with its bootstrap interval


def evaluate_current(spark: SparkSession, settings: Settings, test: DataFrame, new_scored: DataFrame,
                     metric: str, replicates: int, seed: int) -> CurrentModel:
    """The current model's metrics on the new test rows, and the paired bootstrap of `metric` (new minus
    current, the same accounts resampled for both). Only what the model recorded (feature-set version,
    feature schema) makes it incompatible; any other failure is an error, never a pass."""
    pointer = R.read_pointer(spark, settings)
    if pointer is None:
        return CurrentModel()
    version = str(pointer["version"])
    try:
        metadata = R.load_metadata(spark, settings, version)
        problems = R.incompatibilities(metadata, settings.features.feature_set_version, test.schema)
        if problems:
            return CurrentModel(version, incompatible="; ".join(problems))
        # Persisted: the paired bootstrap and the four metrics read it; unpersisted, each re-ran the model's
        # encoding of the test rows (the demo's comparison took 18-19 s warm that way, 9-10 s persisted)
        scored = (score_rows(R.load_model(spark, settings, version).model, test)
                  .select(*KEYS, "label", P.OUTPUT_COL).persist(StorageLevel.MEMORY_AND_DISK))
        try:
            paired = M.paired_bootstrap_difference(new_scored, scored, metric, replicates, seed) if replicates else None
            return CurrentModel(version, {"roc_auc": M.roc_auc(scored), "pr_auc": M.pr_auc(scored),
                                          **M.probability_errors(scored)}, paired=paired)
        finally:
            scored.unpersist()
    except Exception as exc:  # noqa: BLE001 - reported as the promotion's failure, one line
        text = str(exc).strip()
        return CurrentModel(version, error=f"{type(exc).__name__}: {text.splitlines()[0] if text else ''}")


def evaluate_on_test(spark: SparkSession, settings: Settings, model: PipelineModel, test: DataFrame,
                     rows: int) -> tuple[dict[str, Any], list[dict[str, Any]], Any, CurrentModel]:
    """The registered model's metrics on the test snapshots (with bootstrap intervals), its calibration by
    decile, its score histogram, and the current model on the same rows (what promotion compares)."""
    ms = settings.model
    with progress.stage("train", f"evaluated on {progress.rows(rows)} test rows") as step:
        scored = score_rows(model, test).persist(StorageLevel.MEMORY_AND_DISK)
        try:
            metrics = M.evaluate(scored, read_truth(spark, settings))
            raw = M.probability_errors(scored, P.RAW_OUTPUT_COL)
            metrics.update(log_loss_raw=raw["log_loss"], brier_raw=raw["brier"],
                           roc_auc_raw=M.roc_auc(scored, P.RAW_OUTPUT_COL))
            deciles = [r.asDict() for r in M.calibration_by_decile(scored).collect()]
            metrics.update(M.calibration_errors(deciles))
            if ms.bootstrap_replicates:
                metrics["intervals"] = M.bootstrap_intervals(scored, ms.bootstrap_replicates, ms.seed)
            hist = score_histogram(scored)
            current = evaluate_current(spark, settings, test, scored, ms.promote_metric, ms.bootstrap_replicates,
                                       ms.seed)
        finally:
            scored.unpersist()
        step.done(f"evaluated on {progress.rows(rows)} test rows: "
                  + ", ".join(f"{k} {metrics[k]:.4f}" + interval_text(metrics, k)
                              for k in ("roc_auc", "pr_auc", "ece") if k in metrics))
    return metrics, deciles, hist, current


def interval_text(metrics: dict[str, Any], key: str) -> str:
    """` [low, high]` of `key`'s bootstrap interval when there is one, else nothing."""
    interval = metrics.get("intervals", {}).get(key)
    return f" [{interval['low']:.4f}, {interval['high']:.4f}]" if interval else ""


def promotion_decision(current: CurrentModel, metrics: dict[str, Any], metric: str,
                       tolerance: float) -> tuple[bool, str]:
    if current.error is not None:
        return False, (f"current model {current.version} could not be evaluated on the new test rows "
                       f"({current.error}); models/current unchanged")
    if current.incompatible is not None:
        return True, f"current model {current.version} is incompatible ({current.incompatible}): no comparison"
    return R.decide_promotion(metrics, current.metrics, metric, tolerance)


def log_to_mlflow(settings: Settings, version: str, metadata: dict[str, Any]) -> str:
    """Optional: one MLflow run with params, metrics and the version tag (skipped when not installed)."""
    if not settings.model.mlflow:
        return "off"
    try:
        import mlflow
    except ImportError:
        log.warning("train: model.mlflow is on but mlflow is not installed; skipped")
        return "skipped: mlflow not installed"
    with mlflow.start_run(run_name=version):
        mlflow.set_tag("churn_spark.version", version)
        mlflow.log_params({k: str(v) for k, v in metadata["params"].items()})
        mlflow.log_metrics({k: float(v) for k, v in metadata["metrics"].items() if isinstance(v, int | float)})
    return "logged"


# --- the job -------------------------------------------------------------------------------------


def run_train(spark: SparkSession, settings: Settings) -> dict[str, Any]:
    """Train, evaluate on the held-out later snapshots, report, register; promote if not worse."""
    lake, ms = Lakehouse.from_settings(settings), settings.model
    candidates(ms)  # refuse unknown parameters and missing optional packages before any data is read
    with progress.stage("train", "labelled dataset read") as step:
        labels, labels_v = read_delta_at(spark, lake.churn_labels, "gold.churn_labels")
        features, features_v = read_delta_at(spark, lake.churn_features, "gold.churn_features")
        fsv = settings.features.feature_set_version
        stats = snapshot_stats(labelled_rows(labels, features, fsv))  # counts need no layout
        if not stats:
            raise NotAvailableError(f"no labelled rows with feature_set_version {fsv!r} "
                                    f"(labels {lake.churn_labels}, features {lake.churn_features})")
        partitions = training_partitions(sum(n for n, _ in stats.values()), ms.rows_per_partition,
                                         int(spark.conf.get("spark.sql.shuffle.partitions") or "200"))
        dataset = labelled_dataset(labels, features, fsv, partitions)
        # The split gap is the labels' own horizon + grace, recorded with them (one definition, or refused);
        # labels that record none are taken as labelled with today's churn settings, and the summary says so.
        definition = definition_of_snapshots(labels, list(stats), settings.churn)
        split = plan_time_split(list(stats), definition.horizon_months, definition.grace_days,
                                ms.validation_snapshots, ms.test_snapshots, ms.train_end, refit=ms.refit)
        splits = split_summary(split, stats)
        step.done("{} snapshots labelled, {} rows (definition {}, gap {}); train {}..{}, validation {}..{}, "
                  "test {}..{}".format(
                      len(stats), progress.rows(sum(n for n, _ in stats.values())), definition.fingerprint,
                      split.as_dict()["gap"],
                      *[splits[s][k] for s in ("train", "validation", "test") for k in ("from", "to")]))
    if definition.note():
        log.warning("train: %s", definition.note())
    # Persisted whole: every fold, the refit and the test read their snapshots from it (recomputing the
    # join of the two Delta tables for each fit cost 3-5 s a fit on the demo's data).
    dataset = dataset.persist(StorageLevel.MEMORY_AND_DISK)
    try:
        result = _train(spark, settings, dataset, features, split, splits, stats,
                        {"labels": {"path": lake.churn_labels, "delta_version": labels_v,
                                    "definition": definition.as_dict()},
                         "features": {"path": lake.churn_features, "delta_version": features_v}})
        return {**result, "label_definition": definition.as_dict()}
    finally:
        dataset.unpersist()


def _train(spark: SparkSession, settings: Settings, dataset: DataFrame, features: DataFrame, split: TimeSplit,
           splits: dict[str, Any], stats: dict[dt.date, tuple[int, int]], tables: dict[str, Any]) -> dict[str, Any]:
    ms = settings.model
    train, validation, test = (filter_snapshots(dataset, days) for days in (split.train, split.validation, split.test))
    columns, empty = profile_columns(train, P.feature_columns(features.schema, ms.exclude_features),
                                     ms.missing_indicators, ms.cyclic_features)
    if not columns.numeric and not columns.categorical:
        raise ContractError("gold.churn_features has no usable feature column")

    def weighted(rows: DataFrame, days: Sequence[dt.date]) -> DataFrame:
        """Class weights from the fitted rows' own label rate: every fit (fold, final) balances its own
        classes, so raw probabilities mean the same for each and one calibrator fits them all."""
        return with_class_weight(rows, label_rate(stats, days)) if ms.class_weights else rows

    def prior(days: Sequence[dt.date]) -> float:
        """The prior logit a fit on `days` learns: even (0) with balanced weights, else its rows' churn rate."""
        return 0.0 if ms.class_weights else P.logit_of(label_rate(stats, days))

    def fit(c: Candidate, days: Sequence[dt.date]) -> PipelineModel:
        stops = stops_early(ms, c.family, days)
        pipeline, _ = P.build_pipeline(columns, c.family, c.params, ms.seed, weighted=ms.class_weights,
                                       early_stopping=stops)
        rows = weighted(filter_snapshots(dataset, days), days)
        return P.fit_pipeline(pipeline, with_latest_snapshot_held_out(rows, days, P.HELD_OUT_COL) if stops else rows)

    described = f"{len(columns.numeric)} numeric, {len(columns.categorical)} categorical features"
    cands = candidates(ms)
    results: list[FoldResults] = []
    if len(cands) > 1 or split.refit:
        with progress.stage("train", "fold comparison") as step:
            results = compare_on_folds(cands, fit, lambda days: filter_snapshots(dataset, days), split,
                                       ms.select_metric, ms.parallelism, prior)
            step.done(f"{len(cands)} candidate(s) on {len(split.folds)} expanding-window fold(s), "
                      f"mean {ms.select_metric}: " + ", ".join(
                          f"{r.candidate.family} {r.candidate.params or ''} {r.mean:.4f}".replace("  ", " ")
                          for r in results))
    best = max(results, key=lambda r: r.mean) if results else None
    for r in results:
        if r is not best:
            r.release()
    chosen = best.candidate if best else cands[0]
    table = selection_table(results, ms.select_metric)
    final_stops = stops_early(ms, chosen.family, split.final)
    early_stopping = {"enabled": final_stops, "held_out": max(split.final).isoformat() if final_stops else None}

    def final_fit() -> PipelineModel:
        if split.refit:
            what = (f"{chosen.family} refitted on {progress.rows(splits['refit']['rows'])} rows of {len(split.refit)} "
                    f"snapshots ({split.refit[0]}..{split.refit[-1]}; {described})")
        else:
            what = f"{chosen.family} fitted on {progress.rows(splits['train']['rows'])} rows ({described})"
        with progress.stage("train", what) as step:
            fitted = fit(chosen, split.final)
            if (trees := trees_of(fitted)) is not None:
                held_out = early_stopping["held_out"]
                step.done(f"{what}: {trees} trees" + (f", early stopping on {held_out}" if held_out else ""))
            return fitted

    def calibrate(rows: DataFrame) -> tuple[P.Calibration, dict[str, Any]]:
        with progress.stage("train", f"{ms.calibration} calibration fitted") as step:
            fitted_calibrator = P.fit_calibration(ms.calibration, rows, ms.seed)
            # the folds' predictions were centred by their fits' priors; the stage moves to the refit's own
            registered_prior = prior(split.final) if split.refit else 0.0
            calibrator = P.for_prior(fitted_calibrator, registered_prior)
            described_calibration = {**calibrator.describe(), "configured": ms.calibration,
                                     "fitted_on": calibration_source(split), "rows": rows.count(),
                                     "prior_logit": registered_prior}
            step.done(f"{ms.calibration} calibration fitted on {progress.rows(described_calibration['rows'])} "
                      f"out-of-time predictions ({described_calibration['fitted_on']})")
        return calibrator, described_calibration

    # Steps that need nothing of each other run side by side (`model.parallelism`): each is a chain of small
    # Spark jobs and driver-side planning that leaves a core idle (demo: refit and calibrator, then the test
    # evaluation and the drift reference).
    with ThreadPoolExecutor(max_workers=ms.parallelism) as pool:
        if split.refit:
            assert best is not None
            calibration_rows = best.pooled()
            refitted, calibrated = pool.submit(final_fit), pool.submit(calibrate, calibration_rows)
            try:
                fitted, (calibrator, calibration) = refitted.result(), calibrated.result()
            finally:
                for running in (refitted, calibrated):  # when one failed, the other may still read the predictions
                    running.exception()  # waits; the failure itself was raised by result()
                calibration_rows.unpersist()
                best.release()
        else:
            fitted = final_fit()
            calibration_rows = out_of_time_predictions([(fitted, validation)])
            try:
                calibrator, calibration = calibrate(calibration_rows)
            finally:
                calibration_rows.unpersist()
                if best is not None:
                    best.release()
        model = P.with_calibration(fitted, calibrator)
        if shifts_season(ms, chosen.family):
            model, calibration = with_seasonal_shift(model, calibration, dataset, split)

        def reference_of_training_rows() -> dict[str, Any]:
            with progress.stage("train", "drift reference") as step:
                # from the persisted dataset, not another read of gold.churn_features: the same rows (the
                # demo's stored reference came out identical), ~1 s less
                reference = drift_reference(model, dataset, split.train, columns, settings)
                step.done(f"drift reference: score and {len(reference['features'])} features on "
                          f"{progress.rows(reference['rows'])} training rows")
            return reference

        evaluated = pool.submit(evaluate_on_test, spark, settings, model, test, splits["test"]["rows"])
        referenced = pool.submit(reference_of_training_rows)
        (metrics, deciles, hist, current), reference = evaluated.result(), referenced.result()
    promote, reason = promotion_decision(current, metrics, ms.promote_metric, ms.promote_tolerance)
    if current.error is not None:
        log.warning("train: %s", reason)
    promotion = {"promoted": promote, "reason": reason, "metric": ms.promote_metric,
                 "tolerance": ms.promote_tolerance, "current_version": current.version,
                 "current_metrics_on_test": current.metrics, "paired_bootstrap": current.paired}

    version = R.new_version(chosen.family)
    selection = {"configured": ms.type, "metric": ms.select_metric, "chosen": chosen.family,
                 "candidates": [c.family for c in cands]}
    names = P.vector_feature_names(model, train.limit(0), columns)
    expl = P.explanation(model, names)
    trained_at = dt.datetime.now(dt.UTC).isoformat()
    metadata = {
        "version": version, "model_type": chosen.family, "trained_at": trained_at,
        "params": {**P.DEFAULT_PARAMS[chosen.family], **chosen.params},
        "trees": trees_of(model),
        "early_stopping": early_stopping,
        "search": table, "selection": selection, "calibration": calibration,
        "config": settings.model_dump(mode="json", include={"lakehouse", "churn", "features", "model"}),
        "metrics": metrics, "calibration_by_decile": deciles,
        "feature_columns": columns.as_dict(), "dropped_features": empty,
        "feature_schema": P.feature_schema(features.schema, columns, P.calibration_stage(model).input_columns()),
        "feature_names": names,
        "explanation": expl, "feature_set_version": settings.features.feature_set_version,
        "lineage": {"tables": tables, "split": _split_lineage(split, splits),
                    "code": code_version()},
        "promotion": promotion, "drift_reference": reference,
    }
    report = build_report({
        "version": version, "model_type": chosen.family, "trained_at": trained_at,
        "search": table, "selection": selection,
        "feature_set_version": settings.features.feature_set_version, "n_features": len(names),
        "calibration": calibration_text(calibration),
        "gap": split.as_dict()["gap"], "metrics": metrics, "splits": splits, "deciles": deciles,
        "explanation": expl, "promotion": promotion}, hist)
    with progress.stage("train", f"model {version} and its report saved"):
        root = R.save_version(spark, settings, version, model, metadata,
                              {f"report/{name}": data for name, data in report.items()})
    if current.error is not None:
        raise PromotionError(f"model {version} saved but not promoted: {reason}; fix the current model (or point "
                             "models/current at a version that loads) and rerun train")
    if promote:
        R.write_pointer(spark, settings, version, reason, ms.promote_metric, metrics.get(ms.promote_metric))
    log.info("train: model %s %s (%s)", version, "promoted to current" if promote else "NOT promoted", reason)
    return {
        "model_version": version, "model_type": chosen.family, "selection": selection,
        "promoted": promote, "promotion_reason": reason,
        "current_version": version if promote else current.version,
        "metrics": {k: metrics[k] for k in HEADLINE if k in metrics},
        "intervals": metrics.get("intervals"), "paired_bootstrap": current.paired,
        "metrics_detail": metrics, "report": f"{root}/report/report.html", "model_path": root,
        "rows": {k: v["rows"] for k, v in splits.items()},
        "snapshots": {k: f"{v['from']}..{v['to']}" for k, v in splits.items()},
        "lineage": {k: v["delta_version"] for k, v in tables.items()},
        "mlflow": log_to_mlflow(settings, version, metadata),
    }
