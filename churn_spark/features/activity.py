"""Activity features from daily activity rows (`silver.account_daily_activity`, or `daily_activity`
of bronze events), for all snapshots from ONE scan and one aggregation.

How the cost stays flat in the number of snapshots and windows:

1. Boundaries: every date a window of any snapshot starts or ends at (D, D-w, D-2w for trends, the
   lookback start), sorted; they cut time into intervals `[B_i, B_i+1)` (at most 62 days each).
2. One aggregation of the daily rows (account, day, event type -> events, value units) to grain
   (account, interval): per event type a count, a fixed-point value sum and a bit mask of active
   days (so distinct days add up across intervals). Days are whole UTC days, so the daily rows give
   exactly what the raw events gave.
3. Running sums over an account's intervals give, for every boundary B_k, the totals of all days
   before B_k; a window `[D-w, D)` is then `total(D) - total(D-w)`, exactly (integers only).
4. The totals each (snapshot, role) needs are looked up per account in its sorted array of running
   totals (no join or pivot): after the aggregation's shuffle the data is repartitioned once by
   account and stays there; each account's row becomes one row per snapshot whose role totals are
   array lookups.

The as-of rule (asof.py) holds by construction: a boundary's total only covers days before it.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from pyspark.sql import Column, DataFrame, Window
from pyspark.sql import functions as F

from churn_spark import asof
from churn_spark.config import ChurnSettings, FeatureSettings
from churn_spark.features import catalog as cat
from churn_spark.schemas import KEYS
from churn_spark.silver.daily import DAY, VALUE_SCALE

MAX_INTERVAL_DAYS = 62  # a day mask per interval must fit in a signed 64-bit long
EPOCH = dt.date(1970, 1, 1)
END = "end"


@dataclass(frozen=True)
class Boundaries:
    """Sorted boundary dates and, per snapshot, which boundary index each role (end, w<w>, t<w>, lb) uses."""

    dates: list[dt.date]
    roles: list[tuple[dt.date, str, int]]  # (as_of_date, role, boundary index)
    role_names: list[str]

    def span_days(self, as_of: dt.date) -> int:
        """Days from the earliest boundary of `as_of` to `as_of`: how far back its features look."""
        return max((as_of - self.dates[k]).days for d, _, k in self.roles if d == as_of)


def snapshot_roles(as_of: dt.date, features: FeatureSettings, churn: ChurnSettings) -> dict[str, dt.date]:
    """The window boundaries of one snapshot: D itself, D-w per window, D-2w per trend, the lookback start."""
    roles = {END: as_of}
    roles.update({f"w{w}": as_of - dt.timedelta(days=w) for w in features.windows_days})
    roles.update({f"t{w}": as_of - dt.timedelta(days=2 * w) for w in features.trend_windows_days})
    roles["lb"] = asof.add_months(as_of, -churn.lookback_months)
    return roles


def boundaries(snapshots: Sequence[dt.date], features: FeatureSettings, churn: ChurnSettings) -> Boundaries:
    per_snapshot = {d: snapshot_roles(d, features, churn) for d in sorted(set(snapshots))}
    dates = sorted({b for roles in per_snapshot.values() for b in roles.values()})
    filled = [dates[0]]
    for b in dates[1:]:
        while (b - filled[-1]).days > MAX_INTERVAL_DAYS:
            filled.append(filled[-1] + dt.timedelta(days=MAX_INTERVAL_DAYS))
        filled.append(b)
    index = {b: k for k, b in enumerate(filled)}
    roles = [(d, r, index[b]) for d, rs in per_snapshot.items() for r, b in rs.items()]
    return Boundaries(filled, roles, list(next(iter(per_snapshot.values())).keys()))


def with_interval_of_day(events: DataFrame, bounds: Boundaries) -> DataFrame:
    """Adds `idx` (the interval holding `day`) and `offset` (day number inside it) to events in [B_0, B_last).

    Two array lookups by day number in literal arrays (one entry per day of the range): cheaper per
    event than a join with a calendar table, and no extra stage.
    """
    idx_of_day: list[int] = []
    offset_of_day: list[int] = []
    for i in range(len(bounds.dates) - 1):
        days = (bounds.dates[i + 1] - bounds.dates[i]).days
        idx_of_day += [i] * days
        offset_of_day += list(range(days))
    day_number = f"datediff(day, DATE'{bounds.dates[0].isoformat()}') + 1"
    return events.withColumns({
        "idx": F.expr(f"element_at(array({', '.join(map(str, idx_of_day))}), {day_number})"),
        "offset": F.expr(f"element_at(array({', '.join(map(str, offset_of_day))}), {day_number})"),
    })


def activity_in_range(daily: DataFrame, bounds: Boundaries) -> DataFrame:
    """Daily rows with a UTC day in [B_0, B_last): `account_id`, `event_type`, `day`, `events`, `value_units`.

    A filter on the partition column (pruned scan). The as-of rule (asof.time_known_at) is the same as
    on raw events: an event is before boundary B exactly when its UTC day is before B.
    """
    lo, hi = bounds.dates[0], bounds.dates[-1]
    return (
        daily.where((F.col(DAY) >= lo) & (F.col(DAY) < hi))
        .select("account_id", "event_type", F.col(DAY).alias("day"), "events", "value_units")
    )


def _metric_names(slugs: Sequence[str]) -> list[str]:
    return [f"{s}__{m}" for s in [cat.ANY_TYPE, *slugs] for m in ("n", "v", "d") if (s, m) != (cat.ANY_TYPE, "v")]


def unique_families(slugs: Mapping[str, str]) -> list[str]:
    """The distinct families of {raw type: family}, in their first-seen order."""
    return list(dict.fromkeys(slugs.values()))


def account_interval_activity(daily: DataFrame, bounds: Boundaries, slugs: Mapping[str, str]) -> DataFrame:
    """Grain (account, interval idx): per family `<slug>__n` events, `__v` value sum (1e-4 units), `__d` days.

    From daily rows (`activity_in_range`): counts are sums of `events`, value sums sums of
    `value_units`. `last_day` is the interval's last event day (days since 1970-01-01). `slugs` maps
    raw event types to their family (several types may share one: features/vocabulary.py); types not
    in it count only towards the any-type metrics. The raw type is matched once per row to its
    family's 1-based position (0: another type); the per-family aggregates compare integers.
    """
    types, families = list(slugs), unique_families(slugs)
    position = [0] + [families.index(slugs[t]) + 1 for t in types]
    bit = F.expr("shiftleft(CAST(1 AS BIGINT), offset)")
    events, units = F.col("events"), F.col("value_units")
    typed = with_interval_of_day(daily, bounds).withColumn("__type", F.element_at(
        F.array(*[F.lit(p) for p in position]),
        (F.array_position(F.array(*[F.lit(t) for t in types]), F.col("event_type")) + 1).cast("int")))
    aggs = [F.sum(events).alias("events__n"), F.bit_or(bit).alias("events__mask"),
            F.max(F.datediff("day", F.lit(EPOCH))).alias("last_day")]
    for position_of_family, slug in enumerate(families, start=1):
        is_t = F.col("__type") == position_of_family
        aggs += [F.sum(F.when(is_t, events).otherwise(F.lit(0))).alias(f"{slug}__n"),
                 F.sum(F.when(is_t, units)).alias(f"{slug}__v"), F.bit_or(F.when(is_t, bit)).alias(f"{slug}__mask")]
    grouped = typed.groupBy("account_id", "idx").agg(*aggs)
    days = [F.coalesce(F.bit_count(f"{s}__mask"), F.lit(0)).cast("long").alias(f"{s}__d")
            for s in [cat.ANY_TYPE, *families]]
    sums = [F.coalesce(f"{s}__v", F.lit(0)).alias(f"{s}__v") for s in families]
    counts = [F.col(f"{s}__n") for s in [cat.ANY_TYPE, *families]]
    return grouped.select("account_id", "idx", "last_day", *counts, *sums, *days)


def running_totals(intervals: DataFrame, metrics: Sequence[str], last_k: int) -> DataFrame:
    """Grain (account, interval idx): each metric summed over the account's intervals up to `idx`.

    The row holds the totals of all days before boundary k for every k in `[idx + 1, __next]`
    (`__next`: the account's next active interval, else the last boundary).
    """
    order = Window.partitionBy("account_id").orderBy("idx")
    running = order.rowsBetween(Window.unboundedPreceding, Window.currentRow)
    return intervals.select(
        "account_id", "idx", F.coalesce(F.lead("idx").over(order), F.lit(last_k)).alias("__next"),
        F.max("last_day").over(running).alias("last_day"),
        *[F.sum(m).over(running).alias(m) for m in metrics],
    )


def totals_at_roles(intervals: DataFrame, bounds: Boundaries, slugs: Sequence[str]) -> DataFrame:
    """Grain (account, as_of_date): struct `__at_<role>` = every metric's total over all days before the role's date.

    Per account (rows stay partitioned by account after the running sums: no further shuffle, no
    join, no pivot): the sorted running totals and a position array mapping each boundary k to the
    entry valid at k; then one row per snapshot, where each role's struct is one array lookup.
    A row exists when the account has an event in the range before D; `__span_days` is D's span
    (see `days_since_last_event`). The per-snapshot indices are literal arrays in SQL text: a
    handful of expressions instead of one Column per (snapshot, role).
    """
    metrics = _metric_names(slugs)
    snaps = sorted({d for d, _, _ in bounds.roles})
    k_of = {(d, r): k for d, r, k in bounds.roles}
    entry = F.struct("idx", "__next", "last_day", *metrics)
    per_account = (
        running_totals(intervals, metrics, len(bounds.dates) - 1)
        .groupBy("account_id").agg(F.sort_array(F.collect_list(entry)).alias("__totals"))
        .withColumn("__first", F.element_at("__totals", 1)["idx"] + 1)
        .withColumn("__pos", F.flatten(F.transform(
            "__totals", lambda e, i: F.array_repeat(i + 1, (e["__next"] - e["idx"]).cast("int")))))
    )
    per_snapshot = per_account.select(
        "account_id", "__totals", "__first", "__pos",
        F.posexplode(F.array(*[F.lit(d) for d in snaps])).alias("__s", "as_of_date"))

    def nth(values: Sequence[object]) -> str:
        """SQL: the value of the current snapshot (`__s`, 0-based) in a literal array, one per snapshot."""
        return f"element_at(array({', '.join(str(v) for v in values)}), __s + 1)"

    def at_role(role: str) -> Column:
        k = nth([k_of[(d, role)] for d in snaps])
        position = f"try_element_at(__pos, {k} - __first + 1)"
        return F.expr(f"CASE WHEN {k} >= __first THEN try_element_at(__totals, {position}) END").alias(f"__at_{role}")

    rows = per_snapshot.select(*KEYS, F.expr(nth([bounds.span_days(d) for d in snaps]))
                               .alias("__span_days"), *[at_role(r) for r in bounds.role_names])
    return rows.where(F.col(f"__at_{END}").isNotNull())


def _between(metric: str, newer: str, older: str) -> str:
    """SQL: the total of `metric` over the days in [older role date, newer role date)."""
    return f"(coalesce(`__at_{newer}`.`{metric}`, 0) - coalesce(`__at_{older}`.`{metric}`, 0))"


def activity_columns(slugs: Sequence[str], features: FeatureSettings, churn: ChurnSettings) -> dict[str, str]:
    """The activity feature columns (without per-seat rates) from the role totals: name -> SQL expression.

    SQL text for one `selectExpr`: composing ~200 Columns function by function costs the driver
    tens of thousands of Py4J round trips (seconds) per run.
    """
    lookback_days = f"datediff(as_of_date, add_months(as_of_date, -{churn.lookback_months}))"
    cols: dict[str, str] = {}
    for slug in [cat.ANY_TYPE, *slugs]:
        for w in features.windows_days:
            cols[cat.count_col(slug, w)] = f"CAST({_between(f'{slug}__n', END, f'w{w}')} AS DOUBLE)"
            if slug != cat.ANY_TYPE:
                cols[cat.value_sum_col(slug, w)] = f"{_between(f'{slug}__v', END, f'w{w}')} / {VALUE_SCALE}"
            cols[cat.days_active_col(slug, w)] = f"CAST({_between(f'{slug}__d', END, f'w{w}')} AS DOUBLE)"
        lb_rate = f"{_between(f'{slug}__n', END, 'lb')} / {lookback_days}"
        for w in features.trend_windows_days:
            recent = _between(f"{slug}__n", END, f"w{w}")
            previous = _between(f"{slug}__n", f"w{w}", f"t{w}")
            cols[cat.trend_prev_col(slug, w)] = f"CAST(try_divide({recent}, {previous}) AS DOUBLE)"
            cols[cat.trend_lookback_col(slug, w)] = f"CAST(try_divide({recent} / {w}, {lb_rate}) AS DOUBLE)"
    return cols


def days_since_last_event() -> str:
    """SQL: days from the last event day before D to D, null when none within D's span (same for every run)."""
    age = f"datediff(as_of_date, DATE'{EPOCH.isoformat()}') - `__at_{END}`.last_day"
    return f"CAST(CASE WHEN `__at_{END}`.last_day IS NOT NULL AND {age} <= __span_days THEN {age} END AS DOUBLE)"


def activity_features(daily: DataFrame, snapshots: Sequence[dt.date], slugs: Mapping[str, str],
                      features: FeatureSettings, churn: ChurnSettings) -> DataFrame:
    """Grain (account, as_of_date) for accounts with any event in the snapshot spans; see module doc.

    `daily`: rows of `silver.account_daily_activity` (or `daily_activity` of bronze events). Accounts
    without events get no row: the job's left join fills counts with 0.
    """
    bounds = boundaries(snapshots, features, churn)
    intervals = account_interval_activity(activity_in_range(daily, bounds), bounds, slugs)
    totals = totals_at_roles(intervals, bounds, unique_families(slugs))
    columns = {**activity_columns(unique_families(slugs), features, churn),
               cat.DAYS_SINCE_LAST_EVENT: days_since_last_event()}
    return totals.selectExpr(*KEYS, *[f"{sql} AS `{name}`" for name, sql in columns.items()])


def with_per_seat_rates(df: DataFrame, slugs: Sequence[str], features: FeatureSettings) -> DataFrame:
    """Adds `<slug>_count_per_seat_<w>d` = count / `quantity` (null without seats); needs both columns."""
    return df.withColumns({
        cat.per_seat_col(s, w): F.try_divide(F.col(cat.count_col(s, w)), F.col("quantity").cast("double"))
        for s in [cat.ANY_TYPE, *slugs] for w in features.per_seat_windows_days
    })
