"""The event vocabulary of a feature set: which raw event types feed which family of activity columns.

Each raw type of the activity input gets a family (`{raw type: family}`, the "members"), in this order:

1. `features.event_type_map`: a key equal to the raw type, else a key equal to its slug (then every
   variant matches), names its family (slugged: a family is a column prefix); `other` pools it.
2. else its slug (`catalog.type_slug`): case, spacing and punctuation variants of one type
   ("Page View", "page_view", "PAGE-VIEW") share it and fold into one family. Raw types that are not
   variants but share a slug ("café", "caf"), or a reserved prefix, are one config error listing them.
3. `features.max_event_types`: the families ranked by their events in the ranking range (the first
   build's `[first snapshot - churn.lookback_months, last snapshot)`: the span the training snapshots'
   features look at), most first, ties by name; those beyond the cap pool into `other`.

The members are frozen with `features.feature_set_version` at its first build (features/job.py); a
later raw type joins a frozen family when the map names it or it is a variant of a frozen raw type,
and is otherwise new (reported, ignored). Silver keeps raw types: the mapping happens when the
features read it, so changing the map or the cap needs a new feature-set version, never a silver rebuild.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Mapping, Sequence

from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from churn_spark import asof
from churn_spark.config import ChurnSettings
from churn_spark.features import catalog as cat
from churn_spark.silver.daily import DAY


def mapped_family(raw: str, event_type_map: Mapping[str, str]) -> str | None:
    """The family `features.event_type_map` gives `raw` (exact key first, then its slug as key), slugged."""
    if raw in event_type_map:
        return cat.type_slug(event_type_map[raw])
    slug = cat.type_slug(raw)
    by_slug = {k: v for k, v in event_type_map.items() if k == cat.type_slug(k)}
    return cat.type_slug(by_slug[slug]) if slug in by_slug else None


def assign_families(raw_types: Iterable[str], event_type_map: Mapping[str, str]) -> tuple[dict[str, str], list[str]]:
    """({raw type: family} by the map, else by slug; the raw types the map named), unchecked."""
    families: dict[str, str] = {}
    explicit: list[str] = []
    for raw in sorted(set(raw_types)):
        mapped = mapped_family(raw, event_type_map)
        if mapped is not None:
            explicit.append(raw)
        families[raw] = mapped if mapped is not None else cat.type_slug(raw)
    return families, explicit


def event_families(raw_types: Iterable[str], event_type_map: Mapping[str, str]) -> dict[str, str]:
    """{raw type: family} (rules 1 and 2 of the module doc); collisions are one ConfigError listing them."""
    families, explicit = assign_families(raw_types, event_type_map)
    cat.check_slug_collisions(families, explicit)
    return families


def ranking_range(snapshots: Sequence[dt.date], churn: ChurnSettings) -> tuple[dt.date, dt.date]:
    """The days whose events rank the families: `[first snapshot - lookback, last snapshot)`."""
    return asof.add_months(min(snapshots), -churn.lookback_months), max(snapshots)


def event_type_volumes(activity: DataFrame, days: tuple[dt.date, dt.date] | None) -> DataFrame:
    """Grain (event_type): `volume`, the events whose UTC day is in `days` ([start, end); None: all), 0 when none.

    From daily rows (their `events` counts) or raw events (one each): every type of the input appears.
    """
    weight = F.col("events") if "events" in activity.columns else F.lit(1).cast("long")
    inside = F.lit(True) if days is None else (F.col(DAY) >= F.lit(days[0])) & (F.col(DAY) < F.lit(days[1]))
    return activity.groupBy("event_type").agg(
        F.coalesce(F.sum(F.when(inside, weight)), F.lit(0).cast("long")).alias("volume"))


def capped_families(families: Mapping[str, str], volumes: Mapping[str, int],
                    max_types: int | None) -> dict[str, str]:
    """Rule 3: the `max_types` families with most events keep their own (ties by name), the rest -> `other`.

    `volumes`: events per raw type in the ranking range. `other` itself (explicitly mapped) never
    takes a place; None keeps every family.
    """
    totals: dict[str, int] = {}
    for raw, family in families.items():
        totals[family] = totals.get(family, 0) + volumes.get(raw, 0)
    ranked = sorted((f for f in totals if f != cat.OTHER), key=lambda f: (-totals[f], f))
    kept = set(ranked if max_types is None else ranked[:max_types])
    return {raw: family if family in kept else cat.OTHER for raw, family in families.items()}


def pinned_families(pinned: Sequence[str], raw_types: Iterable[str],
                    event_type_map: Mapping[str, str]) -> dict[str, str]:
    """Members for a pinned `features.event_types` list (raw types or family names; no cap).

    Each entry's family gets columns and the raw types of that family (variants folded) feed it; with
    `other` pinned every remaining raw type pools into it, else they feed only the any-type features.
    """
    families, explicit = assign_families([*pinned, *raw_types], event_type_map)
    kept = {families[p] for p in pinned}
    members = {raw: family for raw, family in families.items() if family in kept}
    cat.check_slug_collisions(members, explicit)
    if cat.OTHER in kept:
        members.update({raw: cat.OTHER for raw in families if raw not in members})
    return members


def extend_frozen(frozen: Mapping[str, str], raw_types: Iterable[str],
                  event_type_map: Mapping[str, str]) -> tuple[dict[str, str], list[str]]:
    """(frozen members + later raw types that belong to a frozen family, the new raw types).

    A later raw type belongs when the map names a frozen family for it, or it is a case/punctuation
    variant of a frozen raw type (same family, pooled ones too); the rest are new: no columns, ignored.
    """
    by_variant = {cat.variant_key(raw): family for raw, family in sorted(frozen.items())}
    known = set(frozen.values())
    members, new = dict(frozen), []
    for raw in sorted(set(raw_types) - set(frozen)):
        family = mapped_family(raw, event_type_map) or by_variant.get(cat.variant_key(raw))
        if family in known:
            members[raw] = family
        else:
            new.append(raw)
    return members, new


def folds(members: Mapping[str, str]) -> dict[str, list[str]]:
    """{family: its raw types} for the families that fold several raw types, or one under another name."""
    by_family: dict[str, list[str]] = {}
    for raw, family in sorted(members.items()):
        by_family.setdefault(family, []).append(raw)
    return {f: raws for f, raws in sorted(by_family.items()) if raws != [f]}
