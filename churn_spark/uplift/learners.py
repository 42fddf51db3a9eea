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

- **X-learner** (`x_learner`, Künzel et al. 2019): the T-learner's two classifiers, then the imputed effect of
  each assignment, D = p_control(x) - Y for a treated row and Y - p_treatment(x) for a control row (each arm's
  outcome against the other arm's model), regressed on the features per arm (`effect_control`,
  `effect_treatment`); uplift = e * tau_control(x) + (1 - e) * tau_treatment(x) with e the mean recorded
  propensity of the training rows (`constants`): the estimate built on the other, larger arm's model gets the
  larger weight. It regresses the effect directly, so two probabilities' noise does not become the ranking.

Few campaigns give a few hundred assignments for a few hundred features, and two over-fitted probabilities
differ wildly: `search_params` chooses the regularisation (a grid of MLlib params, `DEFAULT_GRIDS`) by the Qini
coefficient of out-of-fold predictions over account folds of the training rows only.

A fitted learner is an `UpliftModel`: one PipelineModel per part (`control` and `treatment`, or `effect`) saved
under one folder with `uplift.json` (kind, family, feature columns, constants) written last, so a job can
register it.
"""

from __future__ import annotations

import functools
import itertools
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from pyspark.ml import Estimator, Pipeline, PipelineModel
from pyspark.ml.regression import GBTRegressor, LinearRegression
from pyspark.sql import Column, DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql.types import StructType

from churn_spark.errors import ConfigError, ContractError, NotAvailableError
from churn_spark.train import pipeline as P
from churn_spark.train.registry import read_text, to_json, write_bytes
from churn_spark.uplift import metrics as M

T_LEARNER = "t_learner"
X_LEARNER = "x_learner"
TRANSFORMED_OUTCOME = "transformed_outcome"
CONTROL_WEIGHT = "control_weight"  # the X-learner's e: weight of tau_control in the combined uplift
FOLD = "__fold"
DEFAULT_GRIDS: dict[str, dict[str, list[Any]]] = {"lr": {"regParam": [0.1, 1.0, 10.0]},
                                                  "gbt": {"maxDepth": [2, 4]}}
"""The regularisation searched when `uplift.param_grid` is empty: L2 strength on standardised inputs (lr), tree
depth (gbt, whose defaults already ask 20 rows per leaf). On the 1,500-account generated run the out-of-fold
Qini grew with regParam over 0.01, 0.1, 1.0 for all three learners (docs/uplift.md), so the grid starts at 0.1."""
UPLIFT_PARAMS: dict[str, dict[str, Any]] = {"lr": {"maxIter": 50}, "gbt": {}}
"""Over the churn model's family defaults, under `uplift.params`: a regularised logistic regression on a few
hundred rows converges well before 100 L-BFGS iterations, and each iteration is a Spark job (dozens of fits in
the search)."""
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
    constants: dict[str, float] = field(default_factory=dict)

    def describe(self) -> dict[str, Any]:
        """What `uplift.json` records (and a registry's metadata can embed)."""
        return {"format_version": FORMAT_VERSION, "kind": self.kind, "model_type": self.model_type,
                "parts": sorted(self.parts), "feature_columns": self.columns.as_dict(), "constants": self.constants}


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


def arm_counts(rows: DataFrame) -> tuple[int, int]:
    """(treated rows, control rows)."""
    row = rows.agg(F.count(F.when(F.col(TREATED) == 1, 1)).alias("t"),
                   F.count(F.when(F.col(TREATED) == 0, 1)).alias("c")).first()
    return (int(row["t"]), int(row["c"])) if row is not None else (0, 0)


def fit_t_learner(rows: DataFrame, columns: P.FeatureColumns, model_type: str = "lr",
                  params: dict[str, Any] | None = None, seed: int = 0) -> UpliftModel:
    """Two churn classifiers (the churn model's Pipeline, unweighted), one on the control rows, one on the treated.
    Each fit reads `rows` several times: cache it when it is costly to compute. Every numeric column needs a
    value in each arm (`uplift.job.arm_columns` drops the others)."""
    treated, control = arm_counts(rows)
    if not treated or not control:
        raise ContractError(f"the T-learner needs both arms: {treated} treated and {control} control rows")
    parts = {}
    for name, value in (("control", 0), ("treatment", 1)):
        pipeline, _ = P.build_pipeline(columns, model_type, params or {}, seed, weighted=False)
        parts[name] = P.fit_pipeline(pipeline, rows.where(F.col(TREATED) == value))
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
    effect = P.fit_pipeline(Pipeline(stages=stages), data)
    return UpliftModel(TRANSFORMED_OUTCOME, model_type, columns, {"effect": effect})


def imputed_effect(label: Column, treated: Column, p_control: Column, p_treatment: Column) -> Column:
    """The X-learner's per-row effect in churn prevented: a treated row's predicted control churn minus its
    outcome, a control row's outcome minus its predicted treated churn."""
    y = label.cast("double")
    return F.when(treated == 1, p_control - y).when(treated == 0, y - p_treatment)


def mean_propensity(rows: DataFrame) -> float:
    """The mean recorded propensity of `rows` (one small aggregate)."""
    _check_propensity(rows)
    row = rows.agg(F.avg(PROPENSITY).alias("e")).first()
    assert row is not None
    return float(row["e"])


def fit_x_learner(rows: DataFrame, columns: P.FeatureColumns, model_type: str = "lr",
                  params: dict[str, Any] | None = None, seed: int = 0, first: UpliftModel | None = None
                  ) -> UpliftModel:
    """The T-learner's two classifiers (`first` when already fitted on the same rows and params), then one
    regressor of the imputed effect per arm (on the same encoding)."""
    weight = mean_propensity(rows)
    first = first if first is not None else fit_t_learner(rows, columns, model_type, params, seed)
    effects = predict_uplift(first, rows).withColumn(TARGET_COL, imputed_effect(
        F.col(P.LABEL_COL), F.col(TREATED), F.col(P_CONTROL), F.col(P_TREATMENT)))
    encoding, _ = P.build_pipeline(columns, model_type, {}, seed, weighted=False)
    parts = dict(first.parts)
    for name, value in (("effect_control", 0), ("effect_treatment", 1)):
        stages = [*encoding.getStages()[:-1], regressor(model_type, params or {}, seed)]
        parts[name] = P.fit_pipeline(Pipeline(stages=stages), effects.where(F.col(TREATED) == value))
    return UpliftModel(X_LEARNER, model_type, columns, parts, {CONTROL_WEIGHT: weight})


LEARNERS: dict[str, Callable[..., UpliftModel]] = {T_LEARNER: fit_t_learner, X_LEARNER: fit_x_learner,
                                                   TRANSFORMED_OUTCOME: fit_transformed_outcome}


def fit_uplift(kind: str, rows: DataFrame, columns: P.FeatureColumns, model_type: str = "lr",
               params: dict[str, Any] | None = None, seed: int = 0) -> UpliftModel:
    """The learner `kind` (`t_learner`, `x_learner` or `transformed_outcome`) fitted on `rows`."""
    if kind not in LEARNERS:
        raise ConfigError(f"unknown uplift learner {kind!r}: expected one of {', '.join(LEARNERS)}")
    return LEARNERS[kind](rows, columns, model_type, params, seed)


def grid_points(grid: dict[str, list[Any]]) -> list[dict[str, Any]]:
    """Every combination of the grid's values (keys in name order); one empty combination for an empty grid."""
    keys = sorted(grid)
    return [dict(zip(keys, values, strict=True)) for values in itertools.product(*(grid[k] for k in keys))]


def with_fold(rows: DataFrame, folds: int, seed: int) -> DataFrame:
    """`__fold` in [0, folds) from a hash of `account_id`: all the assignments of an account in one fold, so no
    account is predicted by a model that saw it."""
    return rows.withColumn(FOLD, F.pmod(F.xxhash64(F.col("account_id"), F.lit(seed)), F.lit(folds)).cast("int"))


def fit_learners(params_by_kind: dict[str, dict[str, Any]], rows: DataFrame, columns: P.FeatureColumns,
                 model_type: str, seed: int = 0) -> dict[str, UpliftModel]:
    """Each learner kind fitted on `rows` with its params; an X-learner reuses the T-learner fitted with the same
    params (its first stage), so comparing both costs two regressions more than the T-learner alone."""
    t_models: dict[str, UpliftModel] = {}

    def t_learner(params: dict[str, Any]) -> UpliftModel:
        key = json.dumps(params, sort_keys=True, default=str)
        if key not in t_models:
            t_models[key] = fit_t_learner(rows, columns, model_type, params, seed)
        return t_models[key]

    out = {}
    for kind, params in params_by_kind.items():
        if kind == T_LEARNER:
            out[kind] = t_learner(params)
        elif kind == X_LEARNER:
            out[kind] = fit_x_learner(rows, columns, model_type, params, seed, first=t_learner(params))
        else:
            out[kind] = fit_uplift(kind, rows, columns, model_type, params, seed)
    return out


def out_of_fold_uplift(kinds: Sequence[str], rows: DataFrame, columns: P.FeatureColumns, model_type: str,
                       params: dict[str, Any], folds: int, seed: int) -> dict[str, DataFrame]:
    """Per learner kind, `rows` (with `__fold`) with the uplift each fold gets from the learner fitted on the
    other folds."""
    scored: dict[str, list[DataFrame]] = {k: [] for k in kinds}
    for k in range(folds):
        held_out = rows.where(F.col(FOLD) == k)
        fitted = fit_learners(dict.fromkeys(kinds, params), rows.where(F.col(FOLD) != k), columns, model_type, seed)
        for kind, model in fitted.items():
            scored[kind].append(predict_uplift(model, held_out))
    return {kind: functools.reduce(DataFrame.unionByName, parts) for kind, parts in scored.items()}


def mean_fold_qini(scored: DataFrame) -> float | None:
    """The mean over the `__fold` groups of their Qini coefficients (None when no fold has one); one small
    row per fold reaches the driver."""
    per_fold = M.uplift_metrics_frame(scored, fractions=(), by=(FOLD,)).select("qini_coefficient").collect()
    values = [float(r["qini_coefficient"]) for r in per_fold if r["qini_coefficient"] is not None]
    return sum(values) / len(values) if values else None


def search_params(kinds: Sequence[str], rows: DataFrame, columns: P.FeatureColumns, model_type: str,
                  params: dict[str, Any], grid: dict[str, list[Any]], folds: int = 3,
                  seed: int = 0) -> dict[str, tuple[dict[str, Any], list[dict[str, Any]]]]:
    """Per learner kind: (`params` with its best grid point, every point's mean out-of-fold Qini coefficient).
    Each fold's curve ranks that fold's rows by the one model that did not see them, then the folds' Qini
    coefficients are averaged: one curve over the pooled folds would order rows by the folds' different
    intercepts. A grid of one point is not searched (no fits)."""
    points = grid_points(grid)
    if len(points) == 1:
        return {kind: ({**params, **points[0]}, []) for kind in kinds}
    folded = with_fold(rows, folds, seed)
    tried: dict[str, list[dict[str, Any]]] = {kind: [] for kind in kinds}
    for point in points:
        scored = out_of_fold_uplift(kinds, folded, columns, model_type, {**params, **point}, folds, seed)
        for kind, predictions in scored.items():
            tried[kind].append({"params": point, "qini_coefficient": mean_fold_qini(predictions)})

    def best(kind: str) -> dict[str, Any]:
        top = max(tried[kind], key=lambda t: t["qini_coefficient"] if t["qini_coefficient"] is not None
                  else float("-inf"))
        return {**params, **top["params"]}

    return {kind: (best(kind), tried[kind]) for kind in kinds}


def _quoted(name: str) -> Column:
    return F.col("`" + name.replace("`", "``") + "`")


def predict_uplift(model: UpliftModel, features_df: DataFrame) -> DataFrame:
    """`features_df` plus `uplift`, `p_control` and `p_treatment` (the last two null for a transformed-outcome
    model). The parts are applied one after the other to the same rows: a projection, no join."""
    keep = [_quoted(c) for c in features_df.columns]
    if model.kind == X_LEARNER:
        return _predict_x(model, features_df)
    if model.kind == TRANSFORMED_OUTCOME:
        return model.parts["effect"].transform(features_df).select(
            *keep, F.col(PREDICTION_COL).cast("double").alias(UPLIFT),
            F.lit(None).cast("double").alias(P_CONTROL), F.lit(None).cast("double").alias(P_TREATMENT))
    probability = P.positive_probability(F.col(P.PROBABILITY_COL)).cast("double")
    with_control = model.parts["control"].transform(features_df).select(*keep, probability.alias(P_CONTROL))
    both = model.parts["treatment"].transform(with_control).select(*keep, P_CONTROL, probability.alias(P_TREATMENT))
    return both.select(*keep, (F.col(P_CONTROL) - F.col(P_TREATMENT)).alias(UPLIFT), P_CONTROL, P_TREATMENT)


def _predict_x(model: UpliftModel, features_df: DataFrame) -> DataFrame:
    """The X-learner's uplift: the two effect regressors combined by `control_weight`, with the first stage's
    `p_control` and `p_treatment` beside it."""
    keep = [_quoted(c) for c in features_df.columns]
    first = UpliftModel(T_LEARNER, model.model_type, model.columns,
                        {k: model.parts[k] for k in ("control", "treatment")})
    rows = predict_uplift(first, features_df).drop(UPLIFT)
    carried = [*keep, F.col(P_CONTROL), F.col(P_TREATMENT)]
    tau0 = model.parts["effect_control"].transform(rows).select(*carried, F.col(PREDICTION_COL).alias("__tau0"))
    both = model.parts["effect_treatment"].transform(tau0).select(*carried, "__tau0",
                                                                  F.col(PREDICTION_COL).alias("__tau1"))
    e = F.lit(float(model.constants[CONTROL_WEIGHT]))
    uplift = (e * F.col("__tau0") + (F.lit(1.0) - e) * F.col("__tau1")).cast("double")
    return both.select(*keep, uplift.alias(UPLIFT), P_CONTROL, P_TREATMENT)


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
    return UpliftModel(meta["kind"], meta["model_type"], columns, parts,
                       {k: float(v) for k, v in meta.get("constants", {}).items()})
