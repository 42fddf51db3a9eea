"""Reason codes: the three features that raise an account's churn risk the most.

Both methods name *source* features (a column of `gold.churn_features`), never a vector slot and never a
calendar feature (the season is the same for every account at D: it explains no one account): the
slots of the model's assembled vector are mapped back through the assembler's ML attributes
(`num__x` and `missing__x` -> `x`, one-hot `cat__c_<value>` -> `c`) and summed per source.

* Logistic regression: the pipeline standardises the vector (StandardScaler with mean and std of
  the training data), so `coefficient * standardised value` is each slot's contribution to the
  log-odds relative to the average training account. A feature's contribution is the sum over its
  slots; the reasons are the largest positive ones (those that raise the risk). The calibration is
  strictly increasing (Platt; isotonic with its tie break) and the same for the account's every variant,
  so it does not change the order.
* Trees: there are no additive coefficients, so we use occlusion: for each of the model's
  top-K features by importance, the account's value is replaced by the training baseline -- the
  median the pipeline's Imputer learnt for a numeric feature, the most frequent category its
  StringIndexer learnt for a categorical one -- and the account is re-scored. The reasons are the
  features whose replacement lowers the probability the most (only positive drops). The
  features are encoded once; a feature's occluded vector is the encoded vector with that feature's
  slots set to the baseline's encoding. For an MLlib GBT the new margin is the model's margin plus
  the change of the trees that split on those slots, evaluated as column expressions (`trees.py`):
  one row per account, while the expressions stay small enough for Spark's generated code. Larger
  GBTs and other tree models (XGBoost) score the K variants themselves (K+1 rows per
  account by explode, one pass of the classifier and calibration, folded back with one group-by).
  Either way: no per-row Python, no collect, and a plan with one copy of the encoding.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

from pyspark.ml import PipelineModel
from pyspark.ml.classification import GBTClassificationModel
from pyspark.ml.feature import ImputerModel, StringIndexerModel, VectorAssembler
from pyspark.ml.functions import array_to_vector, vector_to_array
from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F
from pyspark.sql.types import StructType

from churn_spark.features.catalog import CALENDAR_FEATURES
from churn_spark.score import trees
from churn_spark.thresholds import sql_double, sql_string
from churn_spark.train.pipeline import calibrated, calibration_stage, cyclic_column, quoted

Predict = Callable[[DataFrame], DataFrame]
"""Adds `churn_probability` (and the classifier's input vector `features`) to a features frame."""

REASONS = ["reason_1", "reason_2", "reason_3"]
PROBABILITY = "churn_probability"
VECTOR = "features"
_OCCLUDED = "__occluded"
_ORDERED = "__ordered"
SLOTS = "__slots"


# --- the model's inputs, read from its fitted stages -----------------------------------------------


def classifier_stage(model: PipelineModel) -> Any:
    """The fitted classifier (the last stage that predicts raw scores)."""
    return next(s for s in reversed(model.stages) if hasattr(s, "numFeatures") and hasattr(s, "predictRaw"))


def numeric_baselines(model: PipelineModel) -> dict[str, float]:
    """{source feature: training median} from the Imputer (inputs are named `dbl__<feature>`)."""
    out: dict[str, float] = {}
    for stage in model.stages:
        if isinstance(stage, ImputerModel):
            row = stage.surrogateDF.first()  # one row: the medians
            for col in stage.getInputCols():
                if row is not None and row[col] is not None:
                    out[col.removeprefix("dbl__")] = float(row[col])
    return out


def categorical_baselines(model: PipelineModel) -> dict[str, str]:
    """{source feature: most frequent training category} from the StringIndexer (frequencyDesc order)."""
    out: dict[str, str] = {}
    for stage in model.stages:
        if isinstance(stage, StringIndexerModel):
            for col, labels in zip(stage.getInputCols(), stage.labelsArray, strict=True):
                if labels:
                    out[col] = labels[0]
    return out


def slot_sources(model: PipelineModel, sample: DataFrame) -> list[str]:
    """Source feature of every slot of the classifier's input vector, in slot order.

    Read from the ML attributes of the assembler's output (schema only, no Spark job): `sample` goes
    through the stages up to the assembler only, since analysing the classifier and calibration costs
    seconds of driver time on a large model; the StandardScaler after it keeps slot positions.
    """
    assembler = _assembler(model)
    upto = PipelineModel(stages=model.stages[:model.stages.index(assembler) + 1])
    return slot_sources_of(model, upto.transform(sample).schema, sample.columns)


def slot_sources_of(model: PipelineModel, encoded: StructType, columns: Sequence[str]) -> list[str]:
    """`slot_sources` from the schema of a frame the model's encoding stages made (`columns`: the features')."""
    attrs_by_type = encoded[_assembler(model).getOutputCol()].metadata["ml_attr"]["attrs"]
    attrs = sorted((a for group in attrs_by_type.values() for a in group), key=lambda a: a["idx"])
    categorical = sorted(categorical_baselines(model), key=len, reverse=True)
    return [_source_of(a.get("name", ""), categorical, columns) for a in attrs]


def _assembler(model: PipelineModel) -> VectorAssembler:
    return next(s for s in model.stages if isinstance(s, VectorAssembler))


def _source_of(slot: str, categorical: Sequence[str], columns: Sequence[str]) -> str:
    for prefix in ("num__", "missing__"):
        if slot.startswith(prefix):
            name = slot[len(prefix):]
            # a cyclic position the pipeline derives (`tenure_days_mod_365`) belongs to its column
            derived = cyclic_column(name)
            return derived if derived is not None and name not in columns and derived in columns else name
    for c in categorical:  # longest first, so `plan` never claims `plan_type`'s slots
        if slot.startswith(f"cat__{c}_"):
            return c
    return slot


def source_importances(model: PipelineModel, sample: DataFrame,
                       sources: Sequence[str] | None = None) -> dict[str, float]:
    """{source: importance}: tree importances, or |coefficient| for LR (inputs standardised), summed per source.
    `sources`: `slot_sources(model, sample)` when the caller has it already (analysing the model's plan is not free)."""
    clf = classifier_stage(model)
    values = (clf.featureImportances.toArray() if hasattr(clf, "featureImportances")
              else abs(clf.coefficients.toArray()))
    out: dict[str, float] = {}
    for source, v in zip(slot_sources(model, sample) if sources is None else sources, values, strict=True):
        out[source] = out.get(source, 0.0) + float(v)
    return out


def top_sources(importances: dict[str, float], k: int) -> list[str]:
    """The k most important sources with non-zero importance (ties by name, deterministic)."""
    ranked = sorted((s for s, v in importances.items() if v > 0), key=lambda s: (-importances[s], s))
    return ranked[:k]


# --- choosing the three reasons ---------------------------------------------------------------------


def with_top_three(df: DataFrame, effects: Mapping[str, str], keep: Sequence[str]) -> DataFrame:
    """`keep` plus reason_1..3 from {feature: SQL text of its effect over `df`'s columns}: the largest positive
    effects first, ties by name.

    The effects become columns of their own first: the reasons read each one twice, and an effect made
    of tree expressions evaluated once per reference cost ~2.5x the time (68k accounts, 10 effects). Sorting
    (not positive, -effect, feature) ascending puts the positive effects first, by effect descending; the
    sorted array is a column too, so it is computed once per row for the three reasons, and no lambda
    function (a `filter` would be one) runs interpreted. SQL text, because an LR model has an effect per
    source feature (~240): built as `Column`s, their structs alone were ~7,500 calls into the JVM.
    """
    if not effects:
        return df.selectExpr(*map(quoted, keep), *[f"CAST(NULL AS STRING) AS {name}" for name in REASONS])
    named = {f: quoted(f"__effect{i}") for i, f in enumerate(effects)}
    kept = [quoted(c) for c in keep]
    staged = df.selectExpr(*kept, *[f"{e} AS {named[f]}" for f, e in effects.items()])
    structs = [f"named_struct('other', NOT coalesce({c} > 0, false), 'k', -{c}, 'f', {sql_string(f)})"
               for f, c in named.items()]
    ordered, array = quoted(_ORDERED), "sort_array(array(" + ", ".join(structs) + "))"
    return staged.selectExpr(*kept, f"{array} AS {ordered}").selectExpr(
        *kept, *[f"CASE WHEN NOT get({ordered}, {i}).other THEN get({ordered}, {i}).f END AS {name}"  # get: null
                 for i, name in enumerate(REASONS)])                                                  # past the end


def reason_coefficients(model: PipelineModel, sources: Sequence[str]) -> list[float]:
    """An LR model's coefficients per slot (`sources`: `slot_sources`) as reasons use them: 0 for the slots of a
    calendar feature, which is no account's reason. Both the batch job and the ONNX service's reasons
    (onnx/job.py) skip zero coefficients, so neither ever names the season."""
    coefs = classifier_stage(model).coefficients.toArray()
    return [0.0 if s in CALENDAR_FEATURES else float(c) for s, c in zip(sources, coefs, strict=True)]


def lr_contributions(model: PipelineModel, sample: DataFrame) -> dict[str, str]:
    """{source feature: sum over its slots of coefficient * standardised value} as SQL text over `SLOTS` (the
    `features` vector as an array: `with_slots`); calendar features are left out (`reason_coefficients`)."""
    sources = slot_sources(model, sample)
    coefs = reason_coefficients(model, sources)
    terms: dict[str, list[str]] = {}
    for j, source in enumerate(sources):
        if coefs[j] != 0.0:
            terms.setdefault(source, []).append(f"{sql_double(coefs[j])} * {quoted(SLOTS)}[{j}]")
    return {s: "(" + " + ".join(t) + ")" for s, t in terms.items()}


def with_slots(predicted: DataFrame) -> DataFrame:
    """`predicted` plus `SLOTS`, its `features` vector as an array (SQL has no function for the conversion)."""
    return predicted.withColumn(SLOTS, vector_to_array(F.col(VECTOR)))


def with_lr_reasons(predicted: DataFrame, model: PipelineModel, sample: DataFrame) -> DataFrame:
    """Add reason_1..3 to a frame predicted by an LR pipeline (needs the `features` vector)."""
    contributions = lr_contributions(model, sample)
    return with_top_three(with_slots(predicted), contributions, predicted.columns)


def split_at_classifier(model: PipelineModel) -> tuple[PipelineModel, PipelineModel]:
    """(encoding stages up to the classifier's input vector, classifier + calibration)."""
    clf = classifier_stage(model)
    at = model.stages.index(clf)
    return PipelineModel(stages=model.stages[:at]), calibrated(PipelineModel(stages=model.stages[at:]))


def occluded_slot_values(encode: PipelineModel, features: DataFrame, baselines: dict[str, Any],
                         sources: Sequence[str], slot_source: Sequence[str]) -> dict[str, dict[int, float]]:
    """{source: {slot: value}}: the vector slots of each source when that source is at its baseline.

    One account (any) with every candidate source set to its baseline goes through the model's own
    encoding stages, so imputation, missing indicators and one-hot slots come out exactly as the
    pipeline makes them: no re-implementation of the encoding. One row, one small job.
    """
    dtypes = dict(features.dtypes)
    usable = [s for s in sources if s in baselines and s in dtypes]
    if not usable:
        return {}
    row = encode.transform(features.limit(1).select(
        *[F.lit(baselines[c]).cast(dtypes[c]).alias(c) if c in usable else F.col(f"`{c}`") for c in features.columns]
    )).select(VECTOR).first()
    if row is None:  # nothing to score
        return {}
    vector = row[VECTOR].toArray()
    return {s: {j: float(vector[j]) for j, src in enumerate(slot_source) if src == s} for s in usable}


def occluded_vector(values: Column, slots: dict[int, float], size: int) -> Column:
    """The classifier's input vector with `slots` replaced, from `values` (the vector as a dense array of
    `size`): the untouched runs are array slices around the replaced slots, concatenated.

    Why slices and not a `transform` over every slot: a higher-order function's lambda runs interpreted, once
    per slot, row and variant (10 variants x ~240 slots per account); slices and concat are generated code
    and copy runs of values (98k accounts: the reasons took 24 s with the lambda)."""
    parts: list[Column] = []
    start = 0  # 0-based index of the first slot not yet copied
    for j in sorted(slots):
        if j > start:
            parts.append(F.slice(values, start + 1, j - start))
        parts.append(F.array(F.lit(float(slots[j]))))
        start = j + 1
    if start < size:
        parts.append(F.slice(values, start + 1, size - start))
    return array_to_vector(F.concat(*parts))


def occlusion_reasons(features: DataFrame, model: PipelineModel, sources: Sequence[str],
                      keys: Sequence[str], slot_source: Sequence[str] | None = None,
                      encoded: DataFrame | None = None) -> DataFrame:
    """Grain `keys`: `churn_probability` and reason_1..3, by occlusion of `sources`.

    effect(feature) = p(account) - p(account with that feature at its training baseline). The
    features are encoded once; a feature's occluded variant differs from the account's vector only
    in that feature's slots. An MLlib GBT small enough for Spark's generated code gets the effects
    from its trees (`trees.py`); larger ones and any other classifier score the K variants
    themselves (`_rescored_effects`). `encoded`: `features` through the model's encoding stages, when the
    caller has it already (each analysis of the pipeline costs driver time).
    """
    encode, classify = split_at_classifier(model)
    baselines: dict[str, Any] = {**numeric_baselines(model), **categorical_baselines(model)}
    encoded = encode.transform(features) if encoded is None else encoded
    slots_of = slot_sources_of(model, encoded.schema, features.columns) if slot_source is None else slot_source
    slot_values = occluded_slot_values(encode, features, baselines, sources, slots_of)
    clf = classifier_stage(model)
    if isinstance(clf, GBTClassificationModel):
        ensemble = trees.ensemble(clf)
        shifts = {s: trees.margin_shift(ensemble, "__values", slots) for s, slots in slot_values.items()}
        if trees.fits_in_generated_code(shifts.values()):
            return _tree_effects(encoded, classify, clf, shifts, keys)
    return _rescored_effects(encoded, classify, slot_values, keys, len(slots_of))


def _tree_effects(encoded: DataFrame, classify: PipelineModel, gbt: GBTClassificationModel,
                  shifts: dict[str, str | None], keys: Sequence[str]) -> DataFrame:
    """Effects from the GBT's margin and the margin shifts (`trees.margin_shift` over the vector `__values`):
    one row per account, no extra vectors. The calibration is applied to the probabilities of both
    margins, as the model does."""
    calibration = calibration_stage(classify)
    scored = classify.transform(encoded).select(
        *keys, *calibration.input_columns(), PROBABILITY,
        vector_to_array(F.col(gbt.getRawPredictionCol())).getItem(1).alias("__margin"),
        vector_to_array(F.col(VECTOR)).alias("__values"))
    margin = F.col("__margin")
    shifted = {s: shift for s, shift in shifts.items() if shift is not None}  # no tree reads the others: effect 0
    # the raw probabilities become columns before they are calibrated: a calibration reads its input several
    # times (an isotonic map once per comparison), and a margin shift is a whole tree expression
    raw = {s: f"__raw{i}" for i, s in enumerate(shifted)}
    staged = scored.select(*keys, *calibration.input_columns(), PROBABILITY,
                           trees.margin_probability(margin).alias("__raw"),
                           *[trees.margin_probability(margin + F.expr(shift)).alias(raw[s])
                             for s, shift in shifted.items()])
    # and each is calibrated once, into a column: the account's own would otherwise be calibrated in every effect
    calibrated = staged.select(*keys, PROBABILITY, calibration.calibrate("__raw").alias("__cal"),
                               *[calibration.calibrate(c).alias(f"__cal{c}") for c in raw.values()])
    effects = {s: f"{quoted('__cal')} - {quoted('__cal' + raw[s])}" for s in shifted}
    return with_top_three(calibrated, effects, [*keys, PROBABILITY])


def _rescored_effects(encoded: DataFrame, classify: PipelineModel, slot_values: dict[str, dict[int, float]],
                      keys: Sequence[str], size: int) -> DataFrame:
    """Effects by scoring the K occluded vectors (explode of K+1 vectors per account) with the classifier
    and calibration in one pass, folded back with one group-by (a column per occluded feature): the plan
    holds one copy of the encoding."""
    values = F.col("__values")
    carried = calibration_stage(classify).input_columns()  # the season a seasonal shift reads
    variants = F.array(
        F.struct(F.lit(None).cast("string").alias(_OCCLUDED), F.col(VECTOR).alias(VECTOR)),
        *[F.struct(F.lit(s).alias(_OCCLUDED), occluded_vector(values, slots, size).alias(VECTOR))
          for s, slots in slot_values.items()])
    exploded = (encoded.select(*keys, *carried, VECTOR, vector_to_array(F.col(VECTOR)).alias("__values"))
                .select(*keys, *carried, F.explode(variants).alias("__v")))
    scored = classify.transform(exploded.select(*keys, *carried, "__v.*"))
    original = F.col(_OCCLUDED).isNull()
    occluded = {s: f"__p{i}" for i, s in enumerate(slot_values)}
    folded = scored.groupBy(*keys).agg(
        F.max(F.when(original, F.col(PROBABILITY))).alias(PROBABILITY),
        *[F.max(F.when(F.col(_OCCLUDED) == F.lit(s), F.col(PROBABILITY))).alias(c) for s, c in occluded.items()])
    effects = {s: f"{quoted(PROBABILITY)} - {quoted(c)}" for s, c in occluded.items()}
    return with_top_three(folded, effects, [*keys, PROBABILITY])


def is_linear(model: PipelineModel) -> bool:
    return hasattr(classifier_stage(model), "coefficients")


def scores_with_reasons(features: DataFrame, model: PipelineModel, predict: Predict, candidates: int,
                        keys: Sequence[str]) -> DataFrame:
    """Grain `keys`: churn_probability + reason_1..3, by the method that fits the model."""
    sample = features.limit(0)
    if is_linear(model):
        predicted = predict(features)
        return with_lr_reasons(predicted, model, sample).select(*keys, PROBABILITY, *REASONS)
    # the encoding is analysed once: its schema names the slots, which both the importances and the occlusion need
    encoded = split_at_classifier(model)[0].transform(features)
    slots = slot_sources_of(model, encoded.schema, features.columns)
    importances = {s: v for s, v in source_importances(model, sample, slots).items() if s not in CALENDAR_FEATURES}
    sources = top_sources(importances, candidates)
    return occlusion_reasons(features, model, sources, keys, slots, encoded)
