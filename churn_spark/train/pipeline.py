"""The churn model as ONE MLlib Pipeline: encoding, classifier and calibration saved together.

Stages (docs/development.md, code rules): numeric columns cast to double, non-finite values to null and 0/1
missing indicators, plus cyclic positions such as `tenure_days mod 365` (one SQLTransformer), median
imputation, StringIndexer + OneHotEncoder with
`handleInvalid="keep"` (unseen or null categories get their own slot), VectorAssembler, for logistic
regression signed log1p values and a StandardScaler, the classifier (class-weighted through `weightCol`) and
finally a :class:`Calibration` (Platt or isotonic), which turns the probability vector into
`churn_probability`.
Scoring loads the PipelineModel and calls :func:`predict`; it never re-implements a step.
"""

from __future__ import annotations

import importlib.util
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from pyspark.ml import Estimator, Pipeline, PipelineModel, Transformer
from pyspark.ml.classification import GBTClassifier, LogisticRegression
from pyspark.ml.feature import (
    Bucketizer,
    Imputer,
    OneHotEncoder,
    SQLTransformer,
    StandardScaler,
    StringIndexer,
    VectorAssembler,
)
from pyspark.ml.functions import vector_to_array
from pyspark.ml.param import Param, Params, TypeConverters
from pyspark.ml.regression import GeneralizedLinearRegression, IsotonicRegression
from pyspark.ml.util import DefaultParamsReadable, DefaultParamsWritable
from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F
from pyspark.sql.types import (
    BooleanType,
    ByteType,
    DecimalType,
    DoubleType,
    FloatType,
    IntegerType,
    LongType,
    ShortType,
    StringType,
    StructType,
)

from churn_spark.features.catalog import SEASON_COS, SEASON_SIN
from churn_spark.schemas import FEATURE_KEY_COLUMNS
from churn_spark.thresholds import count_at_or_below_sql, sql_double

LABEL_COL = "label"
WEIGHT_COL = "class_weight"
ASSEMBLED_COL = "assembled_features"
FEATURES_COL = "features"
PROBABILITY_COL = "probability"
OUTPUT_COL = "churn_probability"
RAW_OUTPUT_COL = "churn_probability_raw"
HELD_OUT_COL = "held_out_for_early_stopping"
NUMERIC_TYPES = (ByteType, ShortType, IntegerType, LongType, FloatType, DoubleType, DecimalType, BooleanType)
EPS = 1e-6
TIE_BREAK = 1e-6  # weight of the raw probability in a fitted isotonic map (IsotonicCalibration)

DEFAULT_PARAMS: dict[str, dict[str, Any]] = {
    "gbt": {"maxIter": 60, "maxDepth": 5, "stepSize": 0.1, "subsamplingRate": 0.8, "minInstancesPerNode": 20,
            "maxBins": 32},
    "lr": {"regParam": 0.01, "elasticNetParam": 0.0, "maxIter": 100},
    # optional (train/xgb.py): xgboost.spark's own parameter names; the GBT's rounds, depth, rate, rows and bins
    "xgboost": {"n_estimators": 60, "max_depth": 5, "learning_rate": 0.1, "subsample": 0.8, "min_child_weight": 1.0,
                "max_bin": 32, "tree_method": "hist"},
}
XGBOOST_MISSING = ("model family xgboost needs the xgboost package: pip install 'churn-spark[xgboost]' "
                   "(or xgboost-cpu), or choose another model.type / model.candidates")


@dataclass(frozen=True)
class FeatureColumns:
    """Model inputs: numeric columns, categorical (string) columns, numeric columns with an is-missing flag,
    and numeric columns whose position in a cycle (value mod period) is an input of its own.

    Why cycles: an annual contract renews on the anniversary of its start, so whether a renewal decision
    falls inside the label horizon depends on `tenure_days mod 365`; trees cannot carve that periodic
    shape out of `tenure_days` with a few splits.
    """

    numeric: list[str]
    categorical: list[str]
    missing_indicators: list[str] = field(default_factory=list)
    cyclic: dict[str, int] = field(default_factory=dict)  # numeric column -> period

    def as_dict(self) -> dict[str, Any]:
        return {"numeric": self.numeric, "categorical": self.categorical,
                "missing_indicators": self.missing_indicators, "cyclic": self.cyclic}

    @property
    def imputed(self) -> list[str]:
        """Names of the imputed numeric inputs: the numeric columns, then the cyclic positions."""
        return self.numeric + [cyclic_name(c, p) for c, p in self.cyclic.items()]


def cyclic_name(column: str, period: int) -> str:
    """`tenure_days`, 365 -> `tenure_days_mod_365`."""
    return f"{column}_mod_{period}"


def cyclic_column(name: str) -> str | None:
    """The inverse of `cyclic_name`: `tenure_days_mod_365` -> `tenure_days`; None for any other name."""
    derived = re.fullmatch(r"(.+)_mod_\d+", name)
    return derived.group(1) if derived else None


def feature_columns(schema: StructType, exclude: Sequence[str] = ()) -> FeatureColumns:
    """Every numeric column is a numeric feature, every string column but the keys a categorical one."""
    skip = set(FEATURE_KEY_COLUMNS) | {LABEL_COL, WEIGHT_COL} | set(exclude)
    numeric = [f.name for f in schema.fields if f.name not in skip and isinstance(f.dataType, NUMERIC_TYPES)]
    categorical = [f.name for f in schema.fields if f.name not in skip and isinstance(f.dataType, StringType)]
    return FeatureColumns(numeric, categorical)


def feature_schema(schema: StructType, columns: FeatureColumns, extra: Sequence[str] = ()) -> dict[str, str]:
    """name -> Spark SQL type of the columns the model reads (recorded with the model, checked by scoring): its
    inputs and `extra`, the calibration's own inputs (a seasonal shift's season, also when the classifier
    excludes it)."""
    used = set(columns.numeric) | set(columns.categorical) | set(extra)
    return {f.name: f.dataType.simpleString() for f in schema.fields if f.name in used}


def quoted(name: str) -> str:
    """`name` as a SQL identifier (backticks, inner backticks doubled)."""
    return "`" + name.replace("`", "``") + "`"


def _numeric_sql(name: str) -> str:
    """Double value of a numeric column, null when missing, NaN or infinite (the Imputer fills it)."""
    v = f"CAST({quoted(name)} AS DOUBLE)"
    return f"CASE WHEN isnan({v}) OR abs({v}) = double('inf') THEN NULL ELSE {v} END"


def missing_sql(name: str) -> str:
    """Whether numeric column `name` is missing to the model (null, NaN or infinite): what the Imputer fills and
    a missing indicator flags."""
    return f"({_numeric_sql(name)}) IS NULL"


def signed_log1p_sql(value: str) -> str:
    """sign(v) * ln(1 + |v|): counts and amounts are heavy-tailed, and a linear model on raw counts lets a
    few heavy accounts set the slope; the sign keeps changes and trends (which can be negative) ordered."""
    return f"signum({value}) * ln(1 + abs({value}))"


def prepare_statement(columns: FeatureColumns, log_scale: bool = False) -> str:
    """SQLTransformer statement: `dbl__<c>` doubles for the Imputer (signed log1p of the value with
    `log_scale`, as logistic regression gets them), `missing__<c>` 0/1 indicators,
    `dbl__<c>_mod_<period>` cyclic positions of the raw value (pmod: in [0, period) for negative values too)."""
    def value(c: str) -> str:
        return signed_log1p_sql(_numeric_sql(c)) if log_scale else _numeric_sql(c)

    parts = ["*"] + [f"{value(c)} AS {quoted('dbl__' + c)}" for c in columns.numeric]
    parts += [f"pmod({_numeric_sql(c)}, {float(p)!r}) AS {quoted('dbl__' + cyclic_name(c, p))}"
              for c, p in columns.cyclic.items()]
    parts += [f"CASE WHEN {missing_sql(c)} THEN 1.0 ELSE 0.0 END AS {quoted('missing__' + c)}"
              for c in columns.missing_indicators]
    return f"SELECT {', '.join(parts)} FROM __THIS__"


def classifier(model_type: str, params: dict[str, Any], seed: int, weighted: bool) -> Estimator:
    """The classifier with defaults for `model_type`, overridden by `params` (MLlib param names; xgboost.spark's
    for `xgboost`)."""
    est: Any = (GBTClassifier(seed=seed) if model_type == "gbt" else xgboost_estimator(seed) if model_type == "xgboost"
                else LogisticRegression(family="binomial", standardization=False))
    columns = {"featuresCol": FEATURES_COL, "labelCol": LABEL_COL, "probabilityCol": PROBABILITY_COL,
               "rawPredictionCol": "raw_prediction", "predictionCol": "prediction"}
    for name, value in {**columns, **({"weightCol": WEIGHT_COL} if weighted else {})}.items():
        est.set(est.getParam(name), value)  # the same Param names in MLlib and xgboost.spark
    merged = {**DEFAULT_PARAMS[model_type], **params}
    unknown = [k for k in merged if not est.hasParam(k)]
    if unknown:
        from churn_spark.errors import ConfigError

        raise ConfigError(f"model.params: unknown {model_type} parameter(s): {', '.join(unknown)}")
    est.setParams(**merged)
    return est


def xgboost_estimator(seed: int) -> Estimator:
    """xgboost.spark's classifier (train/xgb.py), or one line saying the package is missing."""
    require_family("xgboost")
    from churn_spark.train.xgb import xgboost_estimator as estimator

    return estimator(seed)


def require_family(model_type: str) -> None:
    """Raise ConfigError when `model_type` needs a package that is not installed (xgboost is optional)."""
    if model_type == "xgboost" and importlib.util.find_spec("xgboost") is None:
        from churn_spark.errors import ConfigError

        raise ConfigError(XGBOOST_MISSING)


def build_pipeline(columns: FeatureColumns, model_type: str, params: dict[str, Any], seed: int,
                   weighted: bool = True, early_stopping: bool = False) -> tuple[Pipeline, Estimator]:
    """The unfitted Pipeline and its classifier stage (the search sets params on the latter).

    `early_stopping` (GBT): the rows flagged in HELD_OUT_COL are not learnt from; boosting stops at the first
    tree that improves their log loss by less than `validationTol` (relative) and keeps the trees up to the
    best (MLlib's `validationIndicatorCol`)."""
    stages: list[Any] = [SQLTransformer(statement=prepare_statement(columns, log_scale=model_type == "lr"))]
    vector_inputs: list[str] = []
    if columns.imputed:
        imputed = ["num__" + c for c in columns.imputed]
        stages.append(Imputer(inputCols=["dbl__" + c for c in columns.imputed], outputCols=imputed,
                              strategy="median"))
        vector_inputs += imputed
    vector_inputs += ["missing__" + c for c in columns.missing_indicators]
    if columns.categorical:
        indexed = ["idx__" + c for c in columns.categorical]
        encoded = ["cat__" + c for c in columns.categorical]
        stages.append(StringIndexer(inputCols=columns.categorical, outputCols=indexed, handleInvalid="keep",
                                    stringOrderType="frequencyDesc"))
        stages.append(OneHotEncoder(inputCols=indexed, outputCols=encoded, handleInvalid="keep", dropLast=True))
        vector_inputs += encoded
    if model_type == "lr":
        stages.append(VectorAssembler(inputCols=vector_inputs, outputCol=ASSEMBLED_COL))
        stages.append(StandardScaler(inputCol=ASSEMBLED_COL, outputCol=FEATURES_COL, withMean=True, withStd=True))
    else:
        stages.append(VectorAssembler(inputCols=vector_inputs, outputCol=FEATURES_COL))
    clf = classifier(model_type, params, seed, weighted)
    if early_stopping and model_type == "gbt":
        clf.set(clf.getParam("validationIndicatorCol"), HELD_OUT_COL)
    stages.append(clf)
    return Pipeline(stages=stages), clf


def fit_pipeline(pipeline: Pipeline, rows: DataFrame) -> PipelineModel:
    """`pipeline.fit(rows)`, with the stages after the last VectorAssembler (the scaler, the learner) fitted on a
    local checkpoint of what they read (the vector, label, weight), and the encoding's estimators (Imputer,
    StringIndexer) on a checkpoint of the leading transformers' output (the SQL preparation).

    Why: MLlib's learners run hundreds of small jobs (an LBFGS step, a tree level), and every task
    deserialises its RDD's whole lineage -- here the encoding's SQL plans over hundreds of columns, ~25 ms a
    task, as long as the work itself. Materialising only the columns the last stages read cuts the lineage: on
    the demo's data one fold's LR fit went 35 -> 21 s, its GBT 42 -> 26 s, same models (the checkpoint keeps
    the rows' partitions and order; LR's sums may differ in the last bits). Each fit of an encoding stage is
    another pass that plans and runs the encoding, ~2-3 s on the demo's ~240 columns, so the scaler is fitted
    on the checkpoint too (its own pass was 2.8-4.5 s of a demo LR fold fit). Likewise the preparation's ~240
    expressions ran twice per fit, for the Imputer's medians and again under the encoding, each task generating
    their code anew (the plan is too wide for whole-stage code generation): computed once, both read it. The
    blocks live on the executors until the fit ends; an executor lost meanwhile fails the fit (the job is
    rerun), the price of a lineage that short.
    """
    stages = pipeline.getStages()
    if not stages or not isinstance(stages[-1], Estimator):
        return pipeline.fit(rows)
    cut = max([i + 1 for i, s in enumerate(stages[:-1]) if isinstance(s, VectorAssembler)], default=len(stages) - 1)
    # the leading transformers (the SQL preparation) need no fit: their output is computed once when an
    # estimator of the encoding follows them
    lead = next(i for i, s in enumerate(stages) if isinstance(s, Estimator))
    leading = [s for s in stages[:lead] if isinstance(s, Transformer)] if lead < cut else []
    checkpoints: list[DataFrame] = []
    try:
        if leading:
            rows = _checkpoint_of_reads(PipelineModel(stages=leading).transform(rows), stages[len(leading):])
            checkpoints.append(rows)
        encoding = Pipeline(stages=stages[len(leading):cut]).fit(rows)
        prepared = _checkpoint_of_reads(encoding.transform(rows), stages[cut:])
        checkpoints.append(prepared)
        rest = Pipeline(stages=stages[cut:]).fit(prepared)
    finally:
        for checkpoint in checkpoints:
            release_checkpoint(checkpoint)
    return PipelineModel(stages=[*leading, *encoding.stages, *rest.stages])


def _checkpoint_of_reads(df: DataFrame, stages: Sequence[Any]) -> DataFrame:
    """A local checkpoint of the columns of `df` that `stages` read and do not make themselves (selected as SQL
    text: hundreds of columns, and each `F.col` is ~17 calls into the JVM, seconds on a busy driver)."""
    made = {c for s in stages for c in _param_values(s, ("outputCol", "outputCols"))}
    read = [c for c in dict.fromkeys(c for s in stages for c in _param_values(
        s, ("inputCol", "inputCols", "featuresCol", "labelCol", "weightCol", "validationIndicatorCol")))
        if c not in made]
    return df.selectExpr(*map(quoted, read)).localCheckpoint(eager=True)


def _param_values(stage: Any, names: Sequence[str]) -> list[str]:
    """The non-empty values of `stage`'s column params among `names` (set or defaulted; lists flattened)."""
    values = [stage.getOrDefault(n) for n in names if stage.hasParam(n) and stage.isDefined(stage.getParam(n))]
    return [c for v in values for c in (v if isinstance(v, list) else [v]) if c]


def release_checkpoint(df: DataFrame) -> None:
    """Drop the blocks of `df`, a local checkpoint. `DataFrame.unpersist` does not reach them (they belong to the
    RDD under the plan, freed otherwise only when the JVM collects it), and a train run makes many."""
    plan = df._jdf.queryExecution().logical()
    if plan.getClass().getSimpleName() == "LogicalRDD":
        plan.rdd().unpersist(False)


# --- calibration -------------------------------------------------------------------------------


def positive_probability(probability: Column) -> Column:
    """P(class 1) from MLlib's probability vector."""
    return vector_to_array(probability).getItem(1)


def logit(p: Column) -> Column:
    """log(p / (1 - p)) with p clipped to [EPS, 1 - EPS] so 0 and 1 stay finite."""
    clipped = F.least(F.greatest(p, F.lit(EPS)), F.lit(1 - EPS))
    return F.log(clipped / (F.lit(1.0) - clipped))


def platt(raw: Column, slope: float, intercept: float) -> Column:
    """Calibrated probability sigmoid(slope * logit(raw) + intercept); slope 1, intercept 0 is the identity."""
    return F.lit(1.0) / (F.lit(1.0) + F.exp(-(F.lit(slope) * logit(raw) + F.lit(intercept))))


SEASON_TERMS = ("k_cos", "k_sin", "centre_cos", "centre_sin")


def seasonal_shift(p: Column, terms: Sequence[float]) -> Column:
    """sigmoid(logit(p) + k_cos (season_cos - c_cos) + k_sin (season_sin - c_sin)), `terms` = [k_cos, k_sin,
    c_cos, c_sin]; no terms: `p` itself. A row without a season (a slice built before the calendar features)
    is not moved."""
    if not terms:
        return p
    k_cos, k_sin, c_cos, c_sin = (float(t) for t in terms)
    shift = F.lit(k_cos) * (F.col(SEASON_COS) - F.lit(c_cos)) + F.lit(k_sin) * (F.col(SEASON_SIN) - F.lit(c_sin))
    return F.lit(1.0) / (F.lit(1.0) + F.exp(-(logit(p) + F.coalesce(shift, F.lit(0.0)))))


class Calibration(Transformer):
    """Last pipeline stage: `churn_probability_raw` = P(class 1), `churn_probability` = its calibration.

    Python stages saved with the PipelineModel (DefaultParamsWritable), built from Column expressions,
    so scoring applies exactly the calibration fitted at training time. The method's map (Platt, isotonic)
    may be followed by a seasonal shift of the log-odds (`season`, empty by default; `model.seasonal_calibration`,
    docs/model.md): stages saved before it existed read as having none.
    """

    probabilityCol: Param[str] = Param(Params._dummy(), "probabilityCol", "probability vector column",
                                       typeConverter=TypeConverters.toString)
    season: Param[list[float]] = Param(Params._dummy(), "season",
                                       "seasonal log-odds shift [k_cos, k_sin, centre_cos, centre_sin]; empty: none",
                                       typeConverter=TypeConverters.toListFloat)

    def calibrate(self, raw: str) -> Column:
        """The calibrated probability of the raw P(class 1) column named `raw` (the scorer's occlusion applies it to
        probabilities it computes itself): the method's map, then the seasonal shift, which reads the row's
        `season_cos` and `season_sin` (`input_columns`)."""
        return seasonal_shift(self.map_raw(raw), self.season_terms())

    def map_raw(self, raw: str) -> Column:
        """The method's own map of the raw probability (the column named `raw`)."""
        raise NotImplementedError

    def season_terms(self) -> list[float]:
        terms: list[float] = self.getOrDefault(self.season)
        return list(terms)

    def with_season(self, terms: Sequence[float]) -> Calibration:
        """This stage (a copy) with the seasonal shift `terms`."""
        return self.copy({self.season: [float(t) for t in terms]})

    def input_columns(self) -> list[str]:
        """Feature columns the calibration reads besides the raw probability."""
        return [SEASON_COS, SEASON_SIN] if self.season_terms() else []

    def describe_method(self) -> dict[str, Any]:
        """What metadata.json records of the method's map."""
        raise NotImplementedError

    def describe(self) -> dict[str, Any]:
        """What metadata.json records of the calibration."""
        terms = self.season_terms()
        season = {"season": dict(zip(SEASON_TERMS, terms, strict=True))} if terms else {}
        return {**self.describe_method(), **season}

    def _transform(self, dataset: DataFrame) -> DataFrame:
        raw = positive_probability(F.col(self.getOrDefault(self.probabilityCol)))
        return (dataset.withColumn(RAW_OUTPUT_COL, raw)
                .withColumn(OUTPUT_COL, self.calibrate(RAW_OUTPUT_COL)))


class PlattCalibration(Calibration, DefaultParamsReadable, DefaultParamsWritable):
    """sigmoid(slope * logit(raw) + intercept): two parameters, smooth, extrapolates."""

    slope: Param[float] = Param(Params._dummy(), "slope", "Platt slope on the raw logit",
                                typeConverter=TypeConverters.toFloat)
    intercept: Param[float] = Param(Params._dummy(), "intercept", "Platt intercept",
                                    typeConverter=TypeConverters.toFloat)

    def __init__(self, slope: float = 1.0, intercept: float = 0.0, probabilityCol: str = PROBABILITY_COL) -> None:
        super().__init__()
        self._setDefault(probabilityCol=PROBABILITY_COL, slope=1.0, intercept=0.0, season=[])
        self._set(probabilityCol=probabilityCol, slope=slope, intercept=intercept)

    def map_raw(self, raw: str) -> Column:
        return platt(F.col(raw), self.getOrDefault(self.slope), self.getOrDefault(self.intercept))

    def describe_method(self) -> dict[str, Any]:
        return {"method": "platt", "slope": self.getOrDefault(self.slope),
                "intercept": self.getOrDefault(self.intercept)}


class IsotonicCalibration(Calibration, DefaultParamsReadable, DefaultParamsWritable):
    """A monotone step-and-ramp map from the raw probability, as MLlib's IsotonicRegressionModel predicts:
    linear between consecutive knots (`boundaries` -> `predictions`), constant beyond the first and last.

    Why beside Platt: it assumes no sigmoid shape, so it also fixes a model whose raw scores are
    miscalibrated differently at the low and the high end (accounts that cannot churn within the horizon,
    which a sigmoid cannot bring to 0); it needs more rows and does not extrapolate. Flat stretches (beyond
    the end knots; between knots in stages saved before session 25, whose fit was not centred) would tie
    accounts the classifier ranked apart: `tieBreak` w gives (1 - w) map + w raw, strictly increasing in the
    raw probability for w > 0, so the ranking stays the classifier's and the probabilities move by at most w
    (the fit sets `TIE_BREAK`; stages saved before it have 0).
    """

    boundaries: Param[list[float]] = Param(Params._dummy(), "boundaries", "raw probabilities (knots), ascending",
                                           typeConverter=TypeConverters.toListFloat)
    predictions: Param[list[float]] = Param(Params._dummy(), "predictions", "calibrated probability at each knot",
                                            typeConverter=TypeConverters.toListFloat)
    tieBreak: Param[float] = Param(Params._dummy(), "tieBreak", "weight of the raw probability that breaks ties",
                                   typeConverter=TypeConverters.toFloat)

    def __init__(self, boundaries: Sequence[float] = (0.0, 1.0), predictions: Sequence[float] = (0.0, 1.0),
                 probabilityCol: str = PROBABILITY_COL, tieBreak: float = 0.0) -> None:  # noqa: N803 - MLlib's style
        super().__init__()
        self._setDefault(probabilityCol=PROBABILITY_COL, boundaries=[0.0, 1.0], predictions=[0.0, 1.0], season=[],
                         tieBreak=0.0)
        self._set(probabilityCol=probabilityCol, boundaries=list(boundaries), predictions=list(predictions),
                  tieBreak=tieBreak)

    def tie_break(self) -> float:
        return float(self.getOrDefault(self.tieBreak))

    def map_raw(self, raw: str) -> Column:
        boundaries: list[float] = self.getOrDefault(self.boundaries)
        predictions: list[float] = self.getOrDefault(self.predictions)
        mapped = interpolate(raw, boundaries, predictions)
        w = self.tie_break()
        return mapped if w == 0.0 else F.lit(1.0 - w) * mapped + F.lit(w) * F.col(raw)

    def describe_method(self) -> dict[str, Any]:
        w = self.tie_break()
        return {"method": "isotonic", "knots": len(self.getOrDefault(self.boundaries)),
                "boundaries": self.getOrDefault(self.boundaries), "predictions": self.getOrDefault(self.predictions),
                **({"tie_break": w} if w else {})}


def interpolate(x: str, boundaries: Sequence[float], predictions: Sequence[float]) -> Column:
    """Piecewise-linear map of the column named `x` through (boundaries[i], predictions[i]), flat outside; at a
    repeated boundary the later knot wins (MLlib's rule for a jump). Built-in functions, no UDF and no lambda:
    the knot index is a comparison tree (`thresholds.py`), made from SQL text and used as one expression
    object, which Spark's subexpression elimination computes once per row. (A tree with each segment's
    ramp in its leaves was tried: its generated code for 11 calibrated probabilities outgrew the JVM's
    64 KB method limit, and Spark fell back to interpreting the plan.)"""
    b = [float(v) for v in boundaries]
    p = [float(v) for v in predictions]
    n, value = len(b), F.col(x)
    i = F.expr(count_at_or_below_sql(f"`{x}`", b))  # knots at or below x: x lies in [b[i-1], b[i]) (1-based)
    knots = F.expr(f"array({', '.join(sql_double(v) for v in b)})")
    levels = F.expr(f"array({', '.join(sql_double(v) for v in p)})")
    lo, hi = F.greatest(i, F.lit(1)), F.least(i + 1, F.lit(n))
    lo_b, hi_b = F.element_at(knots, lo), F.element_at(knots, hi)
    lo_p, hi_p = F.element_at(levels, lo), F.element_at(levels, hi)
    ramp = lo_p + (hi_p - lo_p) * (value - lo_b) / (hi_b - lo_b)
    return F.when(i == 0, F.element_at(levels, 1)).when(i >= n, F.element_at(levels, n)).otherwise(ramp)


def fit_platt(scored: DataFrame, seed: int = 0) -> PlattCalibration:
    """Logistic regression of `label` on logit(raw probability), unweighted.

    `scored` has `label` and `churn_probability_raw` (out-of-time predictions); with one class only
    there is nothing to fit and the identity is returned.
    """
    classes = scored.agg(F.countDistinct(LABEL_COL).alias("n")).first()
    if classes is None or classes["n"] < 2:
        return PlattCalibration()
    data = scored.select(F.col(LABEL_COL).cast("double").alias(LABEL_COL),
                         logit(F.col(RAW_OUTPUT_COL)).alias("raw_logit"))
    vec = VectorAssembler(inputCols=["raw_logit"], outputCol="x").transform(data)
    lr = LogisticRegression(featuresCol="x", labelCol=LABEL_COL, regParam=0.0, standardization=False,
                            maxIter=100, tol=1e-10).fit(vec)
    return PlattCalibration(slope=float(lr.coefficients[0]), intercept=float(lr.intercept))


def fit_isotonic(scored: DataFrame) -> IsotonicCalibration:
    """Centred isotonic regression of `label` on the raw probability: MLlib's isotonic regression (pool
    adjacent violators), then each interior block becomes one knot at its rows' mean raw probability with the
    block's rate (:func:`centred_knots`). With one class only, the identity.

    Why centred: the plain fit is flat across each block, so it ties accounts the classifier ranked apart
    (only the tie break orders them, by 1e-6), and any later move that differs between rows (the seasonal
    shift, one per month) reorders them by that move instead of the classifier's score: on 8,000 accounts the
    pooled test ROC AUC fell from 0.7715 to 0.7673. Through block centres the map is strictly increasing
    between the first and the last block, and each block's rate sits where its rows are."""
    classes = scored.agg(F.countDistinct(LABEL_COL).alias("n")).first()
    if classes is None or classes["n"] < 2:
        return IsotonicCalibration()
    data = scored.select(F.col(LABEL_COL).cast("double").alias(LABEL_COL),
                         F.col(RAW_OUTPUT_COL).cast("double").alias(RAW_OUTPUT_COL))
    iso = IsotonicRegression(featuresCol=RAW_OUTPUT_COL, labelCol=LABEL_COL, isotonic=True).fit(data)
    boundaries, predictions = centred_knots(data, iso.boundaries.toArray().tolist(),
                                            iso.predictions.toArray().tolist())
    return IsotonicCalibration(boundaries, predictions, tieBreak=TIE_BREAK)


def centred_knots(data: DataFrame, boundaries: Sequence[float],
                  predictions: Sequence[float]) -> tuple[list[float], list[float]]:
    """The knots of an isotonic fit with each interior block (a run of equal `predictions`) as one knot at the
    mean raw probability of its rows, with the block's value; the first and the last block keep their two end
    knots (flat across them, as fitted). Why the ends stay: beyond an end knot the map is flat, so a centred
    end block would pull its rows' mean towards its neighbour (the top block under-predicted); kept, every
    block's rows still average about its rate. Blocks are told apart by their first boundary; a handful of
    means, aggregated on the executors."""
    blocks: list[tuple[float, float, float]] = []  # (first boundary, last boundary, value)
    for b, p in zip(boundaries, predictions, strict=True):
        if blocks and p == blocks[-1][2]:
            blocks[-1] = (blocks[-1][0], float(b), float(p))
        else:
            blocks.append((float(b), float(b), float(p)))
    if len(blocks) < 3:
        return list(map(float, boundaries)), list(map(float, predictions))
    splits = [-math.inf, *(start for start, _, _ in blocks[1:]), math.inf]
    bucketed = Bucketizer(splits=splits, inputCol=RAW_OUTPUT_COL, outputCol="__block").transform(data)
    means = {int(r["__block"]): float(r["x"]) for r in
             bucketed.groupBy("__block").agg(F.avg(RAW_OUTPUT_COL).alias("x")).collect()}
    first, last = blocks[0], blocks[-1]
    interior = [(means.get(i, (start + end) / 2), value) for i, (start, end, value) in enumerate(blocks[1:-1], 1)]
    knots = sorted({(first[0], first[2]), (first[1], first[2]), *interior, (last[0], last[2]), (last[1], last[2])})
    return [x for x, _ in knots], [y for _, y in knots]


def fit_seasonal_shift(scored: DataFrame, centre: tuple[float, float]) -> list[float]:
    """Seasonal log-odds shift terms [k_cos, k_sin, c_cos, c_sin] for :func:`seasonal_shift`.

    Why: the calibrator learns the churn rate of its own snapshots, one season; a classifier that does not
    learn the season (trees split on it rarely) carries that rate to every other season. `scored` has `label`,
    the calibrated `churn_probability` and the season columns (the registered model on its own fit's rows):
    a binomial GLM of the label with the calibrated log-odds as offset and the season's cosine and sine, centred
    on the calibration snapshots' season (`centre`), as inputs. Its intercept (the level on these rows, which
    the calibrator already set out of time) is fitted and dropped, so the shift is 0 in the calibration
    season. Empty (no shift) with one class or fewer than three seasons (the terms are not identified)."""
    seen = scored.agg(F.countDistinct(LABEL_COL).alias("classes"),
                      F.countDistinct(SEASON_COS, SEASON_SIN).alias("seasons")).first()
    if seen is None or seen["classes"] < 2 or seen["seasons"] < 3:
        return []
    c_cos, c_sin = centre
    data = scored.where(F.col(SEASON_COS).isNotNull() & F.col(SEASON_SIN).isNotNull()).select(
        F.col(LABEL_COL).cast("double").alias(LABEL_COL), logit(F.col(OUTPUT_COL)).alias("__offset"),
        (F.col(SEASON_COS) - F.lit(c_cos)).alias("__cos"), (F.col(SEASON_SIN) - F.lit(c_sin)).alias("__sin"))
    vec = VectorAssembler(inputCols=["__cos", "__sin"], outputCol="__season").transform(data)
    glm = GeneralizedLinearRegression(family="binomial", link="logit", featuresCol="__season", labelCol=LABEL_COL,
                                      offsetCol="__offset", maxIter=50, tol=1e-10).fit(vec)
    return [float(glm.coefficients[0]), float(glm.coefficients[1]), float(c_cos), float(c_sin)]


def centred(raw: Column, prior_logit: float) -> Column:
    """sigmoid(logit(raw) - prior_logit): a probability from a fit whose training rate had logit `prior_logit`,
    moved to an even prior.

    Why: an unweighted fit's raw probabilities carry its own training churn rate (its intercept), and the
    folds' fits and the refit see different rates when churn moves. A calibrator fitted on centred
    predictions learns how the *ranking* maps to churn on later snapshots; :func:`for_prior` moves it back
    to the registered fit's own rate. With balanced class weights every fit's prior is already even (0)."""
    return F.lit(1.0) / (F.lit(1.0) + F.exp(-(logit(raw) - F.lit(prior_logit))))


def logit_of(p: float) -> float:
    """log(p / (1 - p)) of a number, p clipped to [EPS, 1 - EPS] as :func:`logit` clips a column."""
    clipped = min(max(p, EPS), 1 - EPS)
    return math.log(clipped / (1 - clipped))


def _moved(p: float, prior_logit: float) -> float:
    """The raw probability whose centred value is `p` for a fit with prior logit `prior_logit` (0 and 1 stay)."""
    if p <= 0.0 or p >= 1.0:
        return p
    return 1.0 / (1.0 + math.exp(-(logit_of(p) + prior_logit)))


def for_prior(calibration: Calibration, prior_logit: float) -> Calibration:
    """`calibration`, fitted on :func:`centred` predictions, as a stage on the raw probabilities of a fit whose
    training rate has logit `prior_logit`: Platt's intercept takes -slope x prior_logit; isotonic knots move
    along the raw axis (same order, same predictions). The stage classes are unchanged, so scoring, the
    saved model and the ONNX export need nothing new."""
    if isinstance(calibration, PlattCalibration):
        slope = calibration.getOrDefault(calibration.slope)
        return PlattCalibration(slope, calibration.getOrDefault(calibration.intercept) - slope * prior_logit)
    if isinstance(calibration, IsotonicCalibration):
        boundaries: list[float] = calibration.getOrDefault(calibration.boundaries)
        predictions: list[float] = calibration.getOrDefault(calibration.predictions)
        return IsotonicCalibration([_moved(b, prior_logit) for b in boundaries], predictions,
                                   tieBreak=calibration.tie_break())
    return calibration


def fit_calibration(method: str, scored: DataFrame, seed: int = 0) -> Calibration:
    """The configured calibrator fitted on `scored`; `none` is the identity (Platt 1, 0)."""
    if method == "platt":
        return fit_platt(scored, seed)
    if method == "isotonic":
        return fit_isotonic(scored)
    return PlattCalibration()


def with_calibration(model: PipelineModel, calibration: Calibration) -> PipelineModel:
    """`model` with `calibration` as its last stage (replacing an existing one)."""
    stages = [s for s in model.stages if not isinstance(s, Calibration)]
    return PipelineModel(stages=[*stages, calibration])


def calibration_stage(model: PipelineModel) -> Calibration:
    """The model's Calibration stage (the identity Platt stage when it was saved without one)."""
    return next((s for s in model.stages if isinstance(s, Calibration)), None) or PlattCalibration()


def calibration_of(model: PipelineModel) -> dict[str, Any]:
    return calibration_stage(model).describe()


# --- prediction and explanation ------------------------------------------------------------------


def calibrated(model: PipelineModel) -> PipelineModel:
    """`model` ending in a Calibration stage (the identity Platt stage when it was saved without one)."""
    if any(isinstance(s, Calibration) for s in model.stages):
        return model
    return with_calibration(model, PlattCalibration())


def predict(model: PipelineModel, features_df: DataFrame) -> DataFrame:
    """`features_df` plus `churn_probability` (calibrated), `churn_probability_raw` and the `features`
    vector the classifier saw (standardised for LR: the scorer's reason codes multiply it by the
    coefficients named in the metadata's `feature_names`)."""
    out = calibrated(model).transform(features_df)
    # SQL text: one JVM call per column, where a Column costs ~17 (the frame is ~250 columns wide)
    return out.selectExpr(*map(quoted, features_df.columns), f"CAST({OUTPUT_COL} AS DOUBLE) AS {OUTPUT_COL}",
                          f"CAST({RAW_OUTPUT_COL} AS DOUBLE) AS {RAW_OUTPUT_COL}", FEATURES_COL)


def readable_feature_name(attr: str) -> str:
    """`num__tenure_days` -> `tenure_days`, `missing__x` -> `x is missing`, `cat__country_DE` -> `country=DE`."""
    if attr.startswith("num__"):
        return attr[len("num__"):]
    if attr.startswith("missing__"):
        return attr[len("missing__"):] + " is missing"
    return attr


def vector_feature_names(model: PipelineModel, sample: DataFrame, columns: FeatureColumns) -> list[str]:
    """Names of the classifier's input vector, in order, from the assembler's output metadata.

    Only the schema of `model.transform(sample)` is used (no Spark job).
    """
    schema = model.transform(sample).schema
    attrs_by_type = schema[FEATURES_COL].metadata.get("ml_attr", {}).get("attrs", {})
    if not attrs_by_type:  # StandardScaler drops the metadata: read it from the assembler's output
        attrs_by_type = schema[ASSEMBLED_COL].metadata.get("ml_attr", {}).get("attrs", {})
    attrs = sorted((a for group in attrs_by_type.values() for a in group), key=lambda a: a["idx"])
    names = []
    for a in attrs:
        name = a.get("name", f"f{a['idx']}")
        for c in columns.categorical:  # OneHotEncoder names slots `<output col>_<category>`
            prefix = f"cat__{c}_"
            if name.startswith(prefix):
                name = f"{c}={name[len(prefix):]}"
                break
        names.append(readable_feature_name(name))
    return names


def classifier_model(model: PipelineModel) -> Any:
    """The fitted classifier stage (LogisticRegressionModel, GBTClassificationModel, XGBoostClassificationModel)."""
    return next(s for s in reversed(model.stages) if hasattr(s, "numFeatures") and hasattr(s, "predictRaw"))


def explanation(model: PipelineModel, names: list[str]) -> dict[str, Any]:
    """LR: coefficients (on standardised features) and intercept; GBT, xgboost: feature importances; by name."""
    clf = classifier_model(model)
    if hasattr(clf, "coefficients"):
        coefs = clf.coefficients.toArray().tolist()
        return {"kind": "coefficients", "intercept": float(clf.intercept),
                "values": dict(zip(names, [float(c) for c in coefs], strict=True))}
    imps = clf.featureImportances.toArray().tolist()
    return {"kind": "importances", "values": dict(zip(names, [float(v) for v in imps], strict=True))}
