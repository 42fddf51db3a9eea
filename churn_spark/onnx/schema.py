"""The feature schema written next to `model.onnx`: what a posted feature row must hold, checked without Spark.

Why a file of its own: a service validates a row (400 with the field names) and builds the onnxruntime
inputs from it without a JVM, so everything it needs is here: the inputs in graph order with the Spark SQL
type the model was trained on, each categorical input's vocabulary (index order; anything else, null
included, is the model's "unseen" slot), the model version and the calibration inside the graph.
No pyspark import in this module (the service imports it).

Format 2 adds `reasons` for a logistic-regression model: the source feature of every slot of the classifier's
input vector (the graph's `features_scaled` output) and the coefficients, so reasons are computed from the
graph's own numbers as the batch job computes them (score/reasons.py); null for tree models. Format 1 files
(no reasons) are still read, as a model without reasons.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from churn_spark.errors import ContractError

SCHEMA_FORMAT = 2
READABLE_FORMATS = (1, SCHEMA_FORMAT)  # 1: before `reasons` (read as a model without reasons)
INTEGER_TYPES = ("tinyint", "smallint", "int", "bigint")
REAL_TYPES = ("float", "double")
OUTPUT = "churn_probability"
RAW_OUTPUT = "churn_probability_raw"
SCALED_OUTPUT = "features_scaled"  # LR only: the classifier's input vector (StandardScaler output), float32 [N, k]


class FeatureRowError(ContractError):
    """A feature row that does not match the model's feature schema; `fields` names the offending fields."""

    def __init__(self, message: str, fields: list[str]) -> None:
        super().__init__(message)
        self.fields = fields


@dataclass(frozen=True)
class Feature:
    """One graph input: a feature column, its Spark SQL type, and for a categorical column its vocabulary."""

    name: str
    type: str
    kind: str  # "numeric" (graph input double, null -> NaN) or "categorical" (graph input string)
    vocabulary: list[str] | None = None


@dataclass(frozen=True)
class LinearReasons:
    """What reason codes need besides the graph: slot j of `features_scaled` belongs to source feature
    `slot_sources[j]` and has coefficient `coefficients[j]` (both from the fitted pipeline at export)."""

    slot_sources: list[str]
    coefficients: list[float]


@dataclass(frozen=True)
class FeatureSchema:
    """Contents of `model.onnx.json`."""

    model_version: str
    model_type: str
    calibration: dict[str, Any]
    features: list[Feature]
    null_category: str  # what a null categorical value is fed as: a string outside every vocabulary
    ignored_fields: list[str] = field(default_factory=list)  # keys a row may carry; not model inputs
    outputs: list[str] = field(default_factory=lambda: [RAW_OUTPUT, OUTPUT])  # graph order
    reasons: LinearReasons | None = None  # LR models only; trees have no additive contributions
    format: int = SCHEMA_FORMAT

    def to_json(self) -> bytes:
        return json.dumps(asdict(self), indent=2).encode()

    @classmethod
    def from_json(cls, text: str | bytes) -> FeatureSchema:
        data = json.loads(text)
        if data.get("format") not in READABLE_FORMATS:
            raise ContractError(f"ONNX feature schema format {data.get('format')!r}, this code reads "
                                f"{', '.join(map(str, READABLE_FORMATS))}")
        reasons = data.get("reasons")
        return cls(**{**data, "features": [Feature(**f) for f in data["features"]],
                      "reasons": None if reasons is None else LinearReasons(**reasons)})


def type_matches(spark_type: str, value: Any) -> bool:
    """Whether a JSON value can stand for a column of `spark_type` (null always can: features are nullable).

    bool is not a number here although Python says so: `true` posted for a count is a client bug.
    """
    if value is None:
        return True
    if spark_type == "string":
        return isinstance(value, str)
    if spark_type == "boolean":
        return isinstance(value, bool)
    if isinstance(value, bool):
        return False
    if spark_type in INTEGER_TYPES:
        return isinstance(value, int)
    if spark_type in REAL_TYPES or spark_type.startswith("decimal"):
        return isinstance(value, int | float)
    return False


def row_problems(schema: FeatureSchema, row: Mapping[str, Any]) -> tuple[list[str], list[str]]:
    """(problems as text, offending field names) of one posted row; both empty when it is valid."""
    names = [f.name for f in schema.features]
    missing = [n for n in names if n not in row]
    mistyped = [f for f in schema.features if f.name in row and not type_matches(f.type, row[f.name])]
    unknown = [k for k in row if k not in names and k not in schema.ignored_fields]
    problems = []
    if missing:
        problems.append("missing fields: " + ", ".join(missing))
    if mistyped:
        problems.append("wrongly typed fields: " + ", ".join(
            f"{f.name} (expected {f.type}, got {type(row[f.name]).__name__})" for f in mistyped))
    if unknown:
        problems.append("unknown fields: " + ", ".join(unknown))
    return problems, missing + [f.name for f in mistyped] + unknown


def check_rows(schema: FeatureSchema, rows: Sequence[Mapping[str, Any]]) -> None:
    """Raise FeatureRowError naming the fields of the first invalid row (the service answers 400 with it)."""
    for i, row in enumerate(rows):
        if not isinstance(row, Mapping):
            raise FeatureRowError(f"feature row {i} is not an object", [])
        problems, fields = row_problems(schema, row)
        if problems:
            where = f"feature row {i}: " if len(rows) > 1 else "feature row: "
            raise FeatureRowError(where + "; ".join(problems), fields)


def _number(value: Any) -> float:
    return math.nan if value is None else float(value)


def to_inputs(schema: FeatureSchema, rows: Sequence[Mapping[str, Any]]) -> dict[str, np.ndarray]:
    """onnxruntime's feed for validated rows: numeric inputs float64 [N, 1] (null -> NaN), categorical
    inputs strings [N, 1] (null -> the schema's `null_category`, which the graph treats as unseen)."""
    check_rows(schema, rows)
    feed: dict[str, np.ndarray] = {}
    for f in schema.features:
        values = [row[f.name] for row in rows]
        if f.kind == "categorical":
            feed[f.name] = np.array([schema.null_category if v is None else v for v in values],
                                    dtype=object).reshape(-1, 1)
        else:
            feed[f.name] = np.array([_number(v) for v in values], dtype=np.float64).reshape(-1, 1)
    return feed
