"""The silver job: keep `silver.account_daily_activity` in step with `bronze.events`, one day at a time.

State: each sync's write commit records the bronze version it read, and bronze's table id, in its
commit metadata (`userMetadata` = `{"churn.silver.bronze_version": N, "bronze_table_id": ..., ...}`),
in the same commit as the data, so the recorded version and the rows can never disagree (a failed
write changes neither). The same metadata lists the raw event types silver holds (`event_types`): the
previous sync's list plus the types of the recomputed days, so the features and score jobs learn the
activity's vocabulary from the log instead of scanning every day of silver.

A sync reads bronze's commits N+1..V (V: bronze's version now) from bronze's `_delta_log` JSON:
the `event_date` partition values of the files they added or removed with `dataChange` are the
days whose events changed (an ingest batch, a late event of an old day, a delete). Those days are
recomputed from bronze as of V (a partition-pruned read) and replace silver's rows of those days in
one Delta write (`replaceWhere`). Nothing changed: nothing is written. Silver is rebuilt from all
of bronze instead when it does not exist, records no version, was changed by another writer since,
or bronze was recreated (behind version N, or another table id), or when bronze's log of N+1..V is
gone (log cleanup); and on `churn-spark silver --rebuild`. Either way the table equals
`daily_activity` of bronze as of V.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from churn_spark import io, progress, schemas
from churn_spark.config import Settings
from churn_spark.errors import ContractError
from churn_spark.lakehouse import Lakehouse
from churn_spark.silver.daily import DAY, daily_activity, on_days

log = logging.getLogger("churn_spark")

BRONZE_VERSION = "churn.silver.bronze_version"
BRONZE_TABLE_ID = "bronze_table_id"
EVENT_TYPES = "event_types"
# Operations that rewrite or describe files without changing silver's rows: a sync's record stays valid.
KEEPS_ROWS = frozenset({"OPTIMIZE", "VACUUM START", "VACUUM END", "SET TBLPROPERTIES", "UNSET TBLPROPERTIES"})


@dataclass(frozen=True)
class SyncPlan:
    """One sync: bronze versions (synced, bronze]; `days` to recompute, None for all (a rebuild)."""

    synced: int | None
    bronze: int
    days: list[dt.date] | None
    reason: str
    recorded_types: list[str] | None = None  # the raw event types the synced version holds, as its sync recorded

    @property
    def mode(self) -> str:
        return "rebuild" if self.days is None else "incremental" if self.days else "up to date"


def synced_state(history: Sequence[Mapping[str, Any]]) -> dict[str, Any] | None:
    """The commit metadata of silver's latest sync (history newest first: bronze version and table id);
    None when no commit in the log records one, or a later commit changed silver's rows (another
    writer: the record is void)."""
    for commit in history:
        try:
            meta = json.loads(commit.get("userMetadata") or "null")
        except ValueError:
            meta = None
        if isinstance(meta, dict) and BRONZE_VERSION in meta:
            return meta
        if commit.get("operation") not in KEEPS_ROWS:
            return None
    return None


def plan_sync(spark: SparkSession, lake: Lakehouse, rebuild: bool = False) -> SyncPlan:
    """What a sync must do, from the two tables' logs only (no data is read)."""
    bronze = io.table_version(spark, lake.bronze_events)
    if bronze is None:
        raise ContractError(f"bronze.events not found at {lake.bronze_events}: run `churn-spark ingest` first")
    silver = lake.silver_account_daily_activity
    if not io.table_exists(spark, silver):
        return SyncPlan(None, bronze, None, "silver does not exist yet")
    state = synced_state(io.commit_history(spark, silver))
    synced = int(state[BRONZE_VERSION]) if state is not None else None
    if rebuild:
        return SyncPlan(synced, bronze, None, "requested (--rebuild)")
    if state is None or synced is None:
        return SyncPlan(None, bronze, None, "silver records no bronze version, or was changed outside a sync")
    if synced > bronze or state.get(BRONZE_TABLE_ID) != io.table_id(spark, lake.bronze_events):
        return SyncPlan(synced, bronze, None, f"bronze (now at version {bronze}) is not the table silver synced "
                                              f"to version {synced}: it was recreated")
    values = io.changed_partition_values(spark, lake.bronze_events, synced + 1, bronze, DAY)
    if values is None:
        return SyncPlan(synced, bronze, None, f"bronze's log of versions {synced + 1}..{bronze} is gone "
                                              "(log cleanup) or names no day")
    days = [dt.date.fromisoformat(v) for v in values]
    reason = f"{len(days)} days changed in bronze versions {synced + 1}..{bronze}" if days else "no new events"
    recorded = state.get(EVENT_TYPES)
    return SyncPlan(synced, bronze, days, reason, list(recorded) if isinstance(recorded, list) else None)


def silver_rows(bronze: DataFrame, days: Sequence[dt.date] | None) -> DataFrame:
    """Silver's rows of `days` (all days when None) from bronze, in the table's column order."""
    scope = bronze if days is None else on_days(bronze, days)
    return scope.transform(daily_activity).select(*schemas.SILVER_ACCOUNT_DAILY_ACTIVITY.fieldNames())


def raw_event_types(activity: DataFrame) -> set[str]:
    """The distinct raw `event_type`s of bronze or silver rows (one column, a handful of values reach the driver)."""
    return {r["event_type"] for r in activity.select("event_type").distinct().collect()}


def event_types_after(spark: SparkSession, lake: Lakehouse, plan: SyncPlan, bronze: DataFrame) -> list[str]:
    """The raw event types silver holds once `plan` is written: the days it recomputes (from bronze) plus, on an
    incremental sync, the other days' types (the previous sync's record, else one scan of silver's other days)."""
    if plan.days is None:
        return sorted(raw_event_types(bronze))
    recorded = plan.recorded_types
    kept = set(recorded) if recorded is not None else raw_event_types(
        read_silver_table(spark, lake).where(~F.col(DAY).isin(list(plan.days))))
    return sorted(kept | raw_event_types(on_days(bronze, plan.days)))


def _days_text(days: Sequence[str]) -> str | list[str]:
    return list(days) if len(days) <= 10 else f"{days[0]}..{days[-1]}"


def sync_silver(spark: SparkSession, settings: Settings, rebuild: bool = False) -> dict[str, Any]:
    """Bring silver to bronze's current version (or recompute it all with `rebuild`); the run summary.

    One Delta commit at most, carrying the bronze version it synced to: a failed sync leaves silver
    as it was, and a rerun (or a rebuild) gives the same table.
    """
    lake = Lakehouse.from_settings(settings)
    plan = plan_sync(spark, lake, rebuild)
    summary: dict[str, Any] = {"mode": plan.mode, "reason": plan.reason, "bronze_version_from": plan.synced,
                               "bronze_version_to": plan.bronze, "days_touched": 0, "rows_written": 0,
                               "silver_version": io.table_version(spark, lake.silver_account_daily_activity)}
    if plan.days == []:
        if plan.synced != plan.bronze:  # only data-neutral commits (OPTIMIZE): the record stays at `synced`
            summary["bronze_version_to"] = plan.synced
        log.info("silver: up to date with bronze version %s (%s)", plan.bronze, plan.reason)
        return summary
    bronze = io.read_version(spark, lake.bronze_events, plan.bronze)
    rows = silver_rows(bronze, plan.days)
    where = "true" if plan.days is None else io.slice_predicate(within={DAY: plan.days})
    types = event_types_after(spark, lake, plan, bronze)
    metadata = json.dumps({BRONZE_VERSION: plan.bronze, BRONZE_TABLE_ID: io.table_id(spark, lake.bronze_events),
                           "synced_from": plan.synced, "mode": plan.mode, EVENT_TYPES: types})
    version = io.write_slice(rows, lake.silver_account_daily_activity, where, [DAY],
                             schema=schemas.SILVER_ACCOUNT_DAILY_ACTIVITY, commit_metadata=metadata)
    written = io.written_counts(spark, lake.silver_account_daily_activity, version, [DAY])
    days = sorted(d.isoformat() for d in plan.days) if plan.days is not None else sorted(r[DAY] for r in written)
    summary.update({"days_touched": len(days), "days": _days_text(days) if days else [],
                    "rows_written": sum(r["__rows"] for r in written), "silver_version": version})
    log.info("silver: %s to bronze version %s, %d days, %s rows (%s)", plan.mode, plan.bronze, len(days),
             progress.rows(summary["rows_written"]), plan.reason)
    return summary


def read_silver_table(spark: SparkSession, lake: Lakehouse) -> DataFrame:
    path = lake.silver_account_daily_activity
    if not io.table_exists(spark, path):
        raise ContractError(f"silver.account_daily_activity not found at {path}: run `churn-spark silver`")
    daily = spark.read.format("delta").load(path)
    return io.assert_schema(daily, schemas.SILVER_ACCOUNT_DAILY_ACTIVITY, "silver.account_daily_activity")


def read_silver(spark: SparkSession, settings: Settings) -> DataFrame:
    """`silver.account_daily_activity` as a lazy DataFrame (call `sync_silver` first for a current one)."""
    return read_silver_table(spark, Lakehouse.from_settings(settings))


def silver_event_types(spark: SparkSession, settings: Settings) -> list[str] | None:
    """The raw event types silver holds, from its latest sync's commit (the log, no data read); None when silver
    is absent, was changed outside a sync, or its sync predates the record."""
    path = Lakehouse.from_settings(settings).silver_account_daily_activity
    if not io.table_exists(spark, path):
        return None
    state = synced_state(io.commit_history(spark, path))
    types = state.get(EVENT_TYPES) if state is not None else None
    return [str(t) for t in types] if isinstance(types, list) else None


def run_silver(spark: SparkSession, settings: Settings, rebuild: bool = False) -> dict[str, Any]:
    """The `churn-spark silver` job: sync (or rebuild) silver, with a stage line."""
    with progress.stage("silver", "synced") as step:
        summary = sync_silver(spark, settings, rebuild)
        step.done(f"{summary['mode']}: bronze version {summary['bronze_version_from']} -> "
                  f"{summary['bronze_version_to']}, {summary['days_touched']} days, "
                  f"{progress.rows(summary['rows_written'])} rows written")
    return summary
