"""The one point-in-time helper: what is known at snapshot D (docs/churn-definition.md).

Every feature reads facts only through these functions, so the as-of rule lives in one place:

- events and tickets (timestamps): known at D when their time is strictly before D (00:00 UTC);
- subscriptions (dates): known at D when `start_date <= D`; an `end_date` after D is the future and
  is masked to null (an open subscription), an `end_date` on or before D is known;
- tickets: a `closed_at` at or after D is masked to null (the ticket is open at D);
- a window of `w` days at D is `[D - w, D)` (days), so the day D itself is never in a window;
- account attributes with a history (intervals `[valid_from, valid_to)` of dates): the value at D is
  the one valid on D - 1, i.e. `valid_from < D` and (`valid_to` null or `valid_to >= D`); a change
  dated on D or later is not seen.
"""

from __future__ import annotations

import calendar
import datetime as dt
from collections.abc import Sequence

from pyspark.sql import Column, DataFrame, SparkSession
from pyspark.sql import functions as F


def add_months(day: dt.date, months: int) -> dt.date:
    """Calendar month arithmetic clamped to the month's last day (Spark's `add_months` semantics)."""
    index = day.year * 12 + day.month - 1 + months
    year, month = divmod(index, 12)
    last = calendar.monthrange(year, month + 1)[1]
    return dt.date(year, month + 1, min(day.day, last))


def snapshot_frame(spark: SparkSession, snapshots: Sequence[dt.date]) -> DataFrame:
    """One row per snapshot date (`as_of_date`); tiny, meant to be broadcast."""
    return spark.createDataFrame([(d,) for d in sorted(set(snapshots))], "as_of_date date")


def start_of(as_of: Column) -> Column:
    """Snapshot D as a timestamp (00:00 UTC): the instant before which timestamped facts are known."""
    return as_of.cast("timestamp")


def time_known_at(ts: Column, as_of: Column) -> Column:
    """A timestamped fact (event, ticket opening or closing) is known at D when it happened before D."""
    return ts < start_of(as_of)


def window_start(as_of: Column, days: int) -> Column:
    """First day of the `days`-day window `[D - days, D)`."""
    return F.date_sub(as_of, days)


def in_window(day: Column, as_of: Column, days: int) -> Column:
    """`day` lies in `[D - days, D)`."""
    return (day >= window_start(as_of, days)) & (day < as_of)


def time_in_window(ts: Column, as_of: Column, days: int) -> Column:
    """Timestamp `ts` lies in `[D - days, D)` (00:00 UTC boundaries)."""
    return (ts >= start_of(window_start(as_of, days))) & time_known_at(ts, as_of)


def known_end_date(end_date: Column, as_of: Column) -> Column:
    """The `end_date` as known at D: null (still open) when it is after D."""
    return F.when(end_date <= as_of, end_date)


def active_on(day: Column, start_date: Column, end_date: Column) -> Column:
    """A subscription is active on `day` when `start_date <= day < end_date` (null end = open)."""
    return (start_date <= day) & (end_date.isNull() | (end_date > day))


def subscriptions_as_of(subscriptions: DataFrame, snapshots: DataFrame, history_days: int) -> DataFrame:
    """Subscriptions as known at each snapshot D: grain (subscription, as_of_date).

    Keeps rows started on or before D that are active at D or ended within `history_days` before D;
    `end_date` is replaced by its as-of value (null when after D). The original `end_date` is dropped
    so no later step can read the future.
    """
    d = F.col("as_of_date")
    cond = (F.col("start_date") <= d) & (
        F.col("end_date").isNull() | (F.col("end_date") > F.date_sub(d, history_days))
    )
    return (
        subscriptions.join(F.broadcast(snapshots), cond, "inner")
        .withColumn("end_date", known_end_date(F.col("end_date"), d))
    )


def tickets_as_of(tickets: DataFrame, snapshots: DataFrame, history_days: int) -> DataFrame:
    """Support tickets as known at each snapshot D: grain (ticket, as_of_date).

    Keeps tickets opened before D that were opened within `history_days` or are still open at D;
    `closed_at` is replaced by its as-of value (null when at or after D: the ticket is open at D).
    """
    d = F.col("as_of_date")
    closed = F.col("closed_at")
    still_open = closed.isNull() | ~time_known_at(closed, d)
    cond = time_known_at(F.col("opened_at"), d) & (
        (F.col("opened_at") >= start_of(F.date_sub(d, history_days))) | still_open
    )
    return (
        tickets.join(F.broadcast(snapshots), cond, "inner")
        .withColumn("closed_at", F.when(time_known_at(closed, d), closed))
    )


def valid_before(valid_from: Column, valid_to: Column, as_of: Column) -> Column:
    """An interval `[valid_from, valid_to)` of dates (null `valid_to` = open) holds the day before D:
    it started before D and had not ended by D - 1. A change dated on D itself is not seen at D."""
    return (valid_from < as_of) & (valid_to.isNull() | (valid_to >= as_of))


def attributes_as_of(history: DataFrame, snapshots: DataFrame, attributes: Sequence[str]) -> DataFrame:
    """The attribute values each account had at each snapshot D: grain (account_id, as_of_date).

    `history` has one row per account and interval `[valid_from, valid_to)` with the `attributes`
    columns; intervals of an account must not overlap (io.check_attribute_history), so at most one
    row is valid at D. An account with no row valid on D - 1 has no row here (the join's caller gets
    nulls). `valid_from` and `valid_to` are dropped: no later step can read when the value changes.
    """
    d = F.col("as_of_date")
    cond = valid_before(F.col("valid_from"), F.col("valid_to"), d)
    return history.join(F.broadcast(snapshots), cond, "inner").select("account_id", "as_of_date", *attributes)
