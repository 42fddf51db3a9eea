"""Builders of tiny input tables for the labels/features tests (hand-made rows, explicit schemas)."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable
from decimal import Decimal
from typing import Any

from pyspark.sql import DataFrame, SparkSession

from churn_spark import schemas
from churn_spark.config import Settings
from churn_spark.lakehouse import Lakehouse

D = dt.date
T = dt.datetime


def subs(spark: SparkSession, rows: Iterable[tuple[Any, ...]]) -> DataFrame:
    """rows: (subscription_id, account_id, start, end|None[, mrr, quantity, product, bill_period])."""
    full = []
    for r in rows:
        sid, acc, start, end, *rest = r
        mrr, qty, product, period = (list(rest) + [100, 1, "basic", 1][len(rest):])[:4]
        full.append((sid, acc, product, start, end, Decimal(str(mrr)).quantize(Decimal("0.01")), qty, period))
    return spark.createDataFrame(full, schemas.SUBSCRIPTIONS)


def accounts(spark: SparkSession, rows: Iterable[tuple[Any, ...]], attributes: tuple[str, ...] = ()) -> DataFrame:
    """rows: (account_id, created_at[, attribute values...])."""
    schema = "account_id string, created_at timestamp" + "".join(f", {a} string" for a in attributes)
    return spark.createDataFrame(list(rows), schema)


def events(spark: SparkSession, rows: Iterable[tuple[Any, ...]]) -> DataFrame:
    """rows: (event_id, account_id, event_type, event_time[, value]) -> BRONZE_EVENTS rows."""
    full = []
    for r in rows:
        eid, acc, etype, ts, *rest = r
        value = rest[0] if rest else None
        full.append((eid, acc, etype, ts, value, None, ts, "test", ts.date()))
    return spark.createDataFrame(full, schemas.BRONZE_EVENTS)


def tickets(spark: SparkSession, rows: Iterable[tuple[Any, ...]]) -> DataFrame:
    """rows: (ticket_id, account_id, opened_at, closed_at|None, priority, text|None)."""
    return spark.createDataFrame([(t, a, o, c, p, "email", x) for t, a, o, c, p, x in rows], schemas.SUPPORT_TICKETS)


def write_inputs(settings: Settings, accounts_df: DataFrame, subs_df: DataFrame, events_df: DataFrame,
                 tickets_df: DataFrame | None) -> None:
    """Writes the raw Delta inputs and bronze.events under the settings' lakehouse."""
    lake = Lakehouse.from_settings(settings)
    accounts_df.write.format("delta").mode("overwrite").option("overwriteSchema", "true").save(lake.raw_accounts)
    subs_df.write.format("delta").mode("overwrite").option("overwriteSchema", "true").save(lake.raw_subscriptions)
    if tickets_df is not None:
        tickets_df.write.format("delta").mode("overwrite").save(lake.raw_support_tickets)
    events_df.write.format("delta").mode("overwrite").partitionBy("event_date").save(lake.bronze_events)
