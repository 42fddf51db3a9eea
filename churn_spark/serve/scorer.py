"""`POST /v1/score`'s model: the version's ONNX export (`churn-spark model export --format onnx`,
churn_spark/onnx/), loaded with onnxruntime when `models/<v>/model.onnx` and its feature schema
`model.onnx.json` are there.

The row checks and the graph feed are the export's own (`churn_spark.onnx.runtime.OnnxChurnModel`, no
pyspark); this module only reads the two files through the lakehouse's filesystem (local or object
store) and says why there is no scorer. No export: the stored scores are still served; the route says 503.
"""

from __future__ import annotations

from churn_spark.onnx.runtime import SCHEMA_SUFFIX, OnnxChurnModel
from churn_spark.serve.files import read_bytes

ONNX_FILE = "model.onnx"
SCHEMA_FILE = ONNX_FILE + SCHEMA_SUFFIX
NOT_EXPORTED = "model not exported to ONNX"


def load_scorer(version_dir: str) -> tuple[OnnxChurnModel | None, str | None]:
    """The version's ONNX model, or None and why not (not exported; files that do not load)."""
    root = version_dir.rstrip("/")
    graph, schema = read_bytes(f"{root}/{ONNX_FILE}"), read_bytes(f"{root}/{SCHEMA_FILE}")
    if graph is None or schema is None:
        return None, NOT_EXPORTED
    try:
        return OnnxChurnModel.from_bytes(graph, schema), None
    except Exception as exc:  # a broken export must not stop the stored scores from being served
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        return None, f"the ONNX export of {root.rsplit('/', 1)[-1]} cannot be loaded: {type(exc).__name__}: {first}"
