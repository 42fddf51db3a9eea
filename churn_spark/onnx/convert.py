"""The registered PipelineModel as one ONNX graph that returns the calibrated churn probability.

onnxmltools' Spark ML converter (`convert_sparkml`) converts the middle of the pipeline: Imputer,
StringIndexer, OneHotEncoder, VectorAssembler, StandardScaler and the classifier. Three parts it cannot
convert, or converts differently from what Spark computes, are built here with `onnx.helper`:

- the numeric-cleaning SQLTransformer (non-finite -> missing, signed log1p for LR, cyclic positions,
  0/1 missing indicators): its statement is checked against `prepare_statement` first, so a changed
  training pipeline fails the export instead of exporting a different model;
- Imputer (a converter override): onnxmltools' node layout for several columns is invalid from opset 13 on;
- StandardScaler (a converter override): onnxmltools scales a column constant in training by 1 / 0, Spark by 0;
- StringIndexer (a converter override): onnxmltools maps an unseen category to -1, Spark's
  `handleInvalid="keep"` to `len(labels)` (the OneHotEncoder's "unseen" slot);
- GBT (a converter override): onnxmltools reads a categorical split's first category as a `<=` threshold,
  wrong when the left branch holds category 1 (Spark treats one-hot slots as binary categorical features);
- the Calibration stage (Platt or isotonic, then the seasonal shift when it has one), in float64, after the
  classifier.

Graph inputs: one [N, 1] tensor per feature column, float64 (NaN for null) or string; outputs
`churn_probability_raw`, for LR models `features_scaled` (the classifier's input vector, float32 [N, k]: the
reason codes multiply it by the coefficients, runtime.py) and (last) `churn_probability`, float64 [N, 1].
The converted middle computes in float32 (onnxmltools' choice), which is why parity is measured, not
assumed (docs/model.md).
"""

from __future__ import annotations

import contextlib
import io
from collections.abc import Sequence
from typing import Any

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper
from pyspark.ml import PipelineModel, Transformer
from pyspark.ml.classification import GBTClassificationModel, LogisticRegressionModel
from pyspark.ml.feature import (
    ImputerModel,
    OneHotEncoderModel,
    SQLTransformer,
    StandardScalerModel,
    StringIndexerModel,
    VectorAssembler,
)
from pyspark.sql import Row, SparkSession

from churn_spark.errors import ContractError
from churn_spark.features.catalog import SEASON_COS, SEASON_SIN
from churn_spark.onnx.schema import OUTPUT, RAW_OUTPUT, SCALED_OUTPUT
from churn_spark.train import pipeline as P

OPSET = 15  # ai.onnx opset of the graph: the highest onnxmltools 1.16 converts to; onnxruntime >= 1.10
IR_VERSION = 8  # the IR version of opset 15: older runtimes load the file too
CONVERTIBLE = (ImputerModel, StringIndexerModel, OneHotEncoderModel, VectorAssembler, StandardScalerModel,
               LogisticRegressionModel, GBTClassificationModel)
STRING_INDEXER = "pyspark.ml.feature.StringIndexerModel"
IMPUTER = "pyspark.ml.feature.ImputerModel"
GBT = "pyspark.ml.classification.GBTClassificationModel"
STANDARD_SCALER = "pyspark.ml.feature.StandardScalerModel"


class GraphBuilder:
    """Nodes and constants of a hand-built part of the graph, with names under one prefix."""

    def __init__(self, prefix: str) -> None:
        self.prefix = prefix
        self.nodes: list[onnx.NodeProto] = []
        self.initializers: list[onnx.TensorProto] = []
        self._n = 0

    def name(self, what: str) -> str:
        self._n += 1
        return f"{self.prefix}__{what}_{self._n}"

    def const(self, value: Any, dtype: Any = np.float64) -> str:
        name = self.name("const")
        self.initializers.append(numpy_helper.from_array(np.asarray(value, dtype=dtype), name))
        return name

    def op(self, op_type: str, inputs: Sequence[str], out: str | None = None, **attrs: Any) -> str:
        out = out or self.name(op_type.lower())
        self.nodes.append(helper.make_node(op_type, list(inputs), [out], name=self.name(op_type), **attrs))
        return out


# --- the numeric-cleaning SQLTransformer ------------------------------------------------------------


def add_prepare(g: GraphBuilder, columns: P.FeatureColumns, log_scale: bool) -> None:
    """`dbl__<c>`, `dbl__<c>_mod_<p>` and `missing__<c>` (float32 [N, 1]) from the float64 inputs, as
    `prepare_statement` computes them: +-inf -> NaN (Spark: null), NaN stays missing for the Imputer."""
    nan = g.const([np.nan])
    clean = {c: g.op("Where", [g.op("IsInf", [c]), nan, c]) for c in columns.numeric}
    for c in columns.numeric:
        v = clean[c]
        if log_scale:  # signum(v) * ln(1 + |v|)
            v = g.op("Mul", [g.op("Sign", [v]), g.op("Log", [g.op("Add", [g.const([1.0]), g.op("Abs", [v])])])])
        g.op("Cast", [v], out="dbl__" + c, to=TensorProto.FLOAT)
    for c, period in columns.cyclic.items():  # Spark's pmod: r = a % n; r < 0 ? (r + n) % n : r
        n = g.const([float(period)])
        r = g.op("Mod", [clean[c], n], fmod=1)
        wrapped = g.op("Mod", [g.op("Add", [r, n]), n], fmod=1)
        pmod = g.op("Where", [g.op("Less", [r, g.const([0.0])]), wrapped, r])
        g.op("Cast", [pmod], out="dbl__" + P.cyclic_name(c, period), to=TensorProto.FLOAT)
    for c in columns.missing_indicators:
        g.op("Cast", [g.op("IsNaN", [clean[c]])], out="missing__" + c, to=TensorProto.FLOAT)


# --- calibration -----------------------------------------------------------------------------------


def calibration_only_inputs(calibration: P.Calibration, columns: P.FeatureColumns) -> list[str]:
    """Columns the calibration reads that the classifier does not (a seasonal shift's season when the model
    excludes it): extra numeric graph inputs, after the classifier's, read as given (no imputation)."""
    return [c for c in calibration.input_columns() if c not in columns.numeric]


def add_calibration(g: GraphBuilder, probability: str, calibration: P.Calibration) -> None:
    """`churn_probability_raw` (P(class 1), float64) and `churn_probability` = its calibration; a seasonal shift
    reads the graph's `season_cos` and `season_sin` inputs (model inputs, else `calibration_only_inputs`)."""
    described = calibration.describe()
    terms = calibration.season_terms()
    mapped = g.name("mapped") if terms else OUTPUT
    p1 = g.op("Slice", [probability, g.const([1], np.int64), g.const([2], np.int64), g.const([1], np.int64)])
    raw = g.op("Cast", [p1], out=RAW_OUTPUT, to=TensorProto.DOUBLE)
    if described["method"] == "platt":
        add_platt(g, raw, float(described["slope"]), float(described["intercept"]), mapped)
    elif described["method"] == "isotonic":
        add_isotonic(g, raw, described["boundaries"], described["predictions"], mapped,
                     float(described.get("tie_break", 0.0)))
    else:
        raise ContractError(f"calibration {described['method']!r} has no ONNX form")
    if terms:
        add_seasonal_shift(g, mapped, terms)


def _sigmoid_of(g: GraphBuilder, z: str, out: str) -> str:
    return g.op("Reciprocal", [g.op("Add", [g.const([1.0]), g.op("Exp", [g.op("Neg", [z])])])], out=out)


def _logit_of(g: GraphBuilder, p: str) -> str:
    """log(p / (1 - p)) of p clipped to [EPS, 1 - EPS], as `pipeline.logit`."""
    clipped = g.op("Clip", [p, g.const(P.EPS), g.const(1 - P.EPS)])
    return g.op("Log", [g.op("Div", [clipped, g.op("Sub", [g.const([1.0]), clipped])])])


def add_platt(g: GraphBuilder, raw: str, slope: float, intercept: float, out: str = OUTPUT) -> None:
    """1 / (1 + exp(-(slope * logit(clip(raw, EPS, 1 - EPS)) + intercept))), as `pipeline.platt`."""
    z = g.op("Add", [g.op("Mul", [g.const([slope]), _logit_of(g, raw)]), g.const([intercept])])
    _sigmoid_of(g, z, out)


def add_seasonal_shift(g: GraphBuilder, p: str, terms: Sequence[float]) -> None:
    """sigmoid(logit(p) + k_cos (season_cos - c_cos) + k_sin (season_sin - c_sin)), as `pipeline.seasonal_shift`;
    a row without a season (NaN) is not moved."""
    k_cos, k_sin, c_cos, c_sin = (float(t) for t in terms)
    shift = g.op("Add", [g.op("Mul", [g.const([k_cos]), g.op("Sub", [SEASON_COS, g.const([c_cos])])]),
                         g.op("Mul", [g.const([k_sin]), g.op("Sub", [SEASON_SIN, g.const([c_sin])])])])
    moved = g.op("Where", [g.op("IsNaN", [shift]), g.const([0.0]), shift])
    _sigmoid_of(g, g.op("Add", [_logit_of(g, p), moved]), OUTPUT)


def add_isotonic(g: GraphBuilder, raw: str, boundaries: Sequence[float], predictions: Sequence[float],
                 out: str = OUTPUT, tie_break: float = 0.0) -> None:
    """Piecewise-linear through the knots, flat outside, later knot wins at a repeated boundary: the same
    steps as `pipeline.interpolate` (i = knots at or below x, then the ramp between knots i-1 and i); then
    (1 - w) map + w raw for a tie break w > 0, as `IsotonicCalibration.map_raw`."""
    n = len(boundaries)
    b, p = g.const(boundaries), g.const(predictions)
    at_or_below = g.op("Cast", [g.op("LessOrEqual", [g.const([list(boundaries)]), raw])], to=TensorProto.INT64)
    i = g.op("ReduceSum", [at_or_below, g.const([1], np.int64)], keepdims=1)  # [N, 1]
    one_i = g.const([1], np.int64)
    lo = g.op("Sub", [g.op("Max", [i, one_i]), one_i])
    hi = g.op("Sub", [g.op("Min", [g.op("Add", [i, one_i]), g.const([n], np.int64)]), one_i])
    lo_b, hi_b = g.op("Gather", [b, lo]), g.op("Gather", [b, hi])
    lo_p, hi_p = g.op("Gather", [p, lo]), g.op("Gather", [p, hi])
    step = g.op("Mul", [g.op("Sub", [hi_p, lo_p]), g.op("Sub", [raw, lo_b])])
    ramp = g.op("Add", [lo_p, g.op("Div", [step, g.op("Sub", [hi_b, lo_b])])])
    beyond = g.op("Where", [g.op("GreaterOrEqual", [i, g.const([n], np.int64)]), g.const([predictions[-1]]), ramp])
    mapped = g.op("Where", [g.op("Equal", [i, g.const([0], np.int64)]), g.const([predictions[0]]), beyond],
                  out=out if tie_break == 0.0 else None)
    if tie_break != 0.0:
        g.op("Add", [g.op("Mul", [g.const([1.0 - tie_break]), mapped]), g.op("Mul", [g.const([tie_break]), raw])],
             out=out)


# --- converter overrides ---------------------------------------------------------------------------


def convert_imputer(scope: Any, operator: Any, container: Any) -> None:
    """One Imputer node per column, NaN -> that column's surrogate (read by name). onnxmltools concatenates
    the columns and splits them back with Split's `split` attribute, which opset 13 and later reject."""
    op: ImputerModel = operator.raw_operator
    row = op.surrogateDF.first()  # one row: a surrogate per input column
    assert row is not None
    for i, column in enumerate(op.getInputCols()):
        container.add_node("Imputer", [operator.inputs[i].full_name], [operator.outputs[i].full_name],
                           op_domain="ai.onnx.ml", op_version=1, name=scope.get_unique_operator_name("Imputer"),
                           imputed_value_floats=[float(row[column])], replaced_value_float=float("nan"))


def convert_string_indexer(scope: Any, operator: Any, container: Any) -> None:
    """LabelEncoder per column with unseen (and null, fed as the schema's null category) -> len(labels)."""
    op: StringIndexerModel = operator.raw_operator
    if op.getHandleInvalid() != "keep":
        raise ContractError(f"StringIndexer handleInvalid={op.getHandleInvalid()!r}: the export supports 'keep'")
    for i, labels in enumerate(op.labelsArray):
        container.add_node("LabelEncoder", [operator.inputs[i].full_name], [operator.outputs[i].full_name],
                           op_domain="ai.onnx.ml", op_version=2,
                           name=scope.get_unique_operator_name("StringIndexer"), keys_strings=list(labels),
                           values_int64s=list(range(len(labels))), default_int64=len(labels))


def convert_standard_scaler(scope: Any, operator: Any, container: Any) -> None:
    """Scaler with Spark's rule for a constant training column: scale 0 where the std is 0 (onnxmltools writes
    1 / 0 = inf, and inf * 0 gives NaN: a feature constant in training made every probability NaN)."""
    op: StandardScalerModel = operator.raw_operator
    width = len(op.std)
    offset = [float(x) for x in op.mean.toArray()] if op.getOrDefault("withMean") else [0.0] * width
    scale = ([1.0 / x if x != 0.0 else 0.0 for x in op.std.toArray()] if op.getOrDefault("withStd")
             else [1.0] * width)
    container.add_node("Scaler", operator.inputs[0].full_name, operator.output_full_names, op_domain="ai.onnx.ml",
                       name=scope.get_unique_operator_name("Scaler"), offset=offset, scale=scale)


def tree_attributes(nodes: Sequence[Row], weights: Sequence[float]) -> dict[str, Any]:
    """TreeEnsembleRegressor attributes summing every tree's leaf prediction times its weight.

    `nodes`: rows of a saved tree ensemble's `data` (treeID and nodeData's fields). A continuous split
    sends x <= threshold left; a binary categorical split (a one-hot slot) sends its left categories
    left, as `x <= 0.5` (left = {0}) or `x > 0.5` (left = {1}).
    """
    a: dict[str, list[Any]] = {k: [] for k in ("nodes_treeids", "nodes_nodeids", "nodes_featureids",
                                               "nodes_modes", "nodes_values", "nodes_truenodeids",
                                               "nodes_falsenodeids", "target_treeids", "target_nodeids",
                                               "target_ids", "target_weights")}
    for r in sorted(nodes, key=lambda r: (r["treeID"], r["id"])):
        tree, node, leaf = int(r["treeID"]), int(r["id"]), r["leftChild"] < 0
        mode, feature, value = ("LEAF", 0, 0.0) if leaf else split_mode(r["split"])
        for key, v in (("nodes_treeids", tree), ("nodes_nodeids", node), ("nodes_featureids", feature),
                       ("nodes_modes", mode), ("nodes_values", value),
                       ("nodes_truenodeids", 0 if leaf else int(r["leftChild"])),
                       ("nodes_falsenodeids", 0 if leaf else int(r["rightChild"]))):
            a[key].append(v)
        if leaf:
            for key, v in (("target_treeids", tree), ("target_nodeids", node), ("target_ids", 0),
                           ("target_weights", float(r["prediction"]) * float(weights[tree]))):
                a[key].append(v)
    return {**a, "n_targets": 1, "aggregate_function": "SUM", "post_transform": "NONE"}


def split_mode(split: Row) -> tuple[str, int, float]:
    """(mode, feature index, threshold) of a Spark split; a true branch is the left child."""
    feature, left, categories = int(split["featureIndex"]), list(split["leftCategoriesOrThreshold"]), \
        int(split["numCategories"])
    if categories == -1:
        return "BRANCH_LEQ", feature, float(left[0])
    if categories == 2 and left in ([0.0], [1.0]):
        return ("BRANCH_LEQ" if left == [0.0] else "BRANCH_GT"), feature, 0.5
    raise ContractError(f"a tree splits feature {feature} on {categories} categories: the export supports "
                        "continuous and binary (one-hot) features")


def gbt_converter(spark: SparkSession, saved_pipeline: str) -> Any:
    """The GBT converter: one TreeEnsembleRegressor for the margin m, probability [1/(1+e^{2m}), 1/(1+e^{-2m})]
    and prediction argmax([-m, m]) (Spark's GBTClassificationModel).

    The trees are read from the saved PipelineModel (`stages/<index>_<uid>/data`), not saved again to a
    temporary folder as onnxmltools does (which it never removes, and which needs a shared folder on a cluster).
    """
    def convert(scope: Any, operator: Any, container: Any) -> None:
        op: GBTClassificationModel = operator.raw_operator
        data = spark.read.parquet(f"{saved_pipeline.rstrip('/')}/stages/*_{op.uid}/data")
        nodes = data.select("treeID", "nodeData.*").collect()  # model-sized: trees x nodes, not data-sized
        margin = scope.get_unique_variable_name("gbt_margin")
        container.add_node("TreeEnsembleRegressor", [operator.inputs[0].full_name], [margin], op_domain="ai.onnx.ml",
                           op_version=1, name=scope.get_unique_operator_name("GBT"),
                           **tree_attributes(nodes, list(op.treeWeights)))
        names = {k: scope.get_unique_variable_name("gbt_" + k) for k in ("two", "m2", "neg_m2", "p0", "p1",
                                                                          "neg_m", "raw")}
        container.add_initializer(names["two"], TensorProto.FLOAT, [1], [2.0])
        container.add_node("Mul", [margin, names["two"]], [names["m2"]], name=scope.get_unique_operator_name("Mul"))
        container.add_node("Neg", [names["m2"]], [names["neg_m2"]], name=scope.get_unique_operator_name("Neg"))
        container.add_node("Sigmoid", [names["neg_m2"]], [names["p0"]], name=scope.get_unique_operator_name("Sig"))
        container.add_node("Sigmoid", [names["m2"]], [names["p1"]], name=scope.get_unique_operator_name("Sig"))
        container.add_node("Concat", [names["p0"], names["p1"]], [operator.outputs[1].full_name], axis=1,
                           name=scope.get_unique_operator_name("Concat"))
        container.add_node("Neg", [margin], [names["neg_m"]], name=scope.get_unique_operator_name("Neg"))
        container.add_node("Concat", [names["neg_m"], margin], [names["raw"]], axis=1,
                           name=scope.get_unique_operator_name("Concat"))
        container.add_node("ArgMax", [names["raw"]], [operator.outputs[0].full_name], axis=1, keepdims=0,
                           name=scope.get_unique_operator_name("ArgMax"))

    return convert


# --- the whole graph -------------------------------------------------------------------------------


def split_stages(model: PipelineModel, columns: P.FeatureColumns, model_type: str
                 ) -> tuple[list[Transformer], P.Calibration]:
    """The stages onnxmltools converts, and the calibration; raise ContractError on anything else."""
    stages = P.calibrated(model).stages
    first, middle, last = stages[0], stages[1:-1], stages[-1]
    if not isinstance(first, SQLTransformer) or not isinstance(last, P.Calibration):
        raise ContractError("ONNX export: the model does not start with the cleaning SQLTransformer and end with "
                            "a Calibration stage (not a churn-spark pipeline?)")
    expected = P.prepare_statement(columns, log_scale=model_type == "lr")
    if first.getStatement() != expected:
        raise ContractError("ONNX export: the model's cleaning statement differs from this code's "
                            "prepare_statement (trained by another version?); retrain or export with that version")
    if other := [type(s).__name__ for s in middle if not isinstance(s, CONVERTIBLE)]:
        raise ContractError(f"ONNX export supports model.type lr and gbt; this model has stage(s) "
                            f"{', '.join(other)} (model.type {model_type})")
    return middle, last


def vocabularies(model: PipelineModel) -> dict[str, list[str]]:
    """Categorical column -> its StringIndexer labels in index order (the schema file records them)."""
    out: dict[str, list[str]] = {}
    for s in model.stages:
        if isinstance(s, StringIndexerModel):
            out.update({c: list(labels) for c, labels in zip(s.getInputCols(), s.labelsArray, strict=True)})
    return out


def scaled_output(core: onnx.GraphProto, middle: Sequence[Transformer]) -> list[onnx.NodeProto]:
    """LR: an Identity from the LinearClassifier's input (the StandardScaler output) to `features_scaled`, so
    the service's reasons use the very vector the graph classifies; trees: nothing."""
    lr = [s for s in middle if isinstance(s, LogisticRegressionModel)]
    inputs = [n.input[0] for n in core.node if n.op_type == "LinearClassifier"]
    if not lr:
        return []
    if len(inputs) != 1:
        raise ContractError(f"ONNX export: expected one LinearClassifier node for the LR model, found {len(inputs)}")
    return [helper.make_node("Identity", inputs, [SCALED_OUTPUT], name="reasons__features_scaled")]


def to_onnx(spark: SparkSession, model: PipelineModel, columns: P.FeatureColumns, model_type: str,
            name: str, saved_pipeline: str) -> onnx.ModelProto:
    """The checked ONNX graph of `model`, a churn PipelineModel trained on `columns` and saved (loaded) at
    `saved_pipeline`."""
    import onnxmltools.convert.sparkml.operator_converters  # noqa: F401  (registers the converters and shapes)
    from onnxmltools import convert_sparkml
    from onnxmltools.convert.common._registration import get_shape_calculator
    from onnxmltools.convert.common.data_types import FloatTensorType, StringTensorType

    middle, calibration = split_stages(model, columns, model_type)
    prepared = (["dbl__" + c for c in columns.imputed] + ["missing__" + c for c in columns.missing_indicators])
    initial = ([(c, FloatTensorType([None, 1])) for c in prepared]
               + [(c, StringTensorType([None, 1])) for c in columns.categorical])
    overrides = {IMPUTER: convert_imputer, STRING_INDEXER: convert_string_indexer,
                 STANDARD_SCALER: convert_standard_scaler, GBT: gbt_converter(spark, saved_pipeline)}
    with contextlib.redirect_stdout(io.StringIO()):  # onnxmltools' LR converter pprints its attributes
        core = convert_sparkml(PipelineModel(stages=middle), name, initial, target_opset=OPSET, spark_session=spark,
                               custom_conversion_functions=overrides,
                               # the library's own output shapes (it skips them for overridden converters)
                               custom_shape_calculators={k: get_shape_calculator(k) for k in overrides})
    for node in core.graph.node:  # some converters name the default domain "ai.onnx": one import covers both
        if node.domain == "ai.onnx":
            node.domain = ""
    used = {o for n in core.graph.node for o in n.output} | {i.name for i in core.graph.initializer}
    if clash := sorted((set(columns.numeric) | {SCALED_OUTPUT}) & used):
        raise ContractError(f"ONNX export: feature name(s) {', '.join(clash)} clash with the converter's names")
    probability = next(o.name for o in core.graph.output if o.name.startswith(P.PROBABILITY_COL))
    prep, cal = GraphBuilder("prep"), GraphBuilder("calibration")
    add_prepare(prep, columns, log_scale=model_type == "lr")
    add_calibration(cal, probability, calibration)
    inputs = ([helper.make_tensor_value_info(c, TensorProto.DOUBLE, [None, 1])
               for c in [*columns.numeric, *calibration_only_inputs(calibration, columns)]]
              + [i for i in core.graph.input if i.name in columns.categorical])
    # the calibrated probability last: a reader that takes the last output (serve/scorer.py does) gets it
    scaled = scaled_output(core.graph, middle)
    width = [len(classifier.coefficients) for classifier in middle if isinstance(classifier, LogisticRegressionModel)]
    outputs = [helper.make_tensor_value_info(RAW_OUTPUT, TensorProto.DOUBLE, [None, 1]),
               *[helper.make_tensor_value_info(SCALED_OUTPUT, TensorProto.FLOAT, [None, k]) for k in width],
               helper.make_tensor_value_info(OUTPUT, TensorProto.DOUBLE, [None, 1])]
    graph = helper.make_graph([*prep.nodes, *core.graph.node, *scaled, *cal.nodes], name, inputs, outputs,
                              [*core.graph.initializer, *prep.initializers, *cal.initializers])
    opsets = [o for o in core.opset_import if o.domain not in ("", "ai.onnx")] + [helper.make_opsetid("", OPSET)]
    out = helper.make_model(graph, opset_imports=opsets, producer_name="churn-spark",
                          ir_version=IR_VERSION)
    onnx.checker.check_model(out, full_check=True)
    return out
