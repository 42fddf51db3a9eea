"""The model registry: a folder per model version under `<lakehouse>/models/` and a `current` pointer.

Layout::

    models/<version>/pipeline_model/   the fitted MLlib PipelineModel (encoding + classifier + calibration)
    models/<version>/metadata.json     params, config, metrics, feature columns and schema, lineage, code version
    models/<version>/report/           PNG plots + report.html
    models/current                     JSON: which version scoring uses, when and why it was promoted

`metadata.json` is written last, so a version without it is an incomplete write and is never loaded.
The pointer is replaced atomically (write to a temporary file, rename).
"""

from __future__ import annotations

import datetime as dt
import json
import os
import uuid
from dataclasses import dataclass
from typing import Any

from pyspark.ml import PipelineModel
from pyspark.sql import SparkSession
from pyspark.sql.types import StructType

from churn_spark.config import Settings
from churn_spark.errors import NotAvailableError
from churn_spark.lakehouse import Lakehouse
from churn_spark.schemas import FEATURE_KEY_COLUMNS

POINTER = "current"
METADATA = "metadata.json"
PIPELINE_DIR = "pipeline_model"
HIGHER_IS_BETTER = {"roc_auc": True, "pr_auc": True, "log_loss": False, "brier": False}
# Differences below this are the order of a sum, not a difference between models: the same model retrained on
# the same rows measured 0.756902866022239 against its own 0.756902866022241 and was called worse.
FLOAT_NOISE = 1e-9


@dataclass(frozen=True)
class RegisteredModel:
    """A loaded model version: what scoring needs."""

    version: str
    model: PipelineModel
    metadata: dict[str, Any]
    path: str


def new_version(model_type: str, now: dt.datetime | None = None) -> str:
    """Sortable, unique: `20240131T120000Z-gbt-1a2b3c`."""
    stamp = (now or dt.datetime.now(dt.UTC)).strftime("%Y%m%dT%H%M%SZ")
    return f"{stamp}-{model_type}-{uuid.uuid4().hex[:6]}"


def models_root(settings: Settings) -> str:
    return Lakehouse.from_settings(settings).models


def version_path(settings: Settings, version: str) -> str:
    return f"{models_root(settings).rstrip('/')}/{version}"


# --- small files: local folders directly, URIs through Hadoop's FileSystem ------------------------


def _local(path: str) -> str | None:
    if "://" not in path:
        return path
    return path[len("file://"):] if path.startswith("file://") else (path[5:] if path.startswith("file:") else None)


def _hadoop_path(spark: SparkSession, path: str) -> tuple[Any, Any]:
    jvm: Any = spark.sparkContext._jvm
    hpath = jvm.org.apache.hadoop.fs.Path(path)
    return hpath, hpath.getFileSystem(spark.sparkContext._jsc.hadoopConfiguration())


def write_bytes(spark: SparkSession, path: str, data: bytes) -> None:
    """Write a small file atomically (temp file + rename)."""
    local = _local(path)
    if local is not None:
        os.makedirs(os.path.dirname(local), exist_ok=True)
        tmp = f"{local}.tmp-{uuid.uuid4().hex[:6]}"
        with open(tmp, "wb") as fh:
            fh.write(data)
        os.replace(tmp, local)
        return
    hpath, fs = _hadoop_path(spark, path + ".tmp")
    out = fs.create(hpath, True)
    out.write(bytearray(data))
    out.close()
    target, _ = _hadoop_path(spark, path)
    fs.delete(target, False)
    fs.rename(hpath, target)


def read_text(spark: SparkSession, path: str) -> str | None:
    """Contents of a small text file, None when it does not exist."""
    local = _local(path)
    if local is not None:
        if not os.path.isfile(local):
            return None
        with open(local) as fh:
            return fh.read()
    hpath, fs = _hadoop_path(spark, path)
    if not fs.exists(hpath):
        return None
    stream = fs.open(hpath)
    jvm: Any = spark.sparkContext._jvm
    text = jvm.org.apache.commons.io.IOUtils.toString(stream, "UTF-8")
    stream.close()
    return str(text)


def to_json(data: Any) -> bytes:
    return json.dumps(data, indent=2, default=str).encode()  # keep order: feature names are ordered


# --- versions and the pointer ----------------------------------------------------------------------


def save_version(spark: SparkSession, settings: Settings, version: str, model: PipelineModel,
                 metadata: dict[str, Any], files: dict[str, bytes]) -> str:
    """Write model, extra files (relative path -> bytes) and finally metadata.json; returns the folder."""
    root = version_path(settings, version)
    model.write().overwrite().save(f"{root}/{PIPELINE_DIR}")
    for rel, data in files.items():
        write_bytes(spark, f"{root}/{rel}", data)
    write_bytes(spark, f"{root}/{METADATA}", to_json(metadata))
    return root


def read_pointer(spark: SparkSession, settings: Settings) -> dict[str, Any] | None:
    text = read_text(spark, f"{models_root(settings)}/{POINTER}")
    return json.loads(text) if text else None


def write_pointer(spark: SparkSession, settings: Settings, version: str, reason: str,
                  metric: str, value: float | None) -> dict[str, Any]:
    pointer = {"version": version, "promoted_at": dt.datetime.now(dt.UTC).isoformat(), "reason": reason,
               "metric": metric, "value": value}
    write_bytes(spark, f"{models_root(settings)}/{POINTER}", to_json(pointer))
    return pointer


def load_metadata(spark: SparkSession, settings: Settings, version: str) -> dict[str, Any]:
    text = read_text(spark, f"{version_path(settings, version)}/{METADATA}")
    if text is None:
        raise NotAvailableError(f"model version {version} not found (or incomplete) under {models_root(settings)}")
    return dict(json.loads(text))


def load_model(spark: SparkSession, settings: Settings, version: str | None = None) -> RegisteredModel:
    """The registered model `version`, or the one the `current` pointer names."""
    if version is None:
        pointer = read_pointer(spark, settings)
        if pointer is None:
            raise NotAvailableError(f"no current model under {models_root(settings)}: run `churn-spark train` first")
        version = str(pointer["version"])
    metadata = load_metadata(spark, settings, version)
    path = version_path(settings, version)
    return RegisteredModel(version, PipelineModel.load(f"{path}/{PIPELINE_DIR}"), metadata, path)


# --- compatibility: what a model records about the features it was trained on --------------------------


def feature_schema_problems(actual: StructType, metadata: dict[str, Any], allow_extra: bool) -> list[str]:
    """Missing, mistyped and (unless allowed) unknown feature columns against the training schema."""
    expected: dict[str, str] = metadata.get("feature_schema", {})
    ignored = set(metadata.get("dropped_features", [])) | set(
        metadata.get("config", {}).get("model", {}).get("exclude_features", []))
    have = {f.name: f.dataType.simpleString() for f in actual.fields if f.name not in FEATURE_KEY_COLUMNS}
    problems = []
    if missing := [n for n in expected if n not in have]:
        problems.append("missing columns: " + ", ".join(missing))
    if mistyped := [f"{n} is {have[n]}, model expects {t}" for n, t in expected.items() if n in have and have[n] != t]:
        problems.append("mistyped columns: " + "; ".join(mistyped))
    if not allow_extra and (extra := [n for n in have if n not in expected and n not in ignored]):
        problems.append("extra columns (unknown to the model): " + ", ".join(extra))
    return problems


def incompatibilities(metadata: dict[str, Any], feature_set_version: str, features: StructType) -> list[str]:
    """Why a registered model cannot score `features` of `feature_set_version` (empty: it can), from what
    the model recorded at training: its feature-set version and its feature schema (extra columns allowed)."""
    trained = str(metadata.get("feature_set_version"))
    version = ([f"trained on feature set version {trained!r}, the features are version {feature_set_version!r}"]
               if trained != feature_set_version else [])
    return version + feature_schema_problems(features, metadata, allow_extra=True)


# --- promotion -------------------------------------------------------------------------------------


def decide_promotion(new: dict[str, Any], current: dict[str, Any] | None, metric: str,
                     tolerance: float) -> tuple[bool, str]:
    """Promote when there is no comparable current model, or the new model is not worse than the
    current one on `metric` by more than `tolerance` (both measured on the same test snapshots)."""
    if current is None:
        return True, "no current model"
    if metric not in current or current[metric] is None:
        return True, f"current model has no {metric} on the new test snapshots"
    new_v, cur_v = float(new[metric]), float(current[metric])
    higher = HIGHER_IS_BETTER[metric]
    ok = new_v >= cur_v - tolerance - FLOAT_NOISE if higher else new_v <= cur_v + tolerance + FLOAT_NOISE
    rel = ">=" if higher else "<="
    bound = cur_v - tolerance if higher else cur_v + tolerance
    verdict = "not worse" if ok else "worse"
    return ok, (f"{verdict}: {metric} {new_v:.4f} vs current {cur_v:.4f} on the same test snapshots "
                f"(promote if {rel} {bound:.4f}, tolerance {tolerance})")
