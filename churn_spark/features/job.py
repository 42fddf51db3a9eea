"""The features job: `gold.churn_labels` and `gold.churn_features` for a range of snapshots.

Extract (raw inputs through io.read_input, `bronze.events` once) -> transform (labels, then the
feature families joined on the eligible accounts) -> load (replace exactly the snapshots computed).
`build_labels_and_features` is the transform alone, reused by scoring for a single date.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Sequence
from dataclasses import dataclass, replace
from functools import reduce
from typing import Any

from pyspark import StorageLevel
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from churn_spark import asof, io, progress, schemas
from churn_spark.config import Settings
from churn_spark.errors import ContractError
from churn_spark.features import catalog as cat
from churn_spark.features.account import account_features, tenure_as_double
from churn_spark.features.activity import activity_features, with_per_seat_rates
from churn_spark.features.support import support_features
from churn_spark.labels import churn_labels, snapshot_dates
from churn_spark.lakehouse import Lakehouse
from churn_spark.schemas import FEATURE_KEY_COLUMNS, KEYS

log = logging.getLogger("churn_spark")

SUPPORT_DISABLED = "disabled (inputs.support_tickets.enabled is false): support features omitted"


@dataclass(frozen=True)
class FeatureInputs:
    """The job's inputs in their contracts; `tickets` is None when support tickets are configured absent."""

    accounts: DataFrame
    subscriptions: DataFrame
    tickets: DataFrame | None
    events: DataFrame
    rejected: DataFrame | None


def read_bronze_events(spark: SparkSession, settings: Settings) -> DataFrame:
    """`bronze.events` as a lazy DataFrame (scanned once by the activity aggregation)."""
    path = Lakehouse.from_settings(settings).bronze_events
    if not io.table_exists(spark, path):
        raise ContractError(f"bronze.events not found at {path}: run `churn-spark ingest` first")
    events = spark.read.format("delta").load(path)
    return io.assert_schema(events, schemas.BRONZE_EVENTS, "bronze.events", allow_extra=True)


def load_inputs(spark: SparkSession, settings: Settings) -> FeatureInputs:
    conformed = {t: io.read_input(spark, settings, t) for t in ("accounts", "subscriptions", "support_tickets")}
    accounts, subscriptions = conformed["accounts"], conformed["subscriptions"]
    if accounts is None or subscriptions is None:
        raise ContractError("features need the accounts and subscriptions inputs (enabled: true)")
    tickets = conformed["support_tickets"]
    rejected = [c.rejected for c in conformed.values() if c is not None]
    return FeatureInputs(accounts.good, subscriptions.good, tickets.good if tickets else None,
                         read_bronze_events(spark, settings), reduce(DataFrame.unionByName, rejected))


def resolve_data_end(settings: Settings, events: DataFrame) -> dt.date:
    """`churn.data_end`, else the UTC date of the latest event.

    Read as max(`event_date`), bronze's partition column (the UTC date of `event_time`): Delta answers
    that from the log's partition values, where max(`event_time`) would be one more scan of bronze.
    """
    if settings.churn.data_end is not None:
        return settings.churn.data_end
    latest = events.agg(F.max("event_date").alias("d")).first()
    if latest is None or latest["d"] is None:
        raise ContractError("bronze.events is empty: set churn.data_end to label snapshots")
    return latest["d"]


def resolve_event_types(settings: Settings, events: DataFrame) -> list[str]:
    """`features.event_types`, else the distinct types in all of bronze (so every range gets the same columns)."""
    if settings.features.event_types is not None:
        return sorted(set(settings.features.event_types))
    return sorted(r["event_type"] for r in events.select("event_type").distinct().collect())


def assemble_features(spine: DataFrame, families: Sequence[DataFrame], specs: Sequence[cat.FeatureSpec],
                      slugs: Sequence[str], settings: Settings) -> DataFrame:
    """Eligible (account, D) rows left-joined with each family; counts of absent facts are 0, in catalogue order."""
    joined = reduce(lambda acc, fam: acc.join(fam, list(KEYS), "left"), families, spine)
    filled = joined.fillna(0.0, subset=[s.name for s in specs if s.zero_when_absent])
    return (
        filled.transform(tenure_as_double)
        .transform(lambda df: with_per_seat_rates(df, slugs, settings.features))
        .select(*KEYS, F.lit(settings.features.feature_set_version).alias("feature_set_version"),
                *[F.col(s.name) for s in specs])
    )


def labels_for(inputs: FeatureInputs, settings: Settings, snapshots: Sequence[dt.date],
               data_end: dt.date) -> DataFrame:
    """`gold.churn_labels` rows for `snapshots`: the eligible (account, D) spine of the features."""
    snaps = asof.snapshot_frame(inputs.events.sparkSession, snapshots)
    return churn_labels(inputs.subscriptions, inputs.accounts, snaps, settings.churn, data_end)


def features_for(inputs: FeatureInputs, settings: Settings, snapshots: Sequence[dt.date], labels: DataFrame,
                 event_types: Sequence[str]) -> DataFrame:
    """`gold.churn_features` rows: one per labelled (account, D), every family left-joined on the keys."""
    snaps = asof.snapshot_frame(inputs.events.sparkSession, snapshots)
    slugs = cat.event_type_slugs(event_types)
    specs = cat.feature_catalog(settings, event_types, with_support=inputs.tickets is not None)
    families = [
        account_features(inputs.subscriptions, inputs.accounts, snaps, settings.features,
                         settings.inputs.account_attributes),
        activity_features(inputs.events, snapshots, slugs, settings.features, settings.churn),
    ]
    if inputs.tickets is not None:
        families.append(support_features(inputs.tickets, snaps, snapshots, settings.features))
    spine = labels.select(*KEYS, "tenure_days")
    return assemble_features(spine, families, specs, list(slugs.values()), settings)


def labels_and_features(inputs: FeatureInputs, settings: Settings, snapshots: Sequence[dt.date],
                        data_end: dt.date, event_types: Sequence[str]) -> tuple[DataFrame, DataFrame]:
    """The pure transform: (labels, features) for `snapshots`; features have a row per labelled account."""
    labels = labels_for(inputs, settings, snapshots, data_end)
    return labels, features_for(inputs, settings, snapshots, labels, event_types)


def build_labels_and_features(spark: SparkSession, settings: Settings,
                              snapshots: list[dt.date]) -> tuple[DataFrame, DataFrame]:
    """(labels, features) for `snapshots` exactly as the features job computes them; nothing is written.

    Works for dates whose labels are censored (label null); accounts without events get 0 counts.
    """
    inputs = load_inputs(spark, settings)
    data_end = resolve_data_end(settings, inputs.events)
    return labels_and_features(inputs, settings, snapshots, data_end, resolve_event_types(settings, inputs.events))


# --- the job -------------------------------------------------------------------------------------


def snapshot_stats(labels: DataFrame) -> list[dict[str, Any]]:
    """Per snapshot: eligible accounts, churners, censored rows, label rate (small, one row per date)."""
    rows = labels.groupBy("as_of_date").agg(
        F.count("*").alias("eligible"), F.count_if(F.col("label") == 1).alias("churned"),
        F.count_if(F.col("label").isNull()).alias("censored"), F.avg("label").alias("label_rate"),
    ).orderBy("as_of_date").collect()
    return [{"as_of_date": r["as_of_date"].isoformat(), "eligible": int(r["eligible"]), "churned": int(r["churned"]),
             "censored": int(r["censored"]),
             "label_rate": None if r["label_rate"] is None else round(float(r["label_rate"]), 4)} for r in rows]


def written_stats(spark: SparkSession, path: str, version: int, names: Sequence[str]) -> dict[str, Any]:
    """Rows per snapshot and the share of nulls per feature column in what commit `version` wrote.

    From the Parquet footers of the commit's files (io.written_counts): no second read of the
    240-column slice, no Delta statistics on every column.
    """
    per_snapshot = io.written_counts(spark, path, version, ["as_of_date"])
    rows = {r["as_of_date"]: r["__rows"] for r in per_snapshot}
    total = sum(rows.values())
    nulls = {n: sum(r["__rows"] - r[n] for r in per_snapshot) for n in names}
    return {"rows": rows, "null_rate": {n: round(nulls[n] / total, 4) if total else 0.0 for n in names}}


def cached_inputs(inputs: FeatureInputs) -> FeatureInputs:
    """The conformed small inputs cached (MEMORY_AND_DISK) for one run: labels and two families read them.

    Conforming (casts, checks, de-duplication) then happens once per table instead of once per reader.
    """
    level = StorageLevel.MEMORY_AND_DISK
    return replace(inputs, accounts=inputs.accounts.persist(level), subscriptions=inputs.subscriptions.persist(level),
                   tickets=inputs.tickets.persist(level) if inputs.tickets is not None else None)


def release(*frames: DataFrame | None) -> None:
    for df in frames:
        if df is not None:
            df.unpersist()


def run_features(spark: SparkSession, settings: Settings) -> dict[str, Any]:
    """Labels and features for settings.churn.snapshots; replaces exactly those snapshot slices.

    Cost: bronze.events is scanned once (activity); the small inputs and the labels are computed
    once and cached for the run; each table is written once; the summary comes from the
    Parquet footers of the files the features commit added.
    """
    snapshots = snapshot_dates(settings.churn.snapshots)
    if not snapshots:
        raise ContractError("churn.snapshots selects no snapshot date")
    lake = Lakehouse.from_settings(settings)
    with progress.stage("features", "inputs read") as step:
        loaded = load_inputs(spark, settings)
        data_end = resolve_data_end(settings, loaded.events)
        event_types = resolve_event_types(settings, loaded.events)
        step.done(f"inputs read: {len(snapshots)} snapshots {snapshots[0]}..{snapshots[-1]}, data_end {data_end}, "
                  f"event types {event_types}")
    if loaded.tickets is None:
        log.warning("features: support tickets %s", SUPPORT_DISABLED)
    inputs = cached_inputs(loaded)
    labels = labels_for(inputs, settings, snapshots, data_end).persist(StorageLevel.MEMORY_AND_DISK)
    try:
        where = io.slice_predicate(within={"as_of_date": snapshots})
        with progress.stage("features", "labels written") as step:
            labels_version = io.write_slice(labels, lake.churn_labels, where, ["as_of_date"],
                                            schema=schemas.CHURN_LABELS)
            per_snapshot = snapshot_stats(labels)  # from the cached labels
            step.done(f"labels written: {progress.rows(sum(s['eligible'] for s in per_snapshot))} rows, "
                      f"{progress.rows(sum(s['censored'] for s in per_snapshot))} censored")
        with progress.stage("features", f"features of {len(snapshots)} snapshots computed and written"):
            features = features_for(inputs, settings, snapshots, labels, event_types)
            io.assert_schema(features, schemas.FEATURE_KEYS, "gold.churn_features", allow_extra=True)
            features_version = io.write_slice(features, lake.churn_features, where, ["as_of_date"],
                                              properties=io.KEY_STATS_ONLY)
    finally:
        release(labels, inputs.accounts, inputs.subscriptions, inputs.tickets)
    names = [c for c in features.columns if c not in FEATURE_KEY_COLUMNS]
    stats = written_stats(spark, lake.churn_features, features_version, names)
    for s in per_snapshot:
        s["feature_rows"] = stats["rows"].get(s["as_of_date"], 0)
    return {
        "snapshots": len(snapshots), "from": snapshots[0].isoformat(), "to": snapshots[-1].isoformat(),
        "data_end": data_end.isoformat(), "event_types": event_types,
        "feature_set_version": settings.features.feature_set_version, "features": len(names),
        "support": "enabled" if inputs.tickets is not None else SUPPORT_DISABLED,
        "label_rows": sum(s["eligible"] for s in per_snapshot),
        "censored_rows": sum(s["censored"] for s in per_snapshot),
        "per_snapshot": per_snapshot,
        "null_rate": stats["null_rate"],
        "rejected": io.reject_counts(loaded.rejected) if loaded.rejected is not None else {},
        "labels_version": labels_version,
        "features_version": features_version,
    }


def summary_table(result: dict[str, Any]) -> str:
    """The run summary as a short text table: one line per snapshot, then the features most often null."""
    lines = [f"{'as_of_date':<12}{'eligible':>10}{'churned':>9}{'censored':>10}{'label_rate':>12}"]
    for s in result.get("per_snapshot", []):
        rate = "-" if s["label_rate"] is None else f"{s['label_rate']:.4f}"
        lines.append(f"{s['as_of_date']:<12}{s['eligible']:>10}{s['churned']:>9}{s['censored']:>10}{rate:>12}")
    nulls = sorted(((v, k) for k, v in result.get("null_rate", {}).items() if v > 0), reverse=True)[:8]
    if nulls:
        lines.append("most often null: " + ", ".join(f"{k} {v:.1%}" for v, k in nulls))
    return "\n".join(lines)
