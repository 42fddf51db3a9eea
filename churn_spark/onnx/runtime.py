"""Score posted feature rows with the exported graph and onnxruntime: no JVM, no Spark.

This is what the REST service calls: `OnnxChurnModel.load("models/<version>/model.onnx")`, then
`predict(rows)`, or `score(rows)` for probabilities and, for an LR model, reason_1..3; a row that does
not match the schema raises FeatureRowError with the field names.

Reasons follow the batch job's rule (churn_spark/score/reasons.py, which needs Spark; this module must
not): contribution of a source feature = sum over its slots of coefficient * standardised slot value, the
slots read from the graph's own `features_scaled` output; reasons = the three largest positive ones, ties
by name.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from churn_spark.errors import ContractError, EnvironmentProblem
from churn_spark.onnx.schema import OUTPUT, SCALED_OUTPUT, FeatureSchema, LinearReasons, to_inputs

SCHEMA_SUFFIX = ".json"  # model.onnx -> model.onnx.json
ONNX_MISSING = "ONNX scoring needs onnxruntime: pip install 'churn-spark[onnx]'"


REASON_COUNT = 3


def contributions(reasons: LinearReasons, scaled: np.ndarray) -> tuple[list[str], np.ndarray]:
    """(source features, [N, sources] contributions) of the rows' standardised vectors `scaled` [N, k].

    Slots with a zero coefficient are skipped and each source's terms are added in slot order, as the
    batch job's `lr_contributions` builds its sums.
    """
    if scaled.ndim != 2 or scaled.shape[1] != len(reasons.coefficients) or \
            len(reasons.slot_sources) != len(reasons.coefficients):
        raise ContractError(f"ONNX reasons: {len(reasons.slot_sources)} slot sources and "
                            f"{len(reasons.coefficients)} coefficients for a vector of shape {scaled.shape}")
    sources = list(dict.fromkeys(s for s, c in zip(reasons.slot_sources, reasons.coefficients, strict=True)
                                 if c != 0.0))
    column = {s: i for i, s in enumerate(sources)}
    out = np.zeros((scaled.shape[0], len(sources)), dtype=np.float64)
    for j, (source, coefficient) in enumerate(zip(reasons.slot_sources, reasons.coefficients, strict=True)):
        if coefficient != 0.0:
            out[:, column[source]] += coefficient * scaled[:, j].astype(np.float64)
    return sources, out


def top_three_positive(sources: Sequence[str], effects: Sequence[float]) -> list[str]:
    """reason_1..3 of one row: the sources with the largest positive effect first, ties by name; fewer
    than three when fewer are positive (the batch job's `top_three_positive`)."""
    positive = [(-float(e), s) for s, e in zip(sources, effects, strict=True) if e > 0]
    return [s for _, s in sorted(positive)[:REASON_COUNT]]


def schema_path(model_path: str | Path) -> Path:
    """Where the feature schema of `model_path` lives."""
    return Path(f"{model_path}{SCHEMA_SUFFIX}")


@dataclass(frozen=True)
class OnnxChurnModel:
    """An onnxruntime session over `model.onnx` and the feature schema written beside it."""

    session: Any
    schema: FeatureSchema

    @classmethod
    def load(cls, model_path: str | Path) -> OnnxChurnModel:
        return cls.from_bytes(Path(model_path).read_bytes(), schema_path(model_path).read_bytes())

    @classmethod
    def from_bytes(cls, graph: bytes, schema: bytes | str) -> OnnxChurnModel:
        """From the two files' contents (the service reads them through the lakehouse's filesystem)."""
        try:
            import onnxruntime as ort
        except ImportError as exc:
            raise EnvironmentProblem(ONNX_MISSING) from exc
        options = ort.SessionOptions()
        options.intra_op_num_threads = 1  # one row per request: threads cost more than they save
        options.inter_op_num_threads = 1
        session = ort.InferenceSession(graph, options, providers=["CPUExecutionProvider"])
        return cls(session, FeatureSchema.from_json(schema))

    def predict(self, rows: Sequence[Mapping[str, Any]]) -> np.ndarray:
        """Calibrated churn probabilities (float64, one per row), as `churn_probability` of Spark's scoring."""
        (out,) = self.session.run([OUTPUT], to_inputs(self.schema, rows))
        return np.asarray(out, dtype=np.float64).reshape(-1)

    def score(self, rows: Sequence[Mapping[str, Any]]) -> tuple[np.ndarray, list[list[str]] | None]:
        """(probabilities, reasons per row), one graph run; reasons None for a model without them (trees)."""
        feed = to_inputs(self.schema, rows)
        if self.schema.reasons is None:
            (out,) = self.session.run([OUTPUT], feed)
            return np.asarray(out, dtype=np.float64).reshape(-1), None
        out, scaled = self.session.run([OUTPUT, SCALED_OUTPUT], feed)
        sources, effects = contributions(self.schema.reasons, np.asarray(scaled))
        return (np.asarray(out, dtype=np.float64).reshape(-1),
                [top_three_positive(sources, row) for row in effects])
