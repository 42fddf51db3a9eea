"""The features job: `gold.churn_labels` and `gold.churn_features` for a range of snapshots.

Extract (raw inputs through io.read_input; activity once from `silver.account_daily_activity`, synced
with `bronze.events` first) -> transform (labels, then the feature families joined on the eligible
accounts) -> load (replace exactly the snapshots computed).
`build_labels_and_features` is the transform alone, reused by scoring for a single date.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from functools import reduce
from typing import Any

from pyspark import StorageLevel
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from churn_spark import asof, ids, io, progress, schemas
from churn_spark.config import Settings
from churn_spark.errors import ContractError
from churn_spark.features import catalog as cat
from churn_spark.features import vocabulary as vocab
from churn_spark.features.account import account_features, attribute_dtypes, tenure_as_double
from churn_spark.features.activity import activity_features, activity_in_range, boundaries, with_per_seat_rates
from churn_spark.features.calendar import with_season
from churn_spark.features.support import support_features
from churn_spark.fingerprint import fingerprint
from churn_spark.labels import churn_labels, label_definition, snapshot_dates, with_definition
from churn_spark.lakehouse import Lakehouse
from churn_spark.schemas import FEATURE_KEY_COLUMNS, KEYS
from churn_spark.silver import daily_activity, read_silver, silver_event_types, sync_silver

log = logging.getLogger("churn_spark")

SUPPORT_DISABLED = "disabled (inputs.support_tickets.enabled is false): support features omitted"
ATTRIBUTES_STATIC = "static (no history input): today's values used for every snapshot"
ATTRIBUTES_AS_OF = ("as of each snapshot from inputs.account_attribute_history (the value valid on D-1, "
                    "null without one): {rejected} history rows rejected")


@dataclass(frozen=True)
class FeatureInputs:
    """The job's inputs in their contracts; `tickets` is None when support tickets are configured absent.

    `events` is the activity at the grain the features need: daily rows (account_id, event_date,
    event_type, events, value_units) of `silver.account_daily_activity`, or `daily_activity(bronze)`
    (`bronze_daily_activity`); not raw events. `silver` is the summary of the sync that preceded the read.
    `attribute_history` (schemas.ACCOUNT_ATTRIBUTE_HISTORY + the attribute columns, checked) is None when
    no history is configured: the attributes are then today's values in `accounts`.
    """

    accounts: DataFrame
    subscriptions: DataFrame
    tickets: DataFrame | None
    events: DataFrame
    rejected: DataFrame | None
    silver: dict[str, Any] | None = None
    attribute_history: DataFrame | None = None
    account_references: dict[str, Any] | None = None  # ids.account_references, checked by load_inputs
    raw_event_types: list[str] | None = None  # the activity's raw types as silver's sync recorded them (None: unknown)


def read_bronze_events(spark: SparkSession, settings: Settings) -> DataFrame:
    """`bronze.events` as a lazy DataFrame (scanned once by the activity aggregation)."""
    path = Lakehouse.from_settings(settings).bronze_events
    if not io.table_exists(spark, path):
        raise ContractError(f"bronze.events not found at {path}: run `churn-spark ingest` first")
    events = spark.read.format("delta").load(path)
    return io.assert_schema(events, schemas.BRONZE_EVENTS, "bronze.events", allow_extra=True)


def bronze_daily_activity(spark: SparkSession, settings: Settings) -> DataFrame:
    """The daily activity rows computed from bronze on the fly (what silver holds, without silver)."""
    return read_bronze_events(spark, settings).transform(daily_activity)


def load_inputs(spark: SparkSession, settings: Settings, snapshots: Sequence[dt.date] | None = None) -> FeatureInputs:
    """The conformed raw inputs and the daily activity of silver, synced with bronze first (never stale).

    The ids' join check counts the events of the days the features of `snapshots` read (`activity_in_range`: from
    the earliest window or lookback start to the day before the last snapshot) when given, else of every day: a
    nightly run must not scan all of history to check the ids of one day's features (`check` counts all)."""
    conformed = {t: io.read_input(spark, settings, t) for t in ("accounts", "subscriptions", "support_tickets")}
    accounts, subscriptions = conformed["accounts"], conformed["subscriptions"]
    if accounts is None or subscriptions is None:
        raise ContractError("features need the accounts and subscriptions inputs (enabled: true)")
    tickets = conformed["support_tickets"]
    history = io.read_input(spark, settings, "account_attribute_history")
    if history is not None:
        history = io.check_attribute_history(history, accounts.good)
    synced = sync_silver(spark, settings)
    activity = read_silver(spark, settings)
    # ids that do not join fail here, before any gold table; orphans are then counted, not joined away
    referencing = activity if not snapshots else activity_in_range(
        activity, boundaries(snapshots, settings.features, settings.churn))
    references = ids.input_account_references(accounts.good, subscriptions.good, tickets.good if tickets else None,
                                              referencing)
    ids.check_account_references(references, settings.inputs)
    subscriptions = io.reject_unknown_accounts(subscriptions, accounts.good, "subscriptions")
    tickets = io.reject_unknown_accounts(tickets, accounts.good, "support_tickets") if tickets else None
    rejected = [c.rejected for c in (accounts, subscriptions, tickets, history) if c is not None]
    return FeatureInputs(accounts.good, subscriptions.good, tickets.good if tickets else None,
                         activity, reduce(DataFrame.unionByName, rejected), synced,
                         history.good if history is not None else None, references,
                         silver_event_types(spark, settings))


def attribute_history_configured(settings: Settings) -> bool:
    source = settings.inputs.account_attribute_history
    return source is not None and source.enabled


def attributes_summary(settings: Settings, rejected: dict[str, dict[str, int]]) -> str:
    """The run summary's `attributes`: static (no history), or as of D with the history's rejected rows."""
    if not attribute_history_configured(settings):
        return ATTRIBUTES_STATIC
    return ATTRIBUTES_AS_OF.format(rejected=sum(rejected.get("account_attribute_history", {}).values()))


def resolve_data_end(settings: Settings, events: DataFrame) -> dt.date:
    """`churn.data_end`, else the UTC date of the latest event.

    Read as max(`event_date`) of the daily activity, silver's (and bronze's) partition column (the UTC
    date of `event_time`): Delta answers that from the log's partition values, not by a scan.
    """
    if settings.churn.data_end is not None:
        return settings.churn.data_end
    latest = events.agg(F.max("event_date").alias("d")).first()
    if latest is None or latest["d"] is None:
        raise ContractError("no events (bronze.events, silver.account_daily_activity empty): "
                            "set churn.data_end to label snapshots")
    return latest["d"]


EVENT_TYPES_PROPERTY = "churn.feature_set.{version}.event_types"  # versions frozen before event families
EVENT_VOCABULARY_PROPERTY = "churn.feature_set.{version}.event_vocabulary"


@dataclass(frozen=True)
class EventTypes:
    """The event families a feature set has columns for, the raw types feeding them, their origin, and
    the raw types seen since.

    `types`: the families (column prefixes) in column order. `members`: {raw type: family} of every raw
    type that feeds one (features/vocabulary.py); with a configured list, other types feed only the
    any-type features. `source`: `config` (features.event_types), `recorded` (frozen when the
    feature-set version was first built, kept as a table property of gold.churn_features) or
    `discovered` (first build: the raw types of the activity input mapped, folded and capped; recorded
    after the write). `new`: raw types in the input that the frozen vocabulary lacks; their events are
    ignored until a new feature-set version is built. `ranked_over`: the [start, end) days whose events
    ranked the families for `features.max_event_types` (None: configured, or frozen before families).
    """

    types: list[str]
    source: str
    new: list[str]
    members: dict[str, str] = field(default_factory=dict)
    ranked_over: list[str] | None = None

    @property
    def folds(self) -> dict[str, list[str]]:
        """{family: raw types} where raw types were folded, mapped or pooled (the run summary's list)."""
        return vocab.folds(self.members)


def recorded_vocabulary(spark: SparkSession, settings: Settings) -> dict[str, Any] | None:
    """The vocabulary frozen for the configured feature-set version (`members`, and the `max_event_types`,
    `event_type_map` and `ranked_over` that chose them), or None before its first build. A version frozen
    before event families (a list of raw types) reads as each type its own family."""
    properties = io.table_properties(spark, Lakehouse.from_settings(settings).churn_features)
    version = settings.features.feature_set_version
    recorded = properties.get(EVENT_VOCABULARY_PROPERTY.format(version=version))
    if recorded:
        return dict(json.loads(recorded))
    legacy = properties.get(EVENT_TYPES_PROPERTY.format(version=version))
    return {"members": cat.event_type_slugs(json.loads(legacy)), "ranked_over": None} if legacy else None


def recorded_event_types(spark: SparkSession, settings: Settings) -> list[str] | None:
    """The event families frozen for the configured feature-set version, or None before its first build."""
    recorded = recorded_vocabulary(spark, settings)
    return cat.family_order(recorded["members"].values()) if recorded is not None else None


def frozen_event_types(spark: SparkSession, settings: Settings) -> list[str] | None:
    """The families of `features.event_types`, else the recorded ones: the columns of this feature set."""
    f = settings.features
    if f.event_types is not None:
        return cat.family_order(vocab.pinned_families(f.event_types, [], f.event_type_map).values())
    return recorded_event_types(spark, settings)


def ranking_days(settings: Settings, snapshots: Sequence[dt.date] | None) -> tuple[dt.date, dt.date] | None:
    """The ranking range of `snapshots`, else of the configured schedule; None (all days) without either."""
    schedule = settings.churn.snapshots
    if not snapshots and schedule.start is not None and schedule.end is not None:
        snapshots = snapshot_dates(schedule)
    return vocab.ranking_range(snapshots, settings.churn) if snapshots else None


def resolve_event_types(settings: Settings, events: DataFrame,
                        snapshots: Sequence[dt.date] | None = None,
                        raw_types: Sequence[str] | None = None) -> EventTypes:
    """The feature set's event families: configured, frozen at its first build, or discovered now.

    One aggregation of the activity input by raw type (one row per type: the vocabulary, not the data)
    gives every raw type (so every range gets the same columns) and, for a first build, its events in
    the ranking range of `snapshots` (the run's; default the configured schedule). With a frozen
    vocabulary the same scan names the types that arrived later (reported, not featurised). `raw_types`:
    the input's raw types when already known (silver's sync records them): a configured or frozen
    vocabulary then needs no scan; only a first build, which ranks the types by volume, reads the data.
    """
    f = settings.features
    frozen = recorded_vocabulary(events.sparkSession, settings) if f.event_types is None else None
    days = ranking_days(settings, snapshots) if f.event_types is None and frozen is None else None
    if raw_types is not None and (f.event_types is not None or frozen is not None):
        volumes = dict.fromkeys(raw_types, 0)  # only the names are used below
    else:
        volumes = {r["event_type"]: int(r["volume"]) for r in vocab.event_type_volumes(events, days).collect()}
    if f.event_types is not None:
        members = vocab.pinned_families(f.event_types, list(volumes), f.event_type_map)
        return EventTypes(cat.family_order(members.values()), "config", [], members)
    if frozen is None:
        members = vocab.capped_families(vocab.event_families(volumes, f.event_type_map), volumes, f.max_event_types)
        ranked = [d.isoformat() for d in days] if days is not None else None
        return EventTypes(cat.family_order(members.values()), "discovered", [], members, ranked)
    members, new = vocab.extend_frozen(frozen["members"], volumes, f.event_type_map)
    return EventTypes(cat.family_order(frozen["members"].values()), "recorded", new, members,
                      frozen.get("ranked_over"))


def record_event_types(spark: SparkSession, settings: Settings, event_types: EventTypes) -> None:
    """Freeze a discovered vocabulary on gold.churn_features (one metadata commit, first build only):
    its members, and the cap, map and ranking range that chose them."""
    if event_types.source == "discovered":
        f = settings.features
        key = EVENT_VOCABULARY_PROPERTY.format(version=f.feature_set_version)
        value = {"members": event_types.members, "max_event_types": f.max_event_types,
                 "event_type_map": f.event_type_map, "ranked_over": event_types.ranked_over}
        io.ensure_table_properties(spark, Lakehouse.from_settings(settings).churn_features,
                                   {key: json.dumps(value, sort_keys=True)})


def without_new_event_types(events: DataFrame, event_types: EventTypes) -> DataFrame:
    """A frozen feature set ignores types that arrived after it: not even the any-type counts see them.

    (With a configured list, other types still count towards the any-type features, as documented.)
    """
    if event_types.source == "recorded" and event_types.new:
        return events.where(F.col("event_type").isin(list(event_types.members)))
    return events


VOCABULARY_SETTINGS = {"event_type_map", "max_event_types"}


def feature_config_fingerprint(settings: Settings, event_types: Sequence[str], with_support: bool) -> str:
    """A short hash of everything a features slice depends on besides the data: the churn definition
    (without the snapshot schedule and data_end, which only change labels), the feature settings, the
    event families (`event_types`) and attributes. Scoring reuses a stored slice only when its fingerprint matches."""
    payload = {
        "churn": settings.churn.model_dump(mode="json", exclude={"snapshots", "data_end"}),
        "features": settings.features.model_dump(mode="json", exclude={"event_types", *VOCABULARY_SETTINGS}),
        "event_types": sorted(event_types), "support": with_support,
        "account_attributes": list(settings.inputs.account_attributes),
    }
    vocabulary = settings.features.model_dump(mode="json", include=VOCABULARY_SETTINGS, exclude_defaults=True)
    if vocabulary:  # only then: fingerprints of configs that keep the defaults are unchanged
        payload["event_vocabulary"] = vocabulary
    if attribute_history_configured(settings):  # only then: fingerprints of configs without one are unchanged
        payload["account_attribute_history"] = True
    return fingerprint(payload)


def assemble_features(spine: DataFrame, families: Sequence[DataFrame], specs: Sequence[cat.FeatureSpec],
                      slugs: Sequence[str], settings: Settings, fingerprint: str) -> DataFrame:
    """Eligible (account, D) rows left-joined with each family; counts of absent facts are 0, in catalogue order."""
    joined = reduce(lambda acc, fam: acc.join(fam, list(KEYS), "left"), families, spine)
    filled = joined.fillna(0.0, subset=[s.name for s in specs if s.zero_when_absent])
    return (
        filled.transform(tenure_as_double)
        .transform(lambda df: with_season(df) if settings.features.season else df)
        .transform(lambda df: with_per_seat_rates(df, slugs, settings.features))
        .select(*KEYS, F.lit(settings.features.feature_set_version).alias("feature_set_version"),
                F.lit(fingerprint).alias("config_fingerprint"), *[F.col(s.name) for s in specs])
    )


def labels_for(inputs: FeatureInputs, settings: Settings, snapshots: Sequence[dt.date],
               data_end: dt.date) -> DataFrame:
    """The label values (schemas.CHURN_LABEL_VALUES) for `snapshots`: the eligible (account, D) spine of the
    features. The job stores them with their definition (`labels.with_definition`)."""
    snaps = asof.snapshot_frame(inputs.events.sparkSession, snapshots)
    return churn_labels(inputs.subscriptions, inputs.accounts, snaps, settings.churn, data_end)


def features_for(inputs: FeatureInputs, settings: Settings, snapshots: Sequence[dt.date], labels: DataFrame,
                 event_types: Sequence[str] | Mapping[str, str]) -> DataFrame:
    """`gold.churn_features` rows: one per labelled (account, D), every family left-joined on the keys.

    `event_types`: {raw type: family} (`EventTypes.members`), or a list of types, each its own family.
    """
    snaps = asof.snapshot_frame(inputs.events.sparkSession, snapshots)
    slugs = event_types if isinstance(event_types, Mapping) else cat.event_type_slugs(event_types)
    attributes = settings.inputs.account_attributes
    attribute_source = inputs.attribute_history if inputs.attribute_history is not None else inputs.accounts
    specs = cat.feature_catalog(settings, slugs, with_support=inputs.tickets is not None,
                                attribute_dtypes=attribute_dtypes(attribute_source, attributes))
    families = [
        account_features(inputs.subscriptions, inputs.accounts, snaps, settings.features, attributes,
                         inputs.attribute_history),
        activity_features(inputs.events, snapshots, slugs, settings.features, settings.churn),
    ]
    if inputs.tickets is not None:
        families.append(support_features(inputs.tickets, snaps, snapshots, settings.features))
    spine = labels.select(*KEYS, "tenure_days")
    fingerprint = feature_config_fingerprint(settings, cat.families_of(slugs), inputs.tickets is not None)
    return assemble_features(spine, families, specs, cat.families_of(slugs), settings, fingerprint)


def labels_and_features(inputs: FeatureInputs, settings: Settings, snapshots: Sequence[dt.date],
                        data_end: dt.date,
                        event_types: Sequence[str] | Mapping[str, str]) -> tuple[DataFrame, DataFrame]:
    """The pure transform: (labels, features) for `snapshots`; features have a row per labelled account."""
    labels = labels_for(inputs, settings, snapshots, data_end)
    return labels, features_for(inputs, settings, snapshots, labels, event_types)


def build_labels_and_features(spark: SparkSession, settings: Settings,
                              snapshots: list[dt.date]) -> tuple[DataFrame, DataFrame]:
    """(labels, features) for `snapshots` exactly as the features job computes them; nothing is written.

    Works for dates whose labels are censored (label null); accounts without events get 0 counts.
    """
    inputs = load_inputs(spark, settings, snapshots)
    data_end = resolve_data_end(settings, inputs.events)
    event_types = resolve_event_types(settings, inputs.events, snapshots, inputs.raw_event_types)
    inputs = replace(inputs, events=without_new_event_types(inputs.events, event_types))
    return labels_and_features(inputs, settings, snapshots, data_end, event_types.members)


# --- the job -------------------------------------------------------------------------------------


def snapshot_stats(labels: DataFrame) -> list[dict[str, Any]]:
    """Per snapshot: eligible accounts, churners, censored rows, label rate (small, one row per date)."""
    rows = labels.groupBy("as_of_date").agg(
        F.count("*").alias("eligible"), F.count_if(F.col("label") == 1).alias("churned"),
        F.count_if(F.col("label").isNull()).alias("censored"), F.avg("label").alias("label_rate"),
    ).orderBy("as_of_date").collect()
    return [{"as_of_date": r["as_of_date"].isoformat(), "eligible": int(r["eligible"]), "churned": int(r["churned"]),
             "censored": int(r["censored"]),
             "label_rate": None if r["label_rate"] is None else round(float(r["label_rate"]), 4)} for r in rows]


def written_stats(spark: SparkSession, path: str, version: int, names: Sequence[str]) -> dict[str, Any]:
    """Rows per snapshot and the share of nulls per feature column in what commit `version` wrote.

    From the Parquet footers of the commit's files (io.written_counts): no second read of the
    240-column slice, no Delta statistics on every column.
    """
    per_snapshot = io.written_counts(spark, path, version, ["as_of_date"])
    rows = {r["as_of_date"]: r["__rows"] for r in per_snapshot}
    total = sum(rows.values())
    nulls = {n: sum(r["__rows"] - r[n] for r in per_snapshot) for n in names}
    return {"rows": rows, "null_rate": {n: round(nulls[n] / total, 4) if total else 0.0 for n in names}}


def cached_inputs(inputs: FeatureInputs) -> FeatureInputs:
    """The conformed small inputs cached (MEMORY_AND_DISK) for one run: labels and two families read them.

    Conforming (casts, checks, de-duplication) then happens once per table instead of once per reader.
    """
    level = StorageLevel.MEMORY_AND_DISK
    history = inputs.attribute_history
    return replace(inputs, accounts=inputs.accounts.persist(level), subscriptions=inputs.subscriptions.persist(level),
                   tickets=inputs.tickets.persist(level) if inputs.tickets is not None else None,
                   attribute_history=history.persist(level) if history is not None else None)


def release(*frames: DataFrame | None) -> None:
    for df in frames:
        if df is not None:
            df.unpersist()


def run_features(spark: SparkSession, settings: Settings) -> dict[str, Any]:
    """Labels and features for settings.churn.snapshots; replaces exactly those snapshot slices."""
    snapshots = snapshot_dates(settings.churn.snapshots)
    if not snapshots:
        raise ContractError("churn.snapshots selects no snapshot date")
    return write_labels_and_features(spark, settings, snapshots)


def write_labels_and_features(spark: SparkSession, settings: Settings, snapshots: Sequence[dt.date]) -> dict[str, Any]:
    """Labels and features for `snapshots` (any dates, e.g. a scoring date between monthly snapshots).

    Cost: the activity input is scanned once; the small inputs and the labels are computed once
    and cached for the run; each table is written once; the summary comes from the Parquet
    footers of the files the features commit added.
    """
    snapshots = sorted(set(snapshots))
    lake = Lakehouse.from_settings(settings)
    with progress.stage("features", "inputs read") as step:
        loaded = load_inputs(spark, settings, snapshots)
        data_end = resolve_data_end(settings, loaded.events)
        resolved = resolve_event_types(settings, loaded.events, snapshots, loaded.raw_event_types)
        event_types = resolved.types
        loaded = replace(loaded, events=without_new_event_types(loaded.events, resolved))
        step.done(f"inputs read: {len(snapshots)} snapshots {snapshots[0]}..{snapshots[-1]}, data_end {data_end}, "
                  f"event types {event_types} ({resolved.source})"
                  + (f", ignored new event types {resolved.new}" if resolved.new else ""))
    if resolved.new:
        log.warning("features: event types %s are not in feature set %s (frozen at its first build): ignored "
                    "until a new features.feature_set_version is built", resolved.new,
                    settings.features.feature_set_version)
    if loaded.tickets is None:
        log.warning("features: support tickets %s", SUPPORT_DISABLED)
    if loaded.attribute_history is None:
        log.info("features: account attributes %s", ATTRIBUTES_STATIC)
    inputs = cached_inputs(loaded)
    labels = with_definition(labels_for(inputs, settings, snapshots, data_end), settings.churn,
                             data_end).persist(StorageLevel.MEMORY_AND_DISK)
    try:
        where = io.slice_predicate(within={"as_of_date": snapshots})
        with progress.stage("features", "labels written") as step:
            # merge_schema: a table written before the definition columns existed gains them (null in its
            # older slices, which training then treats as labelled with today's churn settings)
            labels_version = io.write_slice(labels, lake.churn_labels, where, ["as_of_date"],
                                            schema=schemas.CHURN_LABELS, merge_schema=True)
            per_snapshot = snapshot_stats(labels)  # from the cached labels
            step.done(f"labels written: {progress.rows(sum(s['eligible'] for s in per_snapshot))} rows, "
                      f"{progress.rows(sum(s['censored'] for s in per_snapshot))} censored")
        with progress.stage("features", f"features of {len(snapshots)} snapshots computed and written"):
            features = features_for(inputs, settings, snapshots, labels, resolved.members)
            io.assert_schema(features, schemas.FEATURE_KEYS, "gold.churn_features", allow_extra=True)
            features_version = io.write_slice(features, lake.churn_features, where, ["as_of_date"],
                                              properties=io.KEY_STATS_ONLY, merge_schema=True)
            record_event_types(spark, settings, resolved)
    finally:
        release(labels, inputs.accounts, inputs.subscriptions, inputs.tickets, inputs.attribute_history)
    names = [c for c in features.columns if c not in FEATURE_KEY_COLUMNS]
    rejected = io.reject_counts(loaded.rejected) if loaded.rejected is not None else {}
    stats = written_stats(spark, lake.churn_features, features_version, names)
    for s in per_snapshot:
        s["feature_rows"] = stats["rows"].get(s["as_of_date"], 0)
    return {
        "snapshots": len(snapshots), "from": snapshots[0].isoformat(), "to": snapshots[-1].isoformat(),
        "data_end": data_end.isoformat(),
        "label_definition": {"fingerprint": fingerprint(label_definition(settings.churn)),
                             "definition": label_definition(settings.churn)},
        "event_types": event_types, "event_types_source": resolved.source,
        "new_event_types": resolved.new, "event_type_folds": resolved.folds,
        "event_types_ranked_over": resolved.ranked_over,
        "feature_set_version": settings.features.feature_set_version, "features": len(names),
        "config_fingerprint": feature_config_fingerprint(settings, event_types, inputs.tickets is not None),
        "support": "enabled" if inputs.tickets is not None else SUPPORT_DISABLED,
        "silver": loaded.silver,
        "account_references": loaded.account_references,
        "label_rows": sum(s["eligible"] for s in per_snapshot),
        "censored_rows": sum(s["censored"] for s in per_snapshot),
        "per_snapshot": per_snapshot,
        "null_rate": stats["null_rate"],
        "attributes": attributes_summary(settings, rejected),
        "rejected": rejected,
        "labels_version": labels_version,
        "features_version": features_version,
    }


def summary_table(result: dict[str, Any]) -> str:
    """The run summary as a short text table: one line per snapshot, then the features most often null."""
    lines = [f"{'as_of_date':<12}{'eligible':>10}{'churned':>9}{'censored':>10}{'label_rate':>12}"]
    for s in result.get("per_snapshot", []):
        rate = "-" if s["label_rate"] is None else f"{s['label_rate']:.4f}"
        lines.append(f"{s['as_of_date']:<12}{s['eligible']:>10}{s['churned']:>9}{s['censored']:>10}{rate:>12}")
    nulls = sorted(((v, k) for k, v in result.get("null_rate", {}).items() if v > 0), reverse=True)[:8]
    if nulls:
        lines.append("most often null: " + ", ".join(f"{k} {v:.1%}" for v, k in nulls))
    return "\n".join(lines)
