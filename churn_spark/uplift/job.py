"""`churn-spark uplift train` as a library function (the CLI, jobs/ and config wiring are not here yet):
campaign outcomes + point-in-time features at `assigned_at` -> split by campaign date -> fit the learner ->
evaluate on the later campaigns (Qini, AUUC, uplift@k with intervals; oracle and true saved churners on generated
data; targeting by churn risk beside it when a churn model is registered) -> register under
`<lakehouse>/models/uplift/<version>` and move `models/uplift/current` when the Qini is not worse.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from pyspark import StorageLevel
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from churn_spark import io, progress
from churn_spark.config import Settings
from churn_spark.errors import ConfigError, ContractError, NotAvailableError
from churn_spark.features import job as features_job
from churn_spark.lakehouse import Lakehouse
from churn_spark.train import pipeline as P
from churn_spark.train import registry as R
from churn_spark.train.job import profile_columns
from churn_spark.train.split import label_window_end
from churn_spark.uplift import learners as L
from churn_spark.uplift import metrics as M
from churn_spark.uplift.campaigns import campaign_outcomes

UPLIFT_DIR = "uplift"
POINTER = "current"  # <models>/uplift/current, the file score/job.py reads (UPLIFT_POINTER)
OUTCOME_COLUMNS = ("campaign_id", "account_id", "as_of_date", "arm", "propensity", "label")


@dataclass(frozen=True)
class UpliftTrainOptions:
    """What `config.py` does not hold yet: the learner registered, the one compared beside it (evaluated on the
    same test rows, never used to choose: the test campaigns stay honest), the family and its params, the number
    of latest assignment dates held out for the test, bootstrap replicates and the promotion tolerance on the
    Qini coefficient."""

    kind: str = L.T_LEARNER
    compare: tuple[str, ...] = (L.TRANSFORMED_OUTCOME,)
    model_type: str = "lr"
    params: dict[str, Any] = field(default_factory=dict)
    test_dates: int = 1
    replicates: int = 200
    promote_tolerance: float = 0.0


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


def features_at(spark: SparkSession, settings: Settings, dates: Sequence[dt.date]) -> tuple[DataFrame, DataFrame]:
    """(campaign outcomes, features at the assignment dates) from one read of the inputs, with the features
    job's own code (point in time at each `assigned_at`)."""
    inputs = features_job.load_inputs(spark, settings)
    outcomes = campaign_outcomes(spark, settings, inputs)
    event_types = features_job.resolve_event_types(settings, inputs.events, list(dates))
    inputs = replace(inputs, events=features_job.without_new_event_types(inputs.events, event_types))
    _, features = features_job.labels_and_features(inputs, settings, list(dates), outcomes.data_end,
                                                   event_types.members)
    return outcomes.outcomes, features


def assignment_dates(spark: SparkSession, settings: Settings) -> list[dt.date]:
    """The distinct `assigned_at` of the conformed campaign log (a tiny aggregate)."""
    conformed = io.read_input(spark, settings, "interventions")
    if conformed is None:
        raise ContractError("no campaign log: set inputs.interventions (docs/contract.md, interventions)")
    return sorted(r["assigned_at"] for r in conformed.good.select("assigned_at").distinct().collect())


def evaluate(model: L.UpliftModel, test: DataFrame, options: UpliftTrainOptions, seed: int) -> dict[str, Any]:
    """`metrics.evaluate_uplift` of the model's predictions on the test rows (oracle ones with `true_uplift`)."""
    scored = L.predict_uplift(model, test)
    truth = M.TRUE_UPLIFT if M.TRUE_UPLIFT in test.columns else None
    return M.evaluate_uplift(scored, truth_col=truth, replicates=options.replicates, seed=seed)


def risk_targeting(spark: SparkSession, settings: Settings, test: DataFrame) -> dict[str, Any] | None:
    """On generated data, with a registered churn model: the true churners saved by contacting the top k % by
    churn risk (the `current` churn model's probability at `assigned_at`), to set beside the uplift's. That model
    may have been trained on snapshots after the test campaigns: a comparison, not an honest risk metric."""
    if M.TRUE_UPLIFT not in test.columns:
        return None
    try:
        churn = R.load_model(spark, settings)
    except NotAvailableError:
        return None
    problems = R.incompatibilities(churn.metadata, settings.features.feature_set_version, test.schema)
    if problems:
        return {"churn_model_version": churn.version, "unavailable": "; ".join(problems)}
    scored = P.predict(churn.model, test).drop(P.FEATURES_COL)
    return {"churn_model_version": churn.version,
            **M.true_saved_at(scored, M.TRUE_UPLIFT, score_col="churn_probability")}


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


def promotion(spark: SparkSession, settings: Settings, new_qini: float, test: DataFrame,
              options: UpliftTrainOptions) -> dict[str, Any]:
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
    promoted = new_qini >= current_qini - options.promote_tolerance
    return {"promoted": promoted, "current_qini_coefficient": current_qini,
            "reason": f"qini_coefficient {new_qini:.4f} {'>=' if promoted else '<'} current {current_qini:.4f}"
                      f" - {options.promote_tolerance}"}


def run_uplift_train(spark: SparkSession, settings: Settings, options: UpliftTrainOptions | None = None
                     ) -> dict[str, Any]:
    """Fit, evaluate, register and maybe promote an uplift model; returns the run summary's `result`."""
    opts = options or UpliftTrainOptions()
    seed, churn = settings.model.seed, settings.churn
    dates = assignment_dates(spark, settings)
    train_dates, test_dates = plan_campaign_split(dates, churn.horizon_months, churn.grace_days, opts.test_dates)
    outcomes, features = features_at(spark, settings, dates)
    rows = with_true_uplift(assignment_rows(outcomes, features), read_truth(spark, settings))
    rows = rows.persist(StorageLevel.MEMORY_AND_DISK)
    try:
        train = rows.where(F.col("as_of_date").isin(train_dates))
        test = rows.where(F.col("as_of_date").isin(test_dates))
        cols = arm_columns(train, L.uplift_feature_columns(features.schema, settings.model.exclude_features),
                           settings.model.missing_indicators, settings.model.cyclic_features)
        with progress.stage("uplift", "fit") as step:
            models = {k: L.fit_uplift(k, train, cols, opts.model_type, opts.params, seed)
                      for k in dict.fromkeys((opts.kind, *opts.compare))}
            step.done(f"{', '.join(models)} ({opts.model_type}) fitted on {len(train_dates)} campaign date(s)")
        with progress.stage("uplift", "evaluate") as step:
            metrics = {k: evaluate(m, test, opts, seed) for k, m in models.items()}
            step.done(f"qini_coefficient {metrics[opts.kind]['qini_coefficient']:.4f} on {len(test_dates)} "
                      f"test date(s)")
        version = R.new_version(f"uplift-{opts.kind.replace('_', '-')}")
        metadata = {"version": version, "kind": opts.kind, "model_type": opts.model_type, "params": opts.params,
                    "trained_at": dt.datetime.now(dt.UTC).isoformat(),
                    "split": {"train": [d.isoformat() for d in train_dates],
                              "test": [d.isoformat() for d in test_dates]},
                    "feature_columns": cols.as_dict(), "metrics": metrics[opts.kind],
                    "candidates": {k: v for k, v in metrics.items() if k != opts.kind},
                    "risk_targeting": risk_targeting(spark, settings, test)}
        path = save_version(spark, settings, models[opts.kind], metadata)
        decision = promotion(spark, settings, metrics[opts.kind]["qini_coefficient"], test, opts)
        if decision["promoted"]:
            R.write_bytes(spark, f"{uplift_root(settings)}/{POINTER}",
                          R.to_json({"version": version, "promoted_at": dt.datetime.now(dt.UTC).isoformat(),
                                     "reason": decision["reason"]}))
        return {**metadata, "path": path, "promotion": decision}
    finally:
        rows.unpersist()
