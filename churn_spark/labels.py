"""Churn labels (docs/churn-definition.md): eligibility at each snapshot D and churn within the horizon.

- Eligible at D: a subscription active at D (`start_date <= D < end_date`, or open) and tenure at D
  (days since the account's `created_at` date) >= `min_tenure_days`; an account created after D is
  never eligible.
- Active period: an account's subscriptions merged when the gap between the latest end so far and
  the next start is at most `grace_days` (renewals, upgrades, short lapses and overlaps merge).
- Label 1 when the active period containing D ends in `(D, D + horizon]` (`churn_date` = that end),
  0 when it ends later or is open, null (censored) when `D + horizon + grace_days` is after `data_end`.
"""

from __future__ import annotations

import datetime as dt

from pyspark.sql import Column, DataFrame, Window
from pyspark.sql import functions as F

from churn_spark import asof
from churn_spark.config import ChurnSettings, SnapshotSettings
from churn_spark.errors import ConfigError
from churn_spark.schemas import KEYS


def snapshot_dates(schedule: SnapshotSettings) -> list[dt.date]:
    """The configured snapshot dates in `[start, end]`: first days of months, or every `every_days`."""
    if schedule.start is None or schedule.end is None:
        raise ConfigError("churn.snapshots needs start and end (or --from/--to)")
    if schedule.end < schedule.start:
        raise ConfigError(f"churn.snapshots: end {schedule.end} is before start {schedule.start}")
    if schedule.frequency == "days":
        step = dt.timedelta(days=schedule.every_days)
        count = (schedule.end - schedule.start) // step + 1
        return [schedule.start + i * step for i in range(count)]
    first = schedule.start.replace(day=1)
    day = first if first == schedule.start else asof.add_months(first, 1)
    out = []
    while day <= schedule.end:
        out.append(day)
        day = asof.add_months(day, 1)
    return out


def active_periods(subscriptions: DataFrame, grace_days: int) -> DataFrame:
    """Grain: one row per (account, continuous active period): `period_start`, `period_end` (null = open).

    A subscription starts a new period when its start is more than `grace_days` after the latest end
    of the account's earlier subscriptions (an open one never ends). Window functions, no UDF.
    """
    far = F.lit(dt.date(9999, 12, 31))
    order = Window.partitionBy("account_id").orderBy("start_date", F.col("end_date").asc_nulls_last(),
                                                     "subscription_id")
    latest_end = F.max(F.coalesce("end_date", far)).over(order.rowsBetween(Window.unboundedPreceding, -1))
    new_period = F.when(latest_end.isNull() | (F.datediff("start_date", latest_end) > grace_days), 1).otherwise(0)
    numbered = subscriptions.withColumn("__new", new_period).withColumn(
        "__period", F.sum("__new").over(order.rowsBetween(Window.unboundedPreceding, 0))
    )
    end = F.max(F.coalesce("end_date", far))
    return numbered.groupBy("account_id", "__period").agg(
        F.min("start_date").alias("period_start"), F.when(end < far, end).alias("period_end")
    ).drop("__period")


def tenure_days(created_at: Column, as_of: Column) -> Column:
    """Whole days from the account's creation date to D (negative: created after D)."""
    return F.datediff(as_of, F.to_date(created_at))


def eligible_accounts(subscriptions: DataFrame, accounts: DataFrame, snapshots: DataFrame,
                      min_tenure_days: int) -> DataFrame:
    """Grain (account, as_of_date): accounts with a subscription active at D and enough tenure; `tenure_days`.

    Built from the as-of view of subscriptions only, so eligibility never depends on the future.
    """
    known = asof.subscriptions_as_of(subscriptions, snapshots, history_days=0)
    active = known.where(F.col("end_date").isNull()).select(*KEYS).distinct()
    return (
        active.join(accounts.select("account_id", "created_at"), "account_id")
        .withColumn("tenure_days", tenure_days(F.col("created_at"), F.col("as_of_date")).cast("int"))
        .where(F.col("tenure_days") >= max(min_tenure_days, 0))
        .select(*KEYS, "tenure_days")
    )


def is_censored(as_of: Column, churn: ChurnSettings, data_end: dt.date) -> Column:
    """The outcome of D is not fully observed: `D + horizon + grace_days` is after `data_end`."""
    return F.date_add(F.add_months(as_of, churn.horizon_months), churn.grace_days) > F.lit(data_end)


def churn_labels(subscriptions: DataFrame, accounts: DataFrame, snapshots: DataFrame,
                 churn: ChurnSettings, data_end: dt.date) -> DataFrame:
    """Grain (account, as_of_date) with schemas.CHURN_LABELS: `label` 1/0/null, `churn_date`, `tenure_days`."""
    eligible = eligible_accounts(subscriptions, accounts, snapshots, churn.min_tenure_days)
    periods = active_periods(subscriptions, churn.grace_days)
    d = F.col("as_of_date")
    containing = (F.col("e.account_id") == F.col("p.account_id")) & asof.active_on(
        d, F.col("period_start"), F.col("period_end"))
    horizon_end = F.add_months(d, churn.horizon_months)
    churned = F.col("period_end").isNotNull() & (F.col("period_end") <= horizon_end)
    censored = is_censored(d, churn, data_end)
    return (
        eligible.alias("e").join(periods.alias("p"), containing, "left")
        .select(
            F.col("e.account_id").alias("account_id"),
            d.alias("as_of_date"),
            F.when(censored, F.lit(None)).when(churned, 1).otherwise(0).cast("int").alias("label"),
            F.when(~censored & churned, F.col("period_end")).alias("churn_date"),
            F.col("tenure_days"),
        )
    )

