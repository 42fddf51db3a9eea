"""The pure transforms of silver: bronze events -> per (account, UTC day, event type) activity.

Windows are whole UTC days (asof: an event is known at D when it happened before D 00:00 UTC, so a
day is either wholly known at D or not at all): a count and a value sum per day and type are all
the activity features need, and an account's day holds far fewer rows than its raw events.
`event_type` stays the raw type: the features map raw types to families when they read silver
(features/vocabulary.py), so a new `features.event_type_map` or `max_event_types` never rebuilds silver.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence

from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F

VALUE_SCALE = 10_000  # values are summed as integers of 1e-4 units: exact, order-independent sums
DAY = "event_date"  # bronze's partition column, the UTC day of `event_time` (ingest); silver's too
GRAIN = ("account_id", DAY, "event_type")


def value_units(value: Column) -> Column:
    """A value as a whole number of 1e-4 units (null for null): integer sums do not depend on row order."""
    return F.round(value * VALUE_SCALE).try_cast("long")


def daily_activity(events: DataFrame) -> DataFrame:
    """Bronze events -> grain (account_id, event_date, event_type): `events` (count), `value_units`
    (sum of `value_units(value)`, null when every value of the group is null).

    Grouped by bronze's `event_date` (not a recomputed day) so a silver day is exactly a bronze
    partition: a sync recomputing the days a bronze commit touched replaces whole silver days.
    """
    return events.groupBy(*GRAIN).agg(F.count(F.lit(1)).alias("events"),
                                      F.sum(value_units(F.col("value"))).alias("value_units"))


def on_days(df: DataFrame, days: Sequence[dt.date]) -> DataFrame:
    """Rows of `df` (bronze or silver) on the given UTC days: a partition filter, so the scan is pruned."""
    return df.where(F.col(DAY).isin(list(days)))
