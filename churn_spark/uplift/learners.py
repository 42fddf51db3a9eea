"""Uplift meta-learners on Spark MLlib: the effect of a retention contact on an account's churn probability.

Input grain: one row per assignment (account, campaign) with the point-in-time features at `assigned_at` (the
features table's columns), `label` (1 = churned within the horizon), `treated` (1 = contacted, 0 = held out) and,
for the transformed-outcome learner, `propensity` (P(treated) recorded at assignment, in (0, 1)).
Uplift = p_control(x) - p_treatment(x): the churn probability a contact removes; higher = more worth contacting,
negative = a contact pushes the account out.

- **T-learner** (`t_learner`): one churn classifier per arm, each built by `train/pipeline.py:build_pipeline`,
  so features are encoded exactly as the churn model encodes them. Unweighted (no class weights): the difference
  of two probabilities needs probabilities on their natural scale, which class weights would inflate.
- **Transformed outcome** (`transformed_outcome`, Athey & Imbens): Z = Y ((1 - W) / (1 - e) - W / e) has
  E[Z | x] = P(churn | x, control) - P(churn | x, treated) = uplift(x) under random assignment with propensity e
  (the sign makes higher = more churn prevented). One MLlib regressor (LinearRegression for `lr`, GBTRegressor for
  `gbt`) on the same encoding stages regresses Z on the features: one model, all rows, the recorded propensity.
  Noisier than the T-learner per row, but it targets the difference directly instead of two levels.

A fitted learner is an `UpliftModel`: one PipelineModel per part (`control` and `treatment`, or `effect`) saved
under one folder with `uplift.json` (kind, family, feature columns) written last, so a job can register it.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from pyspark.ml import Estimator, Pipeline, PipelineModel
from pyspark.ml.regression import GBTRegressor, LinearRegression
from pyspark.sql import Column, DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql.types import StructType

from churn_spark.errors import ConfigError, ContractError, NotAvailableError
from churn_spark.train import pipeline as P
from churn_spark.train.registry import read_text, to_json, write_bytes

T_LEARNER = "t_learner"
TRANSFORMED_OUTCOME = "transformed_outcome"
TREATED = "treated"
PROPENSITY = "propensity"
UPLIFT = "uplift"
P_CONTROL = "p_control"
P_TREATMENT = "p_treatment"
TARGET_COL = "transformed_outcome"
PREDICTION_COL = "uplift_prediction"
MANIFEST = "uplift.json"
FORMAT_VERSION = 1
ASSIGNMENT_COLUMNS = ("treated", "propensity", "arm", "campaign_id", "assigned_at", "channel", "cost", "delivered",
                      "true_uplift")
"""Columns that describe the assignment or its truth, not the account: never features."""


@dataclass(frozen=True)
class UpliftModel:
    """A fitted uplift learner: `kind` (t_learner | transformed_outcome), the model family (`lr`, `gbt`, ...),
    the feature columns and the fitted parts by name (`control` + `treatment`, or `effect`)."""

    kind: str
    model_type: str
    columns: P.FeatureColumns
    parts: dict[str, PipelineModel]

    def describe(self) -> dict[str, Any]:
        """What `uplift.json` records (and a registry's metadata can embed)."""
        return {"format_version": FORMAT_VERSION, "kind": self.kind, "model_type": self.model_type,
                "parts": sorted(self.parts), "feature_columns": self.columns.as_dict()}


def uplift_feature_columns(schema: StructType, exclude: Sequence[str] = ()) -> P.FeatureColumns:
    """`train/pipeline.py:feature_columns` of an assignments table: the assignment's own columns are not features."""
    return P.feature_columns(schema, (*ASSIGNMENT_COLUMNS, *exclude))


def treated_flag(arm: Column) -> Column:
    """1 for the `treatment` arm, 0 for `control` (the interventions contract's values), null otherwise."""
    return F.when(arm == F.lit("treatment"), F.lit(1)).when(arm == F.lit("control"), F.lit(0))


def with_treated(assignments: DataFrame) -> DataFrame:
    """Campaign outcomes (`arm` column) with the `treated` 1/0 flag the learners and metrics read."""
    return assignments.withColumn(TREATED, treated_flag(F.col("arm")))


def transformed_outcome(label: Column, treated: Column, propensity: Column) -> Column:
    """Z = Y ((1 - W) / (1 - e) - W / e): its mean given x is p_control(x) - p_treatment(x) (churn prevented)."""
    y, w = label.cast("double"), treated.cast("double")
    return y * ((F.lit(1.0) - w) / (F.lit(1.0) - propensity) - w / propensity)


def _arm_counts(rows: DataFrame) -> tuple[int, int]:
    row = rows.agg(F.count(F.when(F.col(TREATED) == 1, 1)).alias("t"),
                   F.count(F.when(F.col(TREATED) == 0, 1)).alias("c")).first()
    return (int(row["t"]), int(row["c"])) if row is not None else (0, 0)


def fit_t_learner(rows: DataFrame, columns: P.FeatureColumns, model_type: str = "lr",
                  params: dict[str, Any] | None = None, seed: int = 0) -> UpliftModel:
    """Two churn classifiers (the churn model's Pipeline, unweighted), one on the control rows, one on the treated.
    Each fit reads `rows` several times: cache it when it is costly to compute. Every numeric column needs a
    value in each arm (`uplift.job.arm_columns` drops the others)."""
    treated, control = _arm_counts(rows)
    if not treated or not control:
        raise ContractError(f"the T-learner needs both arms: {treated} treated and {control} control rows")
    parts = {}
    for name, value in (("control", 0), ("treatment", 1)):
        pipeline, _ = P.build_pipeline(columns, model_type, params or {}, seed, weighted=False)
        parts[name] = pipeline.fit(rows.where(F.col(TREATED) == value))
    return UpliftModel(T_LEARNER, model_type, columns, parts)


def regressor(model_type: str, params: dict[str, Any], seed: int) -> Estimator:
    """The transformed outcome's regressor: the classifier family's defaults and `params` where the regressor has
    the same parameter (MLlib's GBT and linear models share maxIter, maxDepth, stepSize, regParam, ...)."""
    if model_type not in ("lr", "gbt"):
        raise ConfigError(f"the transformed-outcome learner supports lr and gbt, not {model_type}")
    est: Any = (GBTRegressor(seed=seed, lossType="squared") if model_type == "gbt"
                else LinearRegression(standardization=False))
    est.setParams(featuresCol=P.FEATURES_COL, labelCol=TARGET_COL, predictionCol=PREDICTION_COL)
    merged = {**P.DEFAULT_PARAMS[model_type], **params}
    unknown = [k for k in params if not est.hasParam(k)]
    if unknown:
        raise ConfigError(f"uplift params: unknown {model_type} regressor parameter(s): {', '.join(unknown)}")
    est.setParams(**{k: v for k, v in merged.items() if est.hasParam(k)})
    return est


def _check_propensity(rows: DataFrame) -> None:
    if PROPENSITY not in rows.columns:
        raise ContractError("the transformed-outcome learner needs the recorded `propensity` of each assignment")
    e = F.col(PROPENSITY)
    row = rows.agg(F.count(F.when(e.isNull() | (e <= 0) | (e >= 1), 1)).alias("bad")).first()
    if row is not None and row["bad"]:
        raise ContractError(f"{row['bad']} assignments have a propensity outside (0, 1) or none")


def fit_transformed_outcome(rows: DataFrame, columns: P.FeatureColumns, model_type: str = "lr",
                            params: dict[str, Any] | None = None, seed: int = 0) -> UpliftModel:
    """One regressor of the transformed outcome Z on the churn model's encoding of the features (all rows)."""
    reg = regressor(model_type, params or {}, seed)
    _check_propensity(rows)
    encoding, _ = P.build_pipeline(columns, model_type, {}, seed, weighted=False)
    stages = [*encoding.getStages()[:-1], reg]
    data = rows.withColumn(TARGET_COL, transformed_outcome(F.col(P.LABEL_COL), F.col(TREATED), F.col(PROPENSITY)))
    return UpliftModel(TRANSFORMED_OUTCOME, model_type, columns, {"effect": Pipeline(stages=stages).fit(data)})


LEARNERS: dict[str, Callable[..., UpliftModel]] = {T_LEARNER: fit_t_learner,
                                                   TRANSFORMED_OUTCOME: fit_transformed_outcome}


def fit_uplift(kind: str, rows: DataFrame, columns: P.FeatureColumns, model_type: str = "lr",
               params: dict[str, Any] | None = None, seed: int = 0) -> UpliftModel:
    """The learner `kind` (`t_learner` or `transformed_outcome`) fitted on `rows`."""
    if kind not in LEARNERS:
        raise ConfigError(f"unknown uplift learner {kind!r}: expected one of {', '.join(LEARNERS)}")
    return LEARNERS[kind](rows, columns, model_type, params, seed)


def _quoted(name: str) -> Column:
    return F.col("`" + name.replace("`", "``") + "`")


def predict_uplift(model: UpliftModel, features_df: DataFrame) -> DataFrame:
    """`features_df` plus `uplift`, `p_control` and `p_treatment` (the last two null for a transformed-outcome
    model). The parts are applied one after the other to the same rows: a projection, no join."""
    keep = [_quoted(c) for c in features_df.columns]
    if model.kind == TRANSFORMED_OUTCOME:
        return model.parts["effect"].transform(features_df).select(
            *keep, F.col(PREDICTION_COL).cast("double").alias(UPLIFT),
            F.lit(None).cast("double").alias(P_CONTROL), F.lit(None).cast("double").alias(P_TREATMENT))
    probability = P.positive_probability(F.col(P.PROBABILITY_COL)).cast("double")
    with_control = model.parts["control"].transform(features_df).select(*keep, probability.alias(P_CONTROL))
    both = model.parts["treatment"].transform(with_control).select(*keep, P_CONTROL, probability.alias(P_TREATMENT))
    return both.select(*keep, (F.col(P_CONTROL) - F.col(P_TREATMENT)).alias(UPLIFT), P_CONTROL, P_TREATMENT)


def save_uplift_model(spark: SparkSession, model: UpliftModel, path: str) -> str:
    """Each part under `path/<part>`, then `path/uplift.json` (last: a folder without it is an incomplete write)."""
    for name, part in model.parts.items():
        part.write().overwrite().save(f"{path}/{name}")
    write_bytes(spark, f"{path}/{MANIFEST}", to_json(model.describe()))
    return path


def load_uplift_model(spark: SparkSession, path: str) -> UpliftModel:
    """The model `save_uplift_model` wrote under `path`."""
    text = read_text(spark, f"{path}/{MANIFEST}")
    if text is None:
        raise NotAvailableError(f"no uplift model (or an incomplete one) under {path}: {MANIFEST} is missing")
    meta = json.loads(text)
    columns = P.FeatureColumns(**meta["feature_columns"])
    parts = {name: PipelineModel.load(f"{path}/{name}") for name in meta["parts"]}
    return UpliftModel(meta["kind"], meta["model_type"], columns, parts)
