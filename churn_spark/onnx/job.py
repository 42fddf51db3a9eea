"""`churn-spark model export --format onnx`: write `models/<version>/model.onnx` and `model.onnx.json`.

The schema file is written first and the graph last, so a version folder with `model.onnx` always has
its schema beside it (a service polls for the graph). Both are replaced atomically (registry.write_bytes).
For an LR model the schema also records each vector slot's source feature and coefficient, read with the
batch reasons' own `slot_sources` (score/reasons.py), so the service's reasons name the same features.
"""

from __future__ import annotations

import importlib.util
from typing import Any

from pyspark.ml import PipelineModel
from pyspark.sql import SparkSession

from churn_spark.config import Settings
from churn_spark.errors import ConfigError, ContractError, EnvironmentProblem
from churn_spark.onnx.runtime import SCHEMA_SUFFIX
from churn_spark.onnx.schema import OUTPUT, RAW_OUTPUT, SCALED_OUTPUT, Feature, FeatureSchema, LinearReasons
from churn_spark.schemas import FEATURE_KEY_COLUMNS
from churn_spark.score import reasons as reason_codes
from churn_spark.train import pipeline as P
from churn_spark.train import registry as R

FORMATS = ("onnx",)
MODEL_FILE = "model.onnx"
EXPORT_MISSING = "ONNX export needs onnxmltools and onnx: pip install 'churn-spark[onnx]'"
NULL_CATEGORY = "\u0000null"  # fed for a null categorical value; never a vocabulary entry (checked)


def linear_reasons(spark: SparkSession, model: PipelineModel, types: dict[str, str]) -> LinearReasons | None:
    """Slot -> source feature and the coefficients of an LR model as reasons use them (calendar slots 0; None for
    trees): `slot_sources` reads the assembler's ML attributes from the schema of an empty frame with the
    training feature types (no job)."""
    if not reason_codes.is_linear(model):
        return None
    sample = spark.createDataFrame([], ", ".join(f"`{c}` {t}" for c, t in types.items()))
    sources = reason_codes.slot_sources(model, sample)
    return LinearReasons(sources, reason_codes.reason_coefficients(model, sources))


def feature_schema_for(metadata: dict[str, Any], model: PipelineModel, columns: P.FeatureColumns,
                       reasons: LinearReasons | None = None) -> FeatureSchema:
    """The schema file's contents: graph inputs in order (numeric, then categorical) with their training
    types and vocabularies, the fields a row may carry that the model ignores, and an LR model's reasons."""
    from churn_spark.onnx.convert import calibration_only_inputs, vocabularies

    types: dict[str, str] = metadata["feature_schema"]
    vocab = vocabularies(model)
    if any(NULL_CATEGORY in v for v in vocab.values()):
        raise ConfigError("ONNX export: a category equals the null placeholder; cannot encode nulls apart")
    # the season of a shift the classifier excludes is still an input (models saved before it was recorded: double)
    extra = calibration_only_inputs(P.calibration_stage(model), columns)
    features = ([Feature(c, types.get(c, "double") if c in extra else types[c], "numeric")
                 for c in [*columns.numeric, *extra]]
                + [Feature(c, types[c], "categorical", vocab[c]) for c in columns.categorical])
    ignored = [c for c in (*FEATURE_KEY_COLUMNS, *metadata.get("dropped_features", []),
                           *metadata.get("config", {}).get("model", {}).get("exclude_features", []))
               if c not in extra]
    return FeatureSchema(model_version=str(metadata["version"]), model_type=str(metadata["model_type"]),
                         calibration=P.calibration_of(model), features=features, null_category=NULL_CATEGORY,
                         ignored_fields=list(dict.fromkeys(ignored)), reasons=reasons,
                         outputs=[RAW_OUTPUT, SCALED_OUTPUT, OUTPUT] if reasons else [RAW_OUTPUT, OUTPUT])


def run_export(spark: SparkSession, settings: Settings, model_version: str | None = None,
               fmt: str = "onnx") -> dict[str, Any]:
    """Export the registered model `model_version` (default: current) to `fmt`; returns what was written."""
    if fmt not in FORMATS:
        raise ConfigError(f"--format {fmt!r}: supported formats are {', '.join(FORMATS)}")
    if importlib.util.find_spec("onnxmltools") is None or importlib.util.find_spec("onnx") is None:
        raise EnvironmentProblem(EXPORT_MISSING)
    from churn_spark.onnx.convert import to_onnx

    registered = R.load_model(spark, settings, model_version)
    metadata = {"version": registered.version, **registered.metadata}
    columns = P.FeatureColumns(**metadata["feature_columns"])
    graph = to_onnx(spark, registered.model, columns, str(metadata["model_type"]), f"churn-{registered.version}",
                    f"{registered.path}/{R.PIPELINE_DIR}")
    types: dict[str, str] = metadata["feature_schema"]
    schema = feature_schema_for(metadata, registered.model, columns, linear_reasons(spark, registered.model, types))
    if schema.outputs != [o.name for o in graph.graph.output]:  # the service reads outputs by these names
        raise ContractError(f"ONNX export: graph outputs {[o.name for o in graph.graph.output]} differ from the "
                            f"schema's {schema.outputs}")
    path = f"{registered.path}/{MODEL_FILE}"
    data = graph.SerializeToString()
    R.write_bytes(spark, path + SCHEMA_SUFFIX, schema.to_json())
    R.write_bytes(spark, path, data)
    return {"model_version": registered.version, "model_type": schema.model_type, "path": path,
            "schema_path": path + SCHEMA_SUFFIX, "bytes": len(data), "inputs": len(schema.features),
            "calibration": schema.calibration["method"], "reasons": schema.reasons is not None}
