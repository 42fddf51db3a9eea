"""`churn-spark uplift train` as a library function (settings: `uplift:` in config.py): campaign outcomes +
point-in-time features at `assigned_at` -> split by campaign date -> a short feature list and the
regularisation chosen on the training campaigns -> fit the learner -> evaluate on the later campaigns (Qini, AUUC,
uplift@k with intervals; oracle and true saved churners on generated data; targeting by churn risk beside it
when a churn model is registered) -> register under `<lakehouse>/models/uplift/<version>` and move
`models/uplift/current` when the Qini is not worse.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Sequence
from dataclasses import replace
from typing import Any

from pyspark import StorageLevel
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from churn_spark import io, progress
from churn_spark.config import Settings, TargetingSettings
from churn_spark.errors import ConfigError, ContractError, NotAvailableError
from churn_spark.features import job as features_job
from churn_spark.lakehouse import Lakehouse
from churn_spark.score.reasons import source_importances, top_sources
from churn_spark.score.targeting import RISK, UPLIFT, churn_targets
from churn_spark.train import pipeline as P
from churn_spark.train import registry as R
from churn_spark.train.job import profile_columns
from churn_spark.train.split import label_window_end
from churn_spark.uplift import learners as L
from churn_spark.uplift import metrics as M
from churn_spark.uplift import report as UR
from churn_spark.uplift.campaigns import CampaignOutcomes, campaign_outcomes

UPLIFT_DIR = "uplift"
POINTER = "current"  # <models>/uplift/current, the file score/job.py reads (UPLIFT_POINTER)
PREDICTED = "predicted_uplift"  # the uplift model's prediction, kept beside targeting's own `uplift` column
OUTCOME_COLUMNS = ("campaign_id", "account_id", "as_of_date", "arm", "propensity", "label")


def uplift_root(settings: Settings) -> str:
    return f"{Lakehouse.from_settings(settings).models.rstrip('/')}/{UPLIFT_DIR}"


def plan_campaign_split(dates: Sequence[dt.date], horizon_months: int, grace_days: int,
                        test_dates: int) -> tuple[list[dt.date], list[dt.date]]:
    """(train, test) assignment dates: test = the last `test_dates`; train = the dates whose label window
    (D, D + horizon + grace] ends by the first test date, so no training outcome sees the test period."""
    days = sorted(set(dates))
    if len(days) <= test_dates:
        raise ConfigError(f"need more than {test_dates} campaign date(s) to hold out {test_dates} for the test, "
                          f"found {len(days)}")
    test = days[-test_dates:]
    train = [d for d in days if label_window_end(d, horizon_months, grace_days) <= test[0]]
    if not train:
        raise ConfigError(f"no training campaign: none has its label window ({horizon_months} months + {grace_days} "
                          f"days) ending by the first test campaign {test[0]} (campaigns {days[0]} .. {days[-1]})")
    return train, test


def assignment_rows(outcomes: DataFrame, features: DataFrame) -> DataFrame:
    """One row per labelled assignment with the account's features at `assigned_at` (= `as_of_date`) and the
    `treated` flag; assignments without a feature row are dropped (none when both come from the same inputs)."""
    return L.with_treated(outcomes.select(*OUTCOME_COLUMNS).join(features, ["account_id", "as_of_date"]))


def arm_columns(train: DataFrame, columns: P.FeatureColumns, indicators: bool,
                cycles: dict[str, int] | None = None) -> P.FeatureColumns:
    """`train.job.profile_columns` per arm: a numeric column without any value in one arm is dropped (the
    T-learner's Imputer of that arm has nothing to impute from; a 20 % holdout often lacks a rare column); a
    missing flag for the columns with gaps in either arm."""
    treated = F.col(L.TREATED) == 1
    control, _ = profile_columns(train.where(~treated), columns, indicators, cycles)
    both, _ = profile_columns(train.where(treated), replace(columns, numeric=control.numeric), indicators, cycles)
    flags = [c for c in both.numeric if c in control.missing_indicators or c in both.missing_indicators]
    return replace(both, missing_indicators=flags)


def with_true_uplift(rows: DataFrame, truth: DataFrame | None) -> DataFrame:
    """`true_uplift` from raw/intervention_truth (generated data) joined on (campaign, account); as is without."""
    if truth is None:
        return rows
    return rows.join(truth.select("campaign_id", "account_id", F.col("uplift").alias(M.TRUE_UPLIFT)),
                     ["campaign_id", "account_id"], "left")


def read_truth(spark: SparkSession, settings: Settings) -> DataFrame | None:
    """raw/intervention_truth when the generator wrote it, else None."""
    path = Lakehouse.from_settings(settings).path("raw/intervention_truth")
    return io.read_version(spark, path, v) if (v := io.table_version(spark, path)) is not None else None


def outcome_dates(outcomes: DataFrame) -> list[dt.date]:
    """The distinct `as_of_date` (= `assigned_at`) of the labelled assignments (a tiny aggregate): a date whose
    assignments are all censored or ineligible is no campaign to train or test on."""
    return sorted(r["as_of_date"] for r in outcomes.select("as_of_date").distinct().collect())


def features_at(settings: Settings, inputs: features_job.FeatureInputs, data_end: dt.date,
                dates: Sequence[dt.date]) -> DataFrame:
    """The features at the assignment dates with the features job's own code (point in time at each
    `assigned_at`), from the inputs already read for the outcomes."""
    event_types = features_job.resolve_event_types(settings, inputs.events, list(dates), inputs.raw_event_types)
    inputs = replace(inputs, events=features_job.without_new_event_types(inputs.events, event_types))
    _, features = features_job.labels_and_features(inputs, settings, list(dates), data_end, event_types.members)
    return features


def read_campaigns(spark: SparkSession, settings: Settings) -> tuple[CampaignOutcomes, DataFrame, list[dt.date]]:
    """(campaign outcomes, features at their dates, the dates) from one read of the inputs and one read of the
    campaign log."""
    inputs = features_job.load_inputs(spark, settings)
    campaigns = campaign_outcomes(spark, settings, inputs)
    dates = outcome_dates(campaigns.outcomes)
    if not dates:
        raise ContractError(f"no labelled campaign assignment: {campaigns.counts}")
    return campaigns, features_at(settings, inputs, campaigns.data_end, dates), dates


def restricted_columns(columns: P.FeatureColumns, keep: Sequence[str] | None) -> P.FeatureColumns:
    """`columns` limited to the features in `keep` (None: all), in `columns`' order."""
    if keep is None:
        return columns
    kept = set(keep)
    return P.FeatureColumns([c for c in columns.numeric if c in kept], [c for c in columns.categorical if c in kept],
                            [c for c in columns.missing_indicators if c in kept],
                            {c: p for c, p in columns.cyclic.items() if c in kept})


def chosen_features(spark: SparkSession, settings: Settings, features: DataFrame) -> tuple[list[str] | None, str]:
    """(the features the learners read, None for all; where the list comes from): `uplift.features`, else the
    registered churn model's `uplift.max_features` most important ones that the rows have. The churn model may
    have seen later snapshots than the test campaigns: it only picks columns, and the report says so."""
    u = settings.uplift
    if u.features:
        if missing := sorted(set(u.features) - set(features.columns)):
            raise ConfigError(f"uplift.features: not feature columns: {', '.join(missing)}")
        return list(u.features), "uplift.features"
    if u.max_features is None:
        return None, "all features (uplift.max_features: null)"
    try:
        churn = R.load_model(spark, settings)
    except NotAvailableError:
        return None, "all features: no churn model registered to rank them"
    if R.incompatibilities(churn.metadata, settings.features.feature_set_version, features.schema):
        return None, f"all features: churn model {churn.version} cannot read these features"
    ranked = top_sources(source_importances(churn.model, features.limit(0)), u.max_features)
    return ranked, f"top {u.max_features} features of churn model {churn.version}"


def check_arm_rows(train: DataFrame, minimum: int) -> None:
    """A one-line error when either arm of the training assignments has fewer than `minimum` rows."""
    treated, control = L.arm_counts(train)
    if min(treated, control) < minimum:
        raise ContractError(f"uplift training needs at least {minimum} assignments per arm (uplift.min_rows_per_arm)"
                            f": {treated} treated and {control} control on the training campaigns")


def evaluate(scored: DataFrame, replicates: int, seed: int) -> dict[str, Any]:
    """`metrics.evaluate_uplift` of predicted test rows (`uplift`; oracle metrics when they carry `true_uplift`)."""
    truth = M.TRUE_UPLIFT if M.TRUE_UPLIFT in scored.columns else None
    return M.evaluate_uplift(scored, truth_col=truth, replicates=replicates, seed=seed)


def with_churn_risk(spark: SparkSession, settings: Settings, rows: DataFrame
                    ) -> tuple[DataFrame, dict[str, Any] | None]:
    """(`rows` plus the registered churn model's `churn_probability`, {churn_model_version[, unavailable]}) for
    the risk side of the comparison; (`rows`, None) when no churn model is registered. The model is loaded and
    applied once, for both the run summary's `risk_targeting` and the report. That model may have been trained
    on snapshots after the test campaigns: a comparison, not an honest risk metric."""
    try:
        churn = R.load_model(spark, settings)
    except NotAvailableError:
        return rows, None
    problems = R.incompatibilities(churn.metadata, settings.features.feature_set_version, rows.schema)
    if problems:
        return rows, {"churn_model_version": churn.version, "unavailable": "; ".join(problems)}
    return (P.predict(churn.model, rows).drop(P.FEATURES_COL, P.RAW_OUTPUT_COL),
            {"churn_model_version": churn.version})


def risk_targeting(scored: DataFrame, churn: dict[str, Any] | None) -> dict[str, Any] | None:
    """On generated data, with a usable churn model: the true churners saved by contacting the top k % by churn
    risk (`churn_probability` at `assigned_at`), to set beside the uplift's."""
    if M.TRUE_UPLIFT not in scored.columns or churn is None:
        return None
    if UR.RISK not in scored.columns:
        return churn
    return {**churn, **M.true_saved_at(scored, M.TRUE_UPLIFT, score_col=UR.RISK)}


def save_version(spark: SparkSession, settings: Settings, model: L.UpliftModel, metadata: dict[str, Any]) -> str:
    """`<models>/uplift/<version>`: the learner's parts and uplift.json, then metadata.json last."""
    root = f"{uplift_root(settings)}/{metadata['version']}"
    L.save_uplift_model(spark, model, root)
    R.write_bytes(spark, f"{root}/{R.METADATA}", R.to_json(metadata))
    return root


def load_registered(spark: SparkSession, settings: Settings, version: str | None = None) -> L.UpliftModel:
    """The registered uplift model `version` (default: the one `models/uplift/current` names)."""
    if version is None:
        text = R.read_text(spark, f"{uplift_root(settings)}/{POINTER}")
        if not text:
            raise NotAvailableError("no uplift model registered: run churn-spark uplift train")
        version = str(json.loads(text)["version"])
    return L.load_uplift_model(spark, f"{uplift_root(settings)}/{version}")


def registered_metadata(spark: SparkSession, settings: Settings) -> dict[str, Any]:
    """The metadata (metrics, candidates, risk comparison, split) of the current uplift model: for the
    notebook and reports; NotAvailableError when none is registered."""
    text = R.read_text(spark, f"{uplift_root(settings)}/{POINTER}")
    if not text:
        raise NotAvailableError("no uplift model registered: run churn-spark uplift train")
    version = str(json.loads(text)["version"])
    meta = R.read_text(spark, f"{uplift_root(settings)}/{version}/{R.METADATA}")
    if meta is None:
        raise NotAvailableError(f"uplift model {version} has no {R.METADATA}")
    return dict(json.loads(meta))


def promotion(spark: SparkSession, settings: Settings, new_qini: float, test: DataFrame) -> dict[str, Any]:
    """Promote unless the current model's Qini coefficient on the same test rows beats the new one by more than
    the tolerance. The first model is always promoted; a current model whose features the test rows lack is
    replaced (the reason says so). Any other failure propagates: the new version stays registered, unpromoted."""
    try:
        current = load_registered(spark, settings)
    except NotAvailableError:
        return {"promoted": True, "reason": "first uplift model"}
    needed = set(current.columns.numeric) | set(current.columns.categorical)
    if missing := sorted(needed - set(test.columns)):
        return {"promoted": True, "reason": f"current model reads features the new rows lack: {missing}"}
    current_qini = M.uplift_metrics(L.predict_uplift(current, test), fractions=())["qini_coefficient"]
    promoted = new_qini >= current_qini - settings.uplift.promote_tolerance
    return {"promoted": promoted, "current_qini_coefficient": current_qini,
            "reason": f"qini_coefficient {new_qini:.4f} {'>=' if promoted else '<'} current {current_qini:.4f}"
                      f" - {settings.uplift.promote_tolerance}"}


def fit_learners(train: DataFrame, cols: P.FeatureColumns, settings: Settings
                 ) -> tuple[dict[str, L.UpliftModel], dict[str, Any]]:
    """The configured learner and the compared ones, each with its regularisation searched on `train`; returns
    the fitted models and, per learner, the chosen params and the grid's out-of-fold Qini."""
    u, seed = settings.uplift, settings.model.seed
    grid = u.param_grid or L.DEFAULT_GRIDS[u.family]
    kinds = list(dict.fromkeys((u.learner, *u.compare)))
    chosen = L.search_params(kinds, train, cols, u.family, {**L.UPLIFT_PARAMS[u.family], **u.params}, grid, u.folds,
                             seed)
    models = L.fit_learners({kind: params for kind, (params, _) in chosen.items()}, train, cols, u.family, seed)
    return models, {kind: {"params": params, "tried": tried} for kind, (params, tried) in chosen.items()}


def targeting_totals(scored: DataFrame, targeting: TargetingSettings) -> dict[str, Any]:
    """The target list `targeting` selects from `scored` (`churn_probability`, `mrr`, `uplift` and the model's
    `predicted_uplift`), summed: contacts, money spent, the risk mode's own expected value, and the churners the
    uplift model expects the contacts to save (the sum of their predicted uplift). One small aggregate."""
    row = churn_targets(scored, targeting).agg(
        F.count(F.lit(1)).alias("contacts"), F.sum("contact_cost").alias("cost"),
        F.sum("expected_value").alias("expected_value"), F.sum(PREDICTED).alias("saved")).first()
    assert row is not None
    return {"mode": targeting.mode, "contacts": int(row["contacts"]), "cost": round(float(row["cost"] or 0.0), 2),
            "expected_value": round(float(row["expected_value"] or 0.0), 2),
            "expected_saved_churners": round(float(row["saved"] or 0.0), 4)}


def run_targeting_comparison(spark: SparkSession, settings: Settings, as_of: dt.date) -> dict[str, Any]:
    """Both target lists of `as_of` at the same limits, valued by the registered uplift model: the accounts risk
    targeting contacts and the ones uplift targeting contacts, with the churners each list is expected to save.
    Reads the scores and features `score` wrote for `as_of`; writes nothing."""
    lake = Lakehouse.from_settings(settings)
    where = io.slice_predicate(equals={"as_of_date": as_of})
    pointer = R.read_pointer(spark, settings)
    if pointer is None or not io.table_exists(spark, lake.churn_scores):
        raise NotAvailableError(f"no scores of {as_of} to compare: run churn-spark score first")
    scores = io.read_slice(spark, lake.churn_scores, where).where(F.col("model_version") == pointer["version"])
    features = io.read_slice(spark, lake.churn_features, where).drop("config_fingerprint")
    mrr = settings.scoring.targeting.mrr_column
    predicted = L.predict_uplift(load_registered(spark, settings), features).select(
        "account_id", F.col(mrr).alias("mrr"), F.col(L.UPLIFT).alias(PREDICTED))
    scored = (scores.select("account_id", "churn_probability").join(predicted, "account_id", "left")
              .withColumn(L.UPLIFT, F.col(PREDICTED)).persist(StorageLevel.MEMORY_AND_DISK))
    try:
        targeting = settings.scoring.targeting
        lists = {mode: targeting_totals(scored, targeting.model_copy(update={"mode": mode})) for mode in (RISK, UPLIFT)}
    finally:
        scored.unpersist()
    return {"as_of_date": as_of.isoformat(), "churn_model_version": pointer["version"], **lists}


def write_report(spark: SparkSession, settings: Settings, scored: DataFrame, churn_version: str | None,
                 metadata: dict[str, Any]) -> str:
    """`<models>/uplift/<version>/report/` (uplift/report.py) from the predicted test assignments (with the churn
    risk of model `churn_version` when one could score them); returns the page's path. Written before the version's
    metadata.json, which marks the version complete."""
    keep = [c for c in (*OUTCOME_COLUMNS, L.TREATED, L.UPLIFT, M.TRUE_UPLIFT, UR.RISK) if c in scored.columns]
    files = UR.build_report({**metadata, "churn_model_version": churn_version}, scored.select(*keep),
                            settings.scoring.targeting.cost_per_contact,
                            M.TRUE_UPLIFT if M.TRUE_UPLIFT in scored.columns else None)
    root = f"{uplift_root(settings)}/{metadata['version']}/report"
    for name, data in files.items():
        R.write_bytes(spark, f"{root}/{name}", data)
    return f"{root}/report.html"


def run_uplift_train(spark: SparkSession, settings: Settings) -> dict[str, Any]:
    """Fit, evaluate, register and maybe promote an uplift model; returns the run summary's `result`."""
    u, seed, churn = settings.uplift, settings.model.seed, settings.churn
    campaigns, features, dates = read_campaigns(spark, settings)
    train_dates, test_dates = plan_campaign_split(dates, churn.horizon_months, churn.grace_days, u.test_dates)
    rows = with_true_uplift(assignment_rows(campaigns.outcomes, features), read_truth(spark, settings))
    rows = rows.persist(StorageLevel.MEMORY_AND_DISK)
    try:
        train = rows.where(F.col("as_of_date").isin(train_dates))
        test = rows.where(F.col("as_of_date").isin(test_dates))
        check_arm_rows(train, u.min_rows_per_arm)
        keep, selection = chosen_features(spark, settings, features)
        all_columns = L.uplift_feature_columns(features.schema, settings.model.exclude_features)
        cols = arm_columns(train, restricted_columns(all_columns, keep), settings.model.missing_indicators,
                           settings.model.cyclic_features)
        with progress.stage("uplift", "fit") as step:
            models, search = fit_learners(train, cols, settings)
            step.done(f"{', '.join(models)} ({u.family}) fitted on {len(train_dates)} campaign date(s), "
                      f"{len(cols.numeric) + len(cols.categorical)} features")
        # the test rows are predicted once by the registered learner and once by the churn model: the metrics,
        # the risk comparison and the report all read that one persisted frame
        test_risk, risk_model = with_churn_risk(spark, settings, test)
        scored = L.predict_uplift(models[u.learner], test_risk).persist(StorageLevel.MEMORY_AND_DISK)
        try:
            with progress.stage("uplift", "evaluate") as step:
                metrics = {k: evaluate(scored if k == u.learner else L.predict_uplift(m, test),
                                       u.bootstrap_replicates, seed) for k, m in models.items()}
                step.done(f"qini_coefficient {metrics[u.learner]['qini_coefficient']:.4f} on {len(test_dates)} "
                          f"test date(s)")
            version = R.new_version(f"uplift-{u.learner.replace('_', '-')}")
            metadata = {"version": version, "kind": u.learner, "model_type": u.family,
                        "params": search[u.learner]["params"], "trained_at": dt.datetime.now(dt.UTC).isoformat(),
                        "campaigns": campaigns.summary(),
                        "split": {"train": [d.isoformat() for d in train_dates],
                                  "test": [d.isoformat() for d in test_dates]},
                        "feature_selection": selection, "feature_columns": cols.as_dict(), "search": search,
                        "metrics": metrics[u.learner],
                        "candidates": {k: v for k, v in metrics.items() if k != u.learner},
                        "risk_targeting": risk_targeting(scored, risk_model)}
            with progress.stage("uplift", "report") as step:
                risk_version = risk_model["churn_model_version"] if risk_model and UR.RISK in scored.columns else None
                report = write_report(spark, settings, scored, risk_version, metadata)
                step.done(f"report {report}")
        finally:
            scored.unpersist()
        path = save_version(spark, settings, models[u.learner], metadata)
        decision = promotion(spark, settings, metrics[u.learner]["qini_coefficient"], test)
        if decision["promoted"]:
            R.write_bytes(spark, f"{uplift_root(settings)}/{POINTER}",
                          R.to_json({"version": version, "promoted_at": dt.datetime.now(dt.UTC).isoformat(),
                                     "reason": decision["reason"]}))
        return {**metadata, "path": path, "report": report, "promotion": decision}
    finally:
        rows.unpersist()
