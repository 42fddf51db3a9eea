"""The naive Spark way most churn code takes: for each snapshot, filter and aggregate the events
(and subscriptions, tickets) for that date, then union the per-snapshot results.

Same definitions as the race spec; written independently of churn_spark (no shared helpers), so
agreement with ours is a real cross-check. Cost grows with snapshots x events.
"""

from __future__ import annotations

import datetime as dt
from functools import reduce

from pyspark.sql import Column, DataFrame, SparkSession, Window
from pyspark.sql import functions as F

from bench.spec import ANY_TYPE, KEYS, RaceSpec, add_months

FAR = dt.date(9999, 12, 31)


def periods(subs: DataFrame, grace_days: int) -> DataFrame:
    """Continuous active periods per account (gaps up to `grace_days` bridged)."""
    order = Window.partitionBy("account_id").orderBy("start_date", F.col("end_date").asc_nulls_last(),
                                                     "subscription_id")
    end = F.coalesce("end_date", F.lit(FAR))
    latest = F.max(end).over(order.rowsBetween(Window.unboundedPreceding, -1))
    new = F.when(latest.isNull() | (F.datediff("start_date", latest) > grace_days), 1).otherwise(0)
    numbered = subs.withColumn("new", new).withColumn("period", F.sum("new").over(
        order.rowsBetween(Window.unboundedPreceding, 0)))
    return numbered.groupBy("account_id", "period").agg(
        F.min("start_date").alias("period_start"), F.max(end).alias("period_end_f")
    ).select("account_id", "period_start", F.when(F.col("period_end_f") < F.lit(FAR), F.col("period_end_f"))
             .alias("period_end"))


def labels_at(day: dt.date, subs: DataFrame, accounts: DataFrame, per: DataFrame, spec: RaceSpec) -> DataFrame:
    d = F.lit(day)
    active = subs.where((F.col("start_date") <= d) & (F.col("end_date").isNull() | (F.col("end_date") > d)))
    eligible = (active.select("account_id").distinct().join(accounts, "account_id")
                .withColumn("tenure_days", F.datediff(d, F.to_date("created_at")).cast("int"))
                .where(F.col("tenure_days") >= spec.min_tenure_days))
    containing = per.where((F.col("period_start") <= d) & (F.col("period_end").isNull() | (F.col("period_end") > d)))
    horizon = add_months(day, spec.horizon_months)
    censored = horizon + dt.timedelta(days=spec.grace_days) > spec.data_end_date
    churned = F.col("period_end").isNotNull() & (F.col("period_end") <= F.lit(horizon))
    label: Column = F.lit(None) if censored else F.when(churned, 1).otherwise(0)
    return eligible.join(containing, "account_id", "left").select(
        "account_id", d.alias("as_of_date"), label.cast("int").alias("label"),
        (F.lit(None) if censored else F.when(churned, F.col("period_end"))).cast("date").alias("churn_date"),
        "tenure_days")


def activity_at(day: dt.date, events: DataFrame, spec: RaceSpec) -> DataFrame:
    span = spec.span_days[day.isoformat()]
    ev = events.where((F.col("day") >= F.lit(day - dt.timedelta(days=span))) & (F.col("day") < F.lit(day)))
    aggs = [F.datediff(F.lit(day), F.max("day")).cast("double").alias("days_since_last_event")]
    for w in spec.windows:
        inside = F.col("day") >= F.lit(day - dt.timedelta(days=w))
        aggs.append(F.count_if(inside).cast("double").alias(f"{ANY_TYPE}_count_{w}d"))
        for event_type, slug in spec.event_types.items():
            aggs.append(F.count_if(inside & (F.col("event_type") == event_type)).cast("double")
                        .alias(f"{slug}_count_{w}d"))
    return ev.groupBy("account_id").agg(*aggs)


def tickets_open_at(day: dt.date, tickets: DataFrame) -> DataFrame:
    d = F.lit(day).cast("timestamp")
    open_ = tickets.where((F.col("opened_at") < d) & (F.col("closed_at").isNull() | (F.col("closed_at") >= d)))
    return open_.groupBy("account_id").agg(F.count(F.lit(1)).cast("double").alias("tickets_open"))


def run(spec: RaceSpec, spark: SparkSession) -> int:
    accounts = spark.read.parquet(spec.input_path("accounts")).select("account_id", "created_at")
    subs = spark.read.parquet(spec.input_path("subscriptions"))
    tickets = spark.read.parquet(spec.input_path("support_tickets"))
    events = spark.read.parquet(spec.input_path("events")).select(
        "account_id", "event_type", F.to_date("event_time").alias("day"))
    per = periods(subs, spec.grace_days)
    counts = spec.count_columns()
    parts = []
    for day in spec.snapshot_dates:
        part = (labels_at(day, subs, accounts, per, spec)
                .join(activity_at(day, events, spec), "account_id", "left")
                .join(tickets_open_at(day, tickets), "account_id", "left")
                .fillna(0.0, subset=[*counts, "tickets_open"]))
        parts.append(part.select(*spec.output_columns()))
    out = reduce(DataFrame.unionByName, parts)
    out.write.mode("overwrite").parquet(spec.out)
    return spark.read.parquet(spec.out).agg(F.count(F.lit(1))).first()[0]  # type: ignore[index]


__all__ = ["KEYS", "run"]
