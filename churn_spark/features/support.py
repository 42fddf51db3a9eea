"""Support features: ticket counts per window, open tickets at D, resolution time, priority, tone.

Tickets are read only through `asof.tickets_as_of`: opened before D, and a `closed_at` at or after
D is null (the ticket counts as open at D). Tone is scored once per ticket, before the snapshot join.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence

from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from churn_spark import asof
from churn_spark.config import FeatureSettings
from churn_spark.features import catalog as cat
from churn_spark.features.tone import with_ticket_tone
from churn_spark.schemas import KEYS

TONE_SCALE = 10_000  # VADER compound has 4 decimals: integer sums make the mean exact and order-free


def tickets_in_range(tickets: DataFrame, snapshots: Sequence[dt.date], history_days: int) -> DataFrame:
    """Tickets that any snapshot can see (opened before the last D; opened in the history or open at the first)."""
    first, last = min(snapshots), max(snapshots)
    opened, closed = F.col("opened_at"), F.col("closed_at")
    lo = F.lit(first - dt.timedelta(days=history_days)).cast("timestamp")
    return tickets.where(
        (opened < F.lit(last).cast("timestamp"))
        & ((opened >= lo) | closed.isNull() | (closed >= F.lit(first).cast("timestamp")))
    )


def support_features(tickets: DataFrame, snapshots: DataFrame, snapshot_dates: Sequence[dt.date],
                     features: FeatureSettings) -> DataFrame:
    """Grain (account, as_of_date) for accounts with a ticket known at D; see catalog for definitions."""
    history = max(features.windows_days)
    # Rebalanced first: tone is Python, and each task pays a Python worker's start-up, so AQE sizes
    # the tasks by data instead of inheriting the cached input's partition count.
    scored = with_ticket_tone(tickets_in_range(tickets, snapshot_dates, history).hint("rebalance"))
    known = asof.tickets_as_of(scored, snapshots, history)
    d, opened = F.col("as_of_date"), F.col("opened_at")
    high = F.lower(F.col("priority")).isin([p.lower() for p in features.high_priorities])
    tone = F.round(F.col("tone") * TONE_SCALE).cast("long")
    aggs = []
    for w in features.windows_days:
        inside = asof.time_in_window(opened, d, w)
        aggs += [
            F.count_if(inside).cast("double").alias(cat.tickets_col(w)),
            F.count_if(inside & high).cast("double").alias(cat.tickets_high_col(w)),
            (F.try_divide(F.sum(F.when(inside, tone)), F.count(F.when(inside, tone))) / TONE_SCALE)
            .alias(cat.tone_col(w)),
        ]
    closed_in_history = F.col("closed_at").isNotNull() & asof.time_in_window(opened, d, history)
    seconds = F.unix_timestamp("closed_at") - F.unix_timestamp("opened_at")
    aggs += [
        F.count_if(F.col("closed_at").isNull()).cast("double").alias(cat.TICKETS_OPEN),
        (F.try_divide(F.sum(F.when(closed_in_history, seconds)), F.count(F.when(closed_in_history, seconds))) / 3600.0)
        .alias(cat.resolution_col(features)),
    ]
    return known.groupBy(*KEYS).agg(*aggs)
