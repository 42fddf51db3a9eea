"""Churn labels (docs/churn-definition.md): eligibility at each snapshot D and churn within the horizon.

- Eligible at D: a subscription active at D (`start_date <= D < end_date`, or open) and tenure at D
  (days since the account's `created_at` date) >= `min_tenure_days`; an account created after D is
  never eligible.
- Active period: an account's subscriptions merged when the gap between the latest end so far and
  the next start is at most `grace_days` (renewals, upgrades, short lapses and overlaps merge).
- Label 1 when the active period containing D ends in `(D, D + horizon]` (`churn_date` = that end),
  0 when it ends later or is open, null (censored) when `D + horizon + grace_days` is after `data_end`.
- Every row written to gold.churn_labels carries that definition (`label_definition`, `with_definition`):
  training plans its split gap from it and refuses a selection of snapshots labelled under several.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from pyspark.sql import Column, DataFrame, Window
from pyspark.sql import functions as F

from churn_spark import asof
from churn_spark.config import ChurnSettings, SnapshotSettings
from churn_spark.errors import ConfigError, ContractError
from churn_spark.fingerprint import canonical_json, fingerprint
from churn_spark.schemas import CHURN_LABEL_VALUES, KEYS


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
    """Grain (account, as_of_date) with schemas.CHURN_LABEL_VALUES: `label` 1/0/null, `churn_date`, `tenure_days`."""
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



# --- the definition labels carry ----------------------------------------------------------------

CENSORING = "null when as_of_date + horizon_months + grace_days is after data_end"
"""The data-end rule of `is_censored`, recorded in every definition (its wording changes with the rule)."""


def label_definition(churn: ChurnSettings) -> dict[str, Any]:
    """What a label computed with `churn` means: horizon, grace, minimum tenure and the censoring rule.

    Not the snapshot schedule nor `data_end` itself: those say which rows exist and which are censored
    (`data_end` is stored per row beside it), not what a 1 or a 0 means.
    """
    return {"horizon_months": churn.horizon_months, "grace_days": churn.grace_days,
            "min_tenure_days": churn.min_tenure_days, "censoring": CENSORING}


def with_definition(labels: DataFrame, churn: ChurnSettings, data_end: dt.date) -> DataFrame:
    """`labels` (schemas.CHURN_LABEL_VALUES) as gold.churn_labels stores them (schemas.CHURN_LABELS): with
    `data_end`, `definition` (canonical JSON of `label_definition(churn)`) and `definition_fingerprint`."""
    definition = label_definition(churn)
    return labels.select(*CHURN_LABEL_VALUES.fieldNames(), F.lit(data_end).alias("data_end"),
                         F.lit(canonical_json(definition)).alias("definition"),
                         F.lit(fingerprint(definition)).alias("definition_fingerprint"))


def recorded_definitions(labels: DataFrame,
                         snapshots: Sequence[dt.date]) -> list[tuple[str | None, str | None, tuple[dt.date, ...]]]:
    """(fingerprint, definition JSON, its snapshots) per definition recorded on the rows of `snapshots`.

    (None, None, ...) for rows without one: a table or slices written before definitions were recorded.
    One small aggregate (a row per distinct definition, partition-pruned to `snapshots`); no row collected.
    """
    if "definition_fingerprint" in labels.columns and "definition" in labels.columns:
        fp, text = F.col("definition_fingerprint"), F.col("definition")
    else:
        fp = text = F.lit(None).cast("string")
    rows = (labels.where(F.col("as_of_date").isin(list(snapshots)))
            .groupBy(fp.alias("fp"), text.alias("text"))
            .agg(F.array_sort(F.collect_set("as_of_date")).alias("days")).collect())
    return sorted(((r["fp"], r["text"], tuple(r["days"])) for r in rows), key=lambda g: g[2][0])


@dataclass(frozen=True)
class LabelDefinition:
    """The one churn definition of the labelled snapshots a training run uses.

    `assumed`: its snapshots whose labels record no definition (written before definitions were
    recorded); they are taken to have today's `churn` settings, which is then the definition when no
    snapshot records one.
    """

    definition: dict[str, Any]
    fingerprint: str
    snapshots: tuple[dt.date, ...]
    assumed: tuple[dt.date, ...] = ()

    @property
    def horizon_months(self) -> int:
        return int(self.definition["horizon_months"])

    @property
    def grace_days(self) -> int:
        return int(self.definition["grace_days"])

    @property
    def source(self) -> str:
        """`recorded` (every snapshot), `config` (none: today's churn settings) or `recorded+config`."""
        if not self.assumed:
            return "recorded"
        return "config" if len(self.assumed) == len(self.snapshots) else "recorded+config"

    def note(self) -> str | None:
        """One line saying what was assumed, when anything was (None: every snapshot records it)."""
        if not self.assumed:
            return None
        return (f"gold.churn_labels records no churn definition for {date_runs(self.assumed, self.snapshots)}"
                f" (labelled before definitions were recorded): assumed today's churn settings "
                f"({describe_definition(self.definition)}); rerun `churn-spark features` over them to record it")

    def as_dict(self) -> dict[str, Any]:
        """JSON-able, for the model's metadata (lineage) and the run summary."""
        return {"fingerprint": self.fingerprint, "definition": self.definition, "source": self.source,
                "assumed_snapshots": [d.isoformat() for d in self.assumed], "note": self.note()}


def date_runs(days: Sequence[dt.date], among: Sequence[dt.date]) -> str:
    """`days` as runs of consecutive snapshots of `among`: `2023-01-01..2023-03-01, 2023-06-01 (4 snapshots)`."""
    position = {d: i for i, d in enumerate(sorted(set(among)))}
    runs: list[list[dt.date]] = []
    for d in sorted(set(days)):
        if runs and position[d] == position[runs[-1][1]] + 1:
            runs[-1][1] = d
        else:
            runs.append([d, d])
    n = len(set(days))
    return (", ".join(f"{a}" if a == b else f"{a}..{b}" for a, b in runs)
            + f" ({n} snapshot{'s' if n != 1 else ''})")


def describe_definition(definition: dict[str, Any]) -> str:
    """`horizon_months=6, grace_days=30, min_tenure_days=0` (and the censoring rule when not today's)."""
    fields = [f"{k}={definition[k]}" for k in ("horizon_months", "grace_days", "min_tenure_days") if k in definition]
    fields += [f"{k}={v!r}" for k, v in sorted(definition.items())
               if k not in ("horizon_months", "grace_days", "min_tenure_days", "censoring")]
    if definition.get("censoring") != CENSORING:
        fields.append(f"censoring={definition.get('censoring')!r}")
    return ", ".join(fields)


def definition_of_snapshots(labels: DataFrame, snapshots: Sequence[dt.date], churn: ChurnSettings) -> LabelDefinition:
    """The churn definition recorded on the labels of `snapshots` (training's selection); snapshots without
    one are assumed to have today's `churn` settings. Several: a one-line ContractError naming each
    definition and the snapshots that carry it."""
    today = label_definition(churn)
    found: dict[str, LabelDefinition] = {}
    for fp, text, days in recorded_definitions(labels, snapshots):
        unrecorded = fp is None or text is None
        key = fingerprint(today) if unrecorded else str(fp)
        seen = found.get(key, LabelDefinition(today if unrecorded else json.loads(str(text)), key, (), ()))
        found[key] = LabelDefinition(seen.definition, key, tuple(sorted({*seen.snapshots, *days})),
                                     tuple(sorted({*seen.assumed, *days})) if unrecorded else seen.assumed)
    if not found:
        raise ContractError(f"gold.churn_labels has no rows for the labelled snapshots {sorted(snapshots)}")
    if len(found) > 1:
        among = sorted(d for g in found.values() for d in g.snapshots)
        parts = [f"{g.fingerprint} ({describe_definition(g.definition)}) on {date_runs(g.snapshots, among)}"
                 + (f", of which {date_runs(g.assumed, among)} record none (today's churn settings assumed)"
                    if g.assumed else "")
                 for g in sorted(found.values(), key=lambda g: g.snapshots[0])]
        raise ContractError("the labelled snapshots mix churn definitions: " + "; ".join(parts)
                            + ": relabel them with one definition (`churn-spark features --from/--to`) before training")
    (only,) = found.values()
    missing = [k for k in ("horizon_months", "grace_days") if k not in only.definition]
    if missing:
        raise ContractError(f"gold.churn_labels: definition {only.fingerprint} lacks {', '.join(missing)}")
    return only
