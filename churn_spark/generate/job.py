"""`churn-spark generate`: write the raw tables, the churn truth and the landing event files.

Everything is computed by Spark from `spark.range(accounts)`; the driver only builds expressions
and collects a handful of counts for the run summary.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from pyspark import StorageLevel
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from churn_spark import io, progress, schemas
from churn_spark.config import Settings
from churn_spark.generate import activity, campaigns, mechanism
from churn_spark.generate.mechanism import Calendar
from churn_spark.lakehouse import Lakehouse

log = logging.getLogger("churn_spark")


@dataclass(frozen=True)
class Simulation:
    """The generator's lazily defined outputs; `accounts` is the persisted per-account simulation."""

    calendar: Calendar
    sim: DataFrame
    months: DataFrame
    accounts: DataFrame
    subscriptions: DataFrame
    support_tickets: DataFrame
    churn_truth: DataFrame
    events: DataFrame
    # with generate.campaigns.dates only (None without: no campaign tables are written)
    interventions: DataFrame | None = None
    intervention_truth: DataFrame | None = None


def _partitions(spark: SparkSession, settings: Settings) -> int:
    if settings.generate.partitions is not None:
        return settings.generate.partitions
    # ~20k accounts per task keeps tasks short; at least one task per core.
    return max(spark.sparkContext.defaultParallelism, -(-settings.generate.accounts // 20_000))


def simulate(spark: SparkSession, settings: Settings) -> Simulation:
    """Define every generated table (lazily); the per-account lifecycle is persisted once."""
    g = settings.generate
    cal = Calendar.from_settings(settings)
    draws = mechanism.account_draws(spark, settings, cal, _partitions(spark, settings))
    sim = mechanism.with_lifecycle(draws, settings, cal).persist(StorageLevel.MEMORY_AND_DISK)
    months = mechanism.account_months(sim, cal)
    active = activity.active_months(months, cal)
    end_ts = F.to_timestamp(F.lit(cal.end_excl.isoformat()))
    assigned = campaigns.assignments(sim, cal) if g.campaigns.dates else None
    return Simulation(
        calendar=cal,
        sim=sim,
        months=months,
        accounts=mechanism.accounts_table(sim),
        subscriptions=mechanism.subscriptions_table(sim),
        support_tickets=activity.support_tickets(active, g.seed, end_ts),
        churn_truth=mechanism.churn_truth(months, settings, cal),
        events=activity.events(active, g.seed, g.events_per_account_month),
        interventions=campaigns.interventions_table(assigned, settings) if assigned is not None else None,
        intervention_truth=campaigns.intervention_truth(assigned, settings, cal) if assigned is not None else None,
    )


def _write_event_files(simulation: Simulation, settings: Settings, path: str) -> dict[str, Any]:
    """Write the landing JSON-lines files: `event_files` files, each covering a range of months.

    The small account-month rows are range-partitioned by month before events are exploded, so
    files follow time like a real landing zone and no event-sized shuffle is needed.
    """
    g = settings.generate
    active = activity.active_months(simulation.months, simulation.calendar).repartitionByRange(g.event_files, "m")
    lines = activity.event_lines(activity.events(active, g.seed, g.events_per_account_month), g.seed,
                                 g.duplicate_event_rate, g.malformed_event_rate)
    lines.select("value").write.mode("overwrite").text(path)
    # A second (deterministic, hash-based) pass counts the kinds: Spark 4.0.0's Observation leaves the
    # session's ObservationManager in later task closures, which then fail to serialise.
    counts = lines.agg(
        F.count(F.lit(1)).alias("rows"),
        F.sum(F.col("duplicate").cast("int")).alias("duplicate"),
        *[F.sum(F.when(F.col("kind") == k, 1).otherwise(0)).alias(k) for k in ("ok", *activity.MALFORMED_KINDS)],
    ).first()
    stats = {k: int(v or 0) for k, v in (counts.asDict() if counts else {}).items()}
    stats["lines"] = stats.pop("rows") + stats["duplicate"]
    return stats


def run_generate(spark: SparkSession, settings: Settings) -> dict[str, Any]:
    """Generate raw/accounts, raw/subscriptions, raw/support_tickets, raw/churn_truth and landing/events (and with
    `generate.campaigns.dates` raw/interventions and raw/intervention_truth)."""
    g = settings.generate
    lake = Lakehouse.from_settings(settings)
    simulation = simulate(spark, settings)
    log.info("generate: %d accounts, %s .. %s, seed %d", g.accounts, g.start, g.end, g.seed)
    tables = {
        "accounts": (simulation.accounts, lake.raw_accounts, schemas.ACCOUNTS),
        "subscriptions": (simulation.subscriptions, lake.raw_subscriptions, schemas.SUBSCRIPTIONS),
        "support_tickets": (simulation.support_tickets.select(*schemas.SUPPORT_TICKETS.fieldNames()),
                            lake.raw_support_tickets, schemas.SUPPORT_TICKETS),
        "churn_truth": (simulation.churn_truth, lake.raw_churn_truth, schemas.CHURN_TRUTH),
    }
    if simulation.interventions is not None and simulation.intervention_truth is not None:
        tables["interventions"] = (simulation.interventions, lake.path("raw/interventions"), schemas.INTERVENTIONS)
        tables["intervention_truth"] = (simulation.intervention_truth, lake.path("raw/intervention_truth"),
                                        schemas.INTERVENTION_TRUTH)
    rows: dict[str, int] = {}
    try:
        for name, (df, path, schema) in tables.items():
            with progress.stage("generate", f"raw/{name}") as step:
                io.overwrite_table(df, path, schema=schema)
                rows[name] = spark.read.format("delta").load(path).count()
                step.done(f"raw/{name} written, {progress.rows(rows[name])} rows")
        with progress.stage("generate", f"event files under {lake.landing_events}") as step:
            lines = _write_event_files(simulation, settings, lake.landing_events)
            step.done(f"{progress.rows(lines.get('lines', 0))} event lines written under {lake.landing_events}")
        active_share = activity.active_months(simulation.months, simulation.calendar).agg(F.sum("active_share"))
        active_account_months = float(active_share.collect()[0][0] or 0.0)
    finally:
        simulation.sim.unpersist()
    files = len(spark.read.text(lake.landing_events).inputFiles())
    summary = {
        "seed": g.seed,
        "accounts": g.accounts,
        "start": g.start.isoformat(),
        "end": g.end.isoformat(),
        "rows": rows,
        "event_lines": lines.get("lines", 0),
        "events": lines.get("ok", 0),
        "duplicate_lines": lines.get("duplicate", 0),
        "malformed_lines": {k: lines.get(k, 0) for k in activity.MALFORMED_KINDS},
        "event_files": files,
    }
    if active_account_months:
        summary["events_per_active_account_month"] = round(lines.get("ok", 0) / active_account_months, 1)
    return summary
