"""What the service serves, read without Spark: the latest `gold/churn_scores` slice of the current model
and its `gold/churn_targets` list (delta-rs), plus the registry's pointer and metadata (plain files).

A `Snapshot` is immutable and built aside: the service swaps the reference in one assignment, so a
request sees either the old or the new slice, never a mix. `Sources` is what a poll compares: the
pointer's text, the two tables' Delta versions and the ONNX files' stamps; each load reads the tables
*at those versions*, so a commit landing during a load never produces a slice the versions do not name.
"""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import dataclass, field
from typing import Any

import pyarrow as pa
from deltalake import DeltaTable
from deltalake.exceptions import TableNotFoundError

from churn_spark.errors import ContractError, NotAvailableError
from churn_spark.lakehouse import Lakehouse
from churn_spark.onnx.runtime import OnnxChurnModel
from churn_spark.serve.files import file_stamp, read_text, storage_uri
from churn_spark.serve.scorer import ONNX_FILE, SCHEMA_FILE, load_scorer

POINTER = "current"  # as churn_spark/train/registry.py (which imports pyspark)
METADATA = "metadata.json"
REASONS = ("reason_1", "reason_2", "reason_3")
SCORE_COLUMNS = ["account_id", "churn_probability", "risk_decile", "rank", *REASONS, "scored_at"]
TARGET_COLUMNS = ["account_id", "target_rank", "churn_probability", "account_value", "expected_value",
                  "contact_cost", *REASONS, "targeting_mode", "uplift"]


@dataclass(frozen=True)
class Sources:
    """The inputs of a snapshot, compared at each poll: any change means a reload."""

    pointer_text: str
    scores_version: int
    targets_version: int | None  # None: no target list written yet
    onnx_stamp: tuple[tuple[int, int] | None, ...]  # model.onnx and its schema

    @property
    def model_version(self) -> str:
        try:
            return str(json.loads(self.pointer_text)["version"])
        except (ValueError, KeyError, TypeError) as exc:
            raise ContractError(f"models/{POINTER} is not a JSON pointer with a version ({exc})") from None


def _delta_version(path: str) -> int | None:
    try:
        return DeltaTable(storage_uri(path)).version()
    except TableNotFoundError:
        return None


def current_sources(lake: Lakehouse) -> Sources:
    """What the lakehouse holds now (cheap: the pointer, two Delta log heads and a file's stamp)."""
    text = read_text(f"{lake.models}/{POINTER}")
    if text is None:
        raise NotAvailableError(f"no current model under {lake.models}: run `churn-spark train` first")
    scores = _delta_version(lake.churn_scores)
    if scores is None:
        raise NotAvailableError(f"no scores at {lake.churn_scores}: run `churn-spark score` first")
    folder = f"{lake.models}/{Sources(text, scores, None, ()).model_version}"
    onnx = tuple(file_stamp(f"{folder}/{name}") for name in (ONNX_FILE, SCHEMA_FILE))
    return Sources(text, scores, _delta_version(lake.churn_targets), onnx)


@dataclass(frozen=True)
class Snapshot:
    """One model's scores at one date: Arrow columns (one chunk each) and a dict index, so a lookup is a dict
    get and ten scalar reads (~10 us; pandas `.loc` costs ~100 us a row). Only the ids become Python
    objects at load: converting every column (`to_pylist`, timestamps above all) took 1.4 s of held GIL
    for 100,000 accounts, during which the requests of a reload waited."""

    sources: Sources
    model_version: str
    as_of_date: dt.date
    model: dict[str, Any]  # metadata.json: model type, feature schema, metrics
    scores: dict[str, pa.Array]
    index: dict[str, int]
    targets: pa.Table  # sorted by target_rank
    target_index: dict[str, int]
    scorer: OnnxChurnModel | None = None
    scorer_problem: str | None = None  # why POST /v1/score cannot answer (no ONNX file, a broken one)
    loaded_at: dt.datetime = field(default_factory=lambda: dt.datetime.now(dt.UTC))

    @property
    def accounts(self) -> int:
        return len(self.index)

    @property
    def target_count(self) -> int:
        return len(self.target_index)


def _slice(path: str, version: int, as_of: str, model_version: str, columns: list[str]) -> pa.Table:
    table = DeltaTable(storage_uri(path), version=version)
    present = [c for c in columns if c in table.schema().to_arrow().names]  # targeting_mode/uplift: newer slices
    data = table.to_pyarrow_table(columns=present, filters=[("as_of_date", "=", dt.date.fromisoformat(as_of)),
                                                            ("model_version", "=", model_version)])
    missing = [pa.nulls(data.num_rows) for _ in columns if _ not in present]
    return pa.table([data.column(c) if c in present else missing.pop() for c in columns], names=columns)


def latest_as_of(path: str, version: int, model_version: str) -> str:
    """The latest `as_of_date` partition holding rows of `model_version` (dates descending, usually one read)."""
    table = DeltaTable(storage_uri(path), version=version)
    for as_of in sorted({p["as_of_date"] for p in table.partitions()}, reverse=True):
        rows = table.to_pyarrow_table(columns=["account_id"], filters=[
            ("as_of_date", "=", dt.date.fromisoformat(as_of)), ("model_version", "=", model_version)])
        if rows.num_rows:
            return as_of
    raise NotAvailableError(f"no scores of the current model {model_version} in {path}: score with it first")


def _columns(table: pa.Table) -> dict[str, pa.Array]:
    return {c: table.column(c).combine_chunks() for c in table.column_names}  # O(1) indexing


def _index(ids: pa.ChunkedArray, what: str) -> dict[str, int]:
    index = {a: i for i, a in enumerate(ids.to_pylist())}
    if ids.null_count or len(index) != len(ids):
        raise ContractError(f"{what} has null or repeated account ids")
    return index


def load_snapshot(lake: Lakehouse, sources: Sources) -> Snapshot:
    """Everything a request needs for `sources`; raises with one line when something is missing or wrong."""
    version = sources.model_version
    meta_text = read_text(f"{lake.models}/{version}/{METADATA}")
    if meta_text is None:
        raise NotAvailableError(f"model version {version} (models/{POINTER}) has no {METADATA}: incomplete")
    metadata = dict(json.loads(meta_text))
    as_of = latest_as_of(lake.churn_scores, sources.scores_version, version)
    scores = _slice(lake.churn_scores, sources.scores_version, as_of, version, SCORE_COLUMNS)
    targets = (_slice(lake.churn_targets, sources.targets_version, as_of, version, TARGET_COLUMNS)
               .sort_by("target_rank") if sources.targets_version is not None
               else pa.table({c: pa.array([], pa.string()) for c in TARGET_COLUMNS}))
    where = f"at {as_of} for {version}"
    scorer, problem = load_scorer(f"{lake.models}/{version}")
    return Snapshot(
        sources=sources, model_version=version, as_of_date=dt.date.fromisoformat(as_of), model=metadata,
        scores=_columns(scores), index=_index(scores.column("account_id"), f"gold/churn_scores {where}"),
        targets=targets.combine_chunks(),
        target_index=_index(targets.column("account_id"), f"gold/churn_targets {where}"),
        scorer=scorer, scorer_problem=problem)
