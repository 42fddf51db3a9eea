"""Table I/O in one place: read inputs into their contract, write Delta slices idempotently.

Reading never drops a row silently: rows that break the contract come back in a `rejected`
DataFrame with a reason, and the job reports their counts. Writing replaces exactly the slice a
run owns (`replaceWhere`) or merges by key, so a retried job leaves the same table.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote

from delta.tables import DeltaTable
from pyspark.sql import Column, DataFrame, SparkSession, Window
from pyspark.sql import functions as F
from pyspark.sql.types import (
    ArrayType,
    DataType,
    DateType,
    MapType,
    StringType,
    StructField,
    StructType,
    TimestampNTZType,
    TimestampType,
)
from pyspark.sql.utils import AnalysisException

from churn_spark import ids, schemas
from churn_spark.config import IdCase, Settings, TableSource
from churn_spark.errors import ContractError
from churn_spark.lakehouse import Lakehouse
from churn_spark.thresholds import sql_string

REJECT_SCHEMA = StructType(
    [
        StructField("table", StringType(), False),
        StructField("reason", StringType(), False),
        StructField("record", StringType(), True),
    ]
)


@dataclass(frozen=True)
class Conformed:
    """An input split into rows that meet the contract and rows that do not (with a reason)."""

    good: DataFrame
    rejected: DataFrame
    # every input row: `__raw_<column>` (as read), the contract columns (cast), `__reason` (null: good);
    # what the data-quality report aggregates (check.py). None for checks across tables.
    staged: DataFrame | None = None


# --- schema checks ---------------------------------------------------------------------------


def schema_problems(actual: StructType, expected: StructType, allow_extra: bool = True) -> list[str]:
    """Human-readable differences: missing, mistyped and (optionally) extra columns."""
    have = {f.name: f.dataType for f in actual.fields}
    want = {f.name: f.dataType for f in expected.fields}
    problems = []
    missing = [n for n in want if n not in have]
    if missing:
        problems.append("missing columns: " + ", ".join(missing))
    mistyped = [f"{n} is {have[n].simpleString()}, expected {t.simpleString()}" for n, t in want.items()
                if n in have and have[n] != t]
    if mistyped:
        problems.append("mistyped columns: " + "; ".join(mistyped))
    extra = [n for n in have if n not in want]
    if extra and not allow_extra:
        problems.append("extra columns: " + ", ".join(extra))
    return problems


def assert_schema(df: DataFrame, expected: StructType, what: str, allow_extra: bool = False) -> DataFrame:
    """Raise a one-line ContractError naming the columns when `df` does not have the expected schema."""
    problems = schema_problems(df.schema, expected, allow_extra)
    if problems:
        raise ContractError(f"{what}: " + "; ".join(problems))
    return df


# --- reading inputs --------------------------------------------------------------------------


def read_source(spark: SparkSession, source: TableSource, lakehouse: Lakehouse) -> DataFrame:
    """Load one configured input as it is stored (no casting yet)."""
    if source.format == "catalog":
        assert source.table is not None
        return spark.table(source.table)
    reader = spark.read.format(source.format)
    if source.format == "csv":
        reader = reader.option("header", "true")
    for key, value in source.options.items():
        reader = reader.option(key, value)
    path = lakehouse.source_path(source)
    try:
        return reader.load(path)
    except AnalysisException as exc:
        raise ContractError(f"cannot read {source.format} input at {path}: {str(exc).splitlines()[0]}") from None


# --- mapping and formats (docs/contract.md, "Mapping and formats") ----------------------------

EPOCH_MICROS = {"epoch_s": 1_000_000, "epoch_ms": 1_000, "epoch_us": 1}
"""Microseconds per unit of each epoch format (config.EPOCH_FORMATS)."""
ISO_MICROS = "yyyy-MM-dd'T'HH:mm:ss.SSSSSSXXX"
"""How a parsed time is handed to `conform`: ISO-8601 with microseconds and its offset (exact round trip)."""
# ISO text whose time is followed by a zone (Z, +02:00, Europe/Paris): the value's own zone wins
_ISO_WITH_ZONE = r"\d:\d\d(:\d\d(\.\d*)?)?\s*[^\d\s.:]\S*$"


def pattern_has_zone(pattern: str) -> bool:
    """Whether a Spark datetime pattern reads a zone or offset itself (letters inside quotes are literals)."""
    return re.search(r"[VzOXxZ]", re.sub(r"'[^']*'", "", pattern)) is not None


def parsed_timestamp(text: Column, fmt: str, time_zone: str = "UTC") -> Column:
    """The UTC instant `text` spells in `fmt` (config.TimeFormat); null when blank or unparsable.

    Epoch numbers (a fraction allowed) are instants already. An `iso` or pattern time without its own
    offset is wall-clock time in `time_zone`. The session time zone is UTC (session.py), so parsing
    without a zone reads the wall clock as UTC and `to_utc_timestamp` moves it from `time_zone`.
    """
    if fmt in EPOCH_MICROS:
        micros = F.try_multiply(text.try_cast("decimal(38,6)"), F.lit(EPOCH_MICROS[fmt]))
        return F.timestamp_micros(micros.try_cast("long"))
    parsed = F.try_to_timestamp(text) if fmt == "iso" else F.try_to_timestamp(text, F.lit(fmt))
    if time_zone == "UTC" or (fmt != "iso" and pattern_has_zone(fmt)):
        return parsed
    shifted = F.to_utc_timestamp(parsed, time_zone)
    return F.when(text.rlike(_ISO_WITH_ZONE), parsed).otherwise(shifted) if fmt == "iso" else shifted


def _unparsable(text: Column, fmt: str) -> Column:
    """A value no cast reads, naming the format and keeping the source text: `conform` rejects it as
    `bad_type_<column>` instead of reading it with its default (ISO, UTC) parser."""
    return F.concat(F.lit(f"unparsable as {fmt}: "), text)


def _conformable_timestamp(column: str, dtype: DataType, fmt: str, time_zone: str) -> Column | None:
    """The expression handing timestamp `column` to `conform` (None: as it is, conform's cast reads it)."""
    value = F.col(f"`{column}`")
    if isinstance(dtype, TimestampType | DateType):  # an instant already (a date: midnight UTC)
        return None
    if isinstance(dtype, TimestampNTZType):  # wall-clock time, no text to parse
        return None if time_zone == "UTC" else F.to_utc_timestamp(value.cast("timestamp"), time_zone)
    if fmt == "iso" and time_zone == "UTC":
        return None
    text = value.cast("string")
    parsed = parsed_timestamp(text, fmt, time_zone)
    return (F.when(parsed.isNotNull(), F.date_format(parsed, ISO_MICROS))
            .when(text.isNull() | (F.trim(text) == ""), text).otherwise(_unparsable(text, fmt)))


def _conformable_date(column: str, dtype: DataType, fmt: str) -> Column | None:
    """The expression handing date `column` to `conform` (None: as it is)."""
    if fmt == "iso" or isinstance(dtype, DateType | TimestampType | TimestampNTZType):
        return None
    text = F.col(f"`{column}`").cast("string")
    parsed = F.to_date(F.try_to_timestamp(text, F.lit(fmt)))
    return (F.when(parsed.isNotNull(), parsed.cast("string"))
            .when(text.isNull() | (F.trim(text) == ""), text).otherwise(_unparsable(text, fmt)))


def with_contract_names(df: DataFrame, columns: Mapping[str, str], table: str) -> DataFrame:
    """`df` with each mapped source column under its contract name (`columns`: contract name -> source
    column). Unmapped columns pass through; a source column already named like a mapped contract column
    is dropped (the mapping says which column that is)."""
    absent = sorted({src for src in columns.values() if src not in df.columns})
    if absent:
        raise ContractError(f"{table}: mapped columns not found: {', '.join(absent)} (inputs.{table}.columns; "
                            f"found: {', '.join(df.columns)})")
    taken = {name.lower() for name in [*columns, *columns.values()]}  # Spark resolves names case-insensitively
    return df.select(*[F.col(f"`{src}`").alias(name) for name, src in columns.items()],
                     *[F.col(f"`{c}`") for c in df.columns if c.lower() not in taken])


def mapped_to_contract(df: DataFrame, source: TableSource, contract: StructType, table: str,
                       extra_columns: Iterable[str] = ()) -> DataFrame:
    """The input as `conform` expects it: columns under their contract names (`source.columns`), and
    timestamp and date columns read in their configured format and zone, as UTC.

    A time that does not parse stays non-null and uncastable, so `conform` still rejects it with
    `bad_type_<column>` (or `missing_<column>` when blank): nothing is silently nulled. With the
    defaults (no mapping, `iso`, UTC) the input is returned as it is.
    """
    known = [f.name for f in contract.fields] + list(extra_columns)
    unknown = sorted(set(source.columns) - set(known))
    if unknown:
        raise ContractError(f"{table}: inputs.{table}.columns maps unknown columns: {', '.join(unknown)} "
                            f"(contract columns and declared attributes: {', '.join(known)})")
    named = with_contract_names(df, source.columns, table) if source.columns else df
    types = {f.name: f.dataType for f in named.schema.fields}
    converted: dict[str, Column | None] = {}
    for field in contract.fields:
        if field.name in types and isinstance(field.dataType, TimestampType):
            converted[field.name] = _conformable_timestamp(field.name, types[field.name], source.timestamp_format,
                                                           source.time_zone)
        elif field.name in types and isinstance(field.dataType, DateType):
            converted[field.name] = _conformable_date(field.name, types[field.name], source.date_format)
    changed = {name: c for name, c in converted.items() if c is not None}
    return named.withColumns(changed) if changed else named


def _row_rules(table: str) -> Mapping[str, Column]:
    """Business rules beyond types: reason -> condition that marks a row bad (evaluated after casting)."""
    if table == "subscriptions":
        return {
            "end_before_start": F.col("end_date").isNotNull() & (F.col("end_date") < F.col("start_date")),
            "negative_mrr": F.col("mrr") < 0,
            "nonpositive_quantity": F.col("quantity") <= 0,
            "nonpositive_bill_period": F.col("bill_period_months") <= 0,
        }
    if table == "support_tickets":
        return {"closed_before_opened": F.col("closed_at").isNotNull() & (F.col("closed_at") < F.col("opened_at"))}
    if table == "account_attribute_history":  # [valid_from, valid_to) must hold at least one day
        return {"valid_to_not_after_valid_from": F.col("valid_to").isNotNull()
                & (F.col("valid_to") <= F.col("valid_from"))}
    if table == "interventions":  # a propensity of 0 or 1 leaves one arm impossible: no effect is estimable
        return {"unknown_arm": ~F.col("arm").isin("treatment", "control"),
                "propensity_out_of_range": (F.col("propensity") <= 0) | (F.col("propensity") >= 1),
                "negative_cost": F.col("cost") < 0}
    return {}


def first_broken_rule(rules: Sequence[tuple[str, Column]]) -> Column:
    """The name of the first rule, in order, whose condition marks the row bad; null when none does (a
    null condition does not break its rule). The reject/quarantine reason of `conform` and of ingest."""
    reason: Column = F.lit(None).cast("string")
    for name, broken in reversed(rules):
        reason = F.when(broken, F.lit(name)).otherwise(reason)
    return reason


def is_blank(c: Column) -> Column:
    """Null, or text that is empty once trimmed: what a required field may not be (inputs, events, check)."""
    return c.isNull() | (F.trim(c.cast("string")) == "")


def _reject_reason(contract: StructType, rules: Mapping[str, Column]) -> Column:
    """First broken rule of a row as `missing_<col>`, `bad_type_<col>` or a business-rule name; null if fine."""
    checks: list[tuple[str, Column]] = []
    for field in contract.fields:
        raw, cast = F.col(f"`__raw_{field.name}`"), F.col(field.name)
        blank = is_blank(raw)
        if not field.nullable:
            checks.append((f"missing_{field.name}", blank))
        checks.append((f"bad_type_{field.name}", ~blank & cast.isNull()))
    return first_broken_rule([*checks, *rules.items()])


def _require_columns(df: DataFrame, contract: StructType, table: str, extras: Sequence[str],
                     version_column: str | None) -> None:
    """One ContractError naming every missing contract column, declared attribute and version column."""
    found = f"(found: {', '.join(df.columns)})"
    missing = [f.name for f in contract.fields if f.name not in df.columns]
    problems = [f"missing columns: {', '.join(missing)}"] if missing else []
    attributes = [c for c in extras if c not in df.columns]
    if attributes:
        problems.append(f"missing attribute columns (inputs.account_attributes): {', '.join(attributes)}")
    if version_column is not None and version_column not in df.columns:
        problems.append(f"missing version column (inputs.{table}.version_column): {version_column}")
    if problems:
        raise ContractError(f"{table}: {'; '.join(problems)} {found}")


def _contract_value(field: StructField, id_case: IdCase) -> Column:
    """A contract column cast to its type; an id column (`*_id`, text) normalised so ids join across inputs."""
    if ids.is_id_column(field.name) and isinstance(field.dataType, StringType):
        return ids.normalized_id(F.col(field.name), id_case)
    return F.col(field.name).try_cast(field.dataType)


Key = str | tuple[str, ...]
"""An input's key: one column, or several (`duplicate_<a>_<b>` names a repeated combination)."""


def with_duplicates_rejected(staged: DataFrame, key: Key, order: Sequence[Column]) -> DataFrame:
    """`__reason` = `duplicate_<key>` on every valid row (null `__reason`) but the first of its key by `order`.

    Only valid rows are ranked (the window is split by validity): a copy that breaks a rule, however it
    sorts, never makes a good copy a duplicate; it keeps its own reason.
    """
    columns = (key,) if isinstance(key, str) else key
    valid = F.col("__reason").isNull()
    rank = F.row_number().over(Window.partitionBy(*[F.col(c) for c in columns], valid).orderBy(*order))
    return staged.withColumn("__reason", F.when(valid & (rank > 1), F.lit(f"duplicate_{'_'.join(columns)}"))
                             .otherwise(F.col("__reason")))


def conform(df: DataFrame, contract: StructType, table: str, key: Key | None = None,
            extra_columns: Iterable[str] = (), id_case: IdCase = "preserve",
            version_column: str | None = None) -> Conformed:
    """Cast `df` to `contract` (+ `extra_columns` as `schemas.attribute_type`: numeric and boolean
    columns as double, others as string) and split off rows that break it.

    Missing contract columns (or declared attributes, or the version column) are an error for the whole
    table; a bad value rejects one row. Id columns (`*_id`) are normalised (`ids.normalized_id`, `id_case`).
    Among valid rows, a repeated key keeps one row -- the latest by `version_column` when one is given,
    else (and among equal versions) the first by all values -- and rejects the others as `duplicate_<key>`.
    """
    extras = list(extra_columns)
    _require_columns(df, contract, table, extras, version_column)
    record = F.to_json(F.struct(*[F.col(c) for c in df.columns]))
    version = [F.col(version_column).alias("__version")] if version_column is not None else []
    staged = df.select(
        *[F.col(f.name).alias(f"__raw_{f.name}") for f in contract.fields],
        *[_contract_value(f, id_case).alias(f.name) for f in contract.fields],
        *[F.col(c).cast(schemas.attribute_type(df.schema[c].dataType)).alias(c) for c in extras],
        *version, record.alias("__record"),
    ).withColumn("__reason", _reject_reason(contract, _row_rules(table)))
    if key is not None:
        orderable = [f.name for f in contract.fields if not isinstance(f.dataType, MapType | ArrayType)] + extras
        latest = [F.col("__version").desc_nulls_last()] if version_column is not None else []
        # then all values (maps cannot be ordered), then the whole record: a deterministic choice
        order = [*latest, *[F.col(c).asc_nulls_last() for c in orderable], F.col("__record")]
        staged = with_duplicates_rejected(staged, key, order)
    columns = [f.name for f in contract.fields] + extras
    good = staged.where(F.col("__reason").isNull()).select(*columns)
    rejected = staged.where(F.col("__reason").isNotNull()).select(
        F.lit(table).alias("table"), F.col("__reason").alias("reason"), F.col("__record").alias("record")
    )
    return Conformed(good, rejected, staged)


INPUT_CONTRACTS: dict[str, tuple[StructType, str]] = {
    "accounts": (schemas.ACCOUNTS, "account_id"),
    "subscriptions": (schemas.SUBSCRIPTIONS, "subscription_id"),
    "support_tickets": (schemas.SUPPORT_TICKETS, "ticket_id"),
    "churn_truth": (schemas.CHURN_TRUTH, None),  # type: ignore[dict-item]
    "account_attribute_history": (schemas.ACCOUNT_ATTRIBUTE_HISTORY, None),  # type: ignore[dict-item]
    # an account assigned twice in one campaign: which arm holds is unknown to the analysis, one copy is kept
    "interventions": (schemas.INTERVENTIONS, ("campaign_id", "account_id")),  # type: ignore[dict-item]
}
OPTIONAL_COLUMNS: dict[str, tuple[str, ...]] = {"interventions": ("channel", "cost", "delivered")}
"""Nullable contract columns a source may lack: read as null (`with_optional_columns`)."""
WITH_ATTRIBUTES = ("accounts", "account_attribute_history")
"""Inputs that carry the declared attribute columns (`inputs.account_attributes`)."""


def read_input(spark: SparkSession, settings: Settings, table: str) -> Conformed | None:
    """Read a raw input table into its contract; None when the table is configured as absent (not
    enabled, or an optional input left unset)."""
    source: TableSource | None = getattr(settings.inputs, table)
    if source is None or not source.enabled:
        return None
    contract, key = INPUT_CONTRACTS[table]
    extras = settings.inputs.account_attributes if table in WITH_ATTRIBUTES else []
    raw = mapped_to_contract(read_source(spark, source, Lakehouse.from_settings(settings)), source, contract, table,
                             extras).transform(lambda df: with_optional_columns(df, contract, table))
    return conform(raw, contract, table, key=key, extra_columns=extras, id_case=settings.inputs.id_case,
                   version_column=source.version_column)


def with_optional_columns(df: DataFrame, contract: StructType, table: str) -> DataFrame:
    """`df` with each of the table's `OPTIONAL_COLUMNS` it lacks added as a typed null (a log without costs)."""
    absent = [f for f in contract.fields if f.name in OPTIONAL_COLUMNS.get(table, ()) and f.name not in df.columns]
    return df.withColumns({f.name: F.lit(None).cast(f.dataType) for f in absent}) if absent else df


def reject_unknown_accounts(conformed: Conformed, accounts: DataFrame, table: str) -> Conformed:
    """The good rows whose `account_id` is not among the good `accounts` rows, moved to `rejected` as
    `unknown_account_id` (the record: their conformed values).

    Such a row can never reach a gold table (labels and features start from the accounts), so it is
    counted with its reason instead of vanishing in a join. Grain: the input's.
    """
    columns = conformed.good.columns
    known = accounts.select("account_id", F.lit(True).alias("__known")).dropDuplicates(["account_id"])
    joined = conformed.good.join(known, "account_id", "left")
    orphans = joined.where(F.col("__known").isNull()).select(
        F.lit(table).alias("table"), F.lit("unknown_account_id").alias("reason"),
        F.to_json(F.struct(*[F.col(c) for c in columns])).alias("record"))
    good = joined.where(F.col("__known").isNotNull()).select(*columns)
    return Conformed(good, conformed.rejected.unionByName(orphans), conformed.staged)


def check_attribute_history(history: Conformed, accounts: DataFrame) -> Conformed:
    """The rules of `account_attribute_history` that need other rows, applied to the rows `conform` kept.

    In order: `unknown_account_id` (the account is not among the good `accounts` rows), then
    `overlapping_interval` (the row's `[valid_from, valid_to)` shares a day with another row of the same
    account; every row of an overlapping pair is rejected: which value held is unknown). Adjacent
    intervals (`valid_to` of one = `valid_from` of the next) do not overlap. Rejected rows carry the
    conformed values as their record. Grain: the history's (one row per account and interval).
    """
    columns = history.good.columns
    known = accounts.select("account_id", F.lit(True).alias("__known")).dropDuplicates(["account_id"])
    order = Window.partitionBy("account_id").orderBy(F.col("valid_from"), F.col("valid_to").asc_nulls_last())
    end = F.coalesce(F.col("valid_to"), F.lit(dt.date.max))
    earlier_end = F.max(end).over(order.rowsBetween(Window.unboundedPreceding, -1))
    next_start = F.lead("valid_from").over(order)
    overlaps = F.coalesce(earlier_end > F.col("valid_from"), F.lit(False)) | F.coalesce(next_start < end, F.lit(False))
    joined = history.good.join(known, "account_id", "left")
    unknown = joined.where(F.col("__known").isNull()).withColumn("__reason", F.lit("unknown_account_id"))
    checked = joined.where(F.col("__known").isNotNull()).withColumn(
        "__reason", F.when(overlaps, F.lit("overlapping_interval")))
    staged = unknown.unionByName(checked)
    rejected = staged.where(F.col("__reason").isNotNull()).select(
        F.lit("account_attribute_history").alias("table"), F.col("__reason").alias("reason"),
        F.to_json(F.struct(*[F.col(c) for c in columns])).alias("record"))
    return Conformed(staged.where(F.col("__reason").isNull()).select(*columns), history.rejected.unionByName(rejected))


def reject_counts(rejected: DataFrame) -> dict[str, dict[str, int]]:
    """{table: {reason: count}} -- a small aggregate, safe to collect."""
    out: dict[str, dict[str, int]] = {}
    for row in rejected.groupBy("table", "reason").count().collect():
        out.setdefault(row["table"], {})[row["reason"]] = int(row["count"])
    return out


# --- writing Delta ---------------------------------------------------------------------------


def _sql_literal(value: object) -> str:
    """A SQL literal of a slice value (a date, a string, a number), quoted the one way Spark's parser reads back."""
    if isinstance(value, dt.date | dt.datetime):
        return sql_string(value.isoformat())
    if isinstance(value, str):
        return sql_string(value)
    return str(value)


def slice_predicate(
    equals: Mapping[str, object] | None = None, within: Mapping[str, Iterable[object]] | None = None
) -> str:
    """A `replaceWhere` predicate: `a = x AND b IN (y, z)`; values are quoted as SQL literals."""
    parts = [f"`{c}` = {_sql_literal(v)}" for c, v in (equals or {}).items()]
    for col, values in (within or {}).items():
        vals = sorted({_sql_literal(v) for v in values})
        if not vals:
            raise ValueError(f"empty slice for {col}")
        parts.append(f"`{col}` IN ({', '.join(vals)})")
    if not parts:
        raise ValueError("a slice needs at least one condition")
    return " AND ".join(parts)


def table_exists(spark: SparkSession, path: str) -> bool:
    return DeltaTable.isDeltaTable(spark, path)


def write_slice(df: DataFrame, path: str, predicate: str, partition_by: list[str],
                schema: StructType | None = None, properties: Mapping[str, str] | None = None,
                merge_schema: bool = False, commit_metadata: str | None = None) -> int:
    """Atomically replace exactly the rows matching `predicate` (others are an error); returns the commit version.

    Rows are rebalanced by the partition columns first (AQE sizes the files): otherwise every task
    writes a small file into every partition it holds rows for (tasks x snapshots files, each
    paying a Parquet writer per column). `properties` (`delta.*` table properties) are set when the
    table is created, and on an existing table that lacks them. The version returned is the table's
    latest right after the write: each table has one writing job. `merge_schema` lets a write add
    columns (a table written before a column existed keeps null in its older slices). `commit_metadata`
    is stored in the write's own commit (`userMetadata` in the history): state that must change
    atomically with the data (silver's synced bronze version).
    """
    if schema is not None:
        assert_schema(df, schema, f"write to {path}", allow_extra=False)
    spark = df.sparkSession
    if properties and table_exists(spark, path):
        ensure_table_properties(spark, path, properties)
    writer = df.hint("rebalance", *partition_by).write.format("delta").mode("overwrite")
    for key, value in (properties or {}).items():
        writer = writer.option(key, value)
    if merge_schema:
        writer = writer.option("mergeSchema", "true")
    if commit_metadata is not None:
        writer = writer.option("userMetadata", commit_metadata)
    writer.option("replaceWhere", predicate).partitionBy(*partition_by).save(path)
    version = table_version(spark, path)
    assert version is not None
    return version


def table_properties(spark: SparkSession, path: str) -> dict[str, str]:
    """The Delta table properties of the table at `path` ({} when there is no table)."""
    if not table_exists(spark, path):
        return {}
    current = DeltaTable.forPath(spark, path).detail().first()
    return dict(current["properties"] or {}) if current else {}


def ensure_table_properties(spark: SparkSession, path: str, properties: Mapping[str, str]) -> None:
    """Set Delta table properties the table lacks (one metadata commit, only when something differs)."""
    have = table_properties(spark, path)
    missing = {k: v for k, v in properties.items() if have.get(k) != v}
    if missing:
        assignments = ", ".join(f"{_sql_literal(k)} = {_sql_literal(v)}" for k, v in missing.items())
        spark.sql(f"ALTER TABLE delta.`{path}` SET TBLPROPERTIES ({assignments})")


# Delta's per-file statistics (min, max, null count per column, evaluated row by row while writing)
# only on the key readers look accounts up by. On all 240 feature columns they cost ~40 % of the
# features write; the run summary's null counts come from the Parquet footers instead (written_counts).
KEY_STATS_ONLY = {"delta.dataSkippingStatsColumns": "account_id"}
_ADD_PATH = "struct<add: struct<path: string>>"
_V1_SOURCES = "spark.sql.sources.useV1SourceList"
_AGGREGATE_PUSHDOWN = "spark.sql.parquet.aggregatePushdown"


def commit_data_files(spark: SparkSession, path: str, version: int) -> list[str]:
    """Absolute paths of the data files commit `version` added (from its `_delta_log` JSON; one row per file)."""
    root = path.rstrip("/")
    commit = f"{root}/_delta_log/{version:020d}.json"
    added = spark.read.text(commit).select(F.from_json("value", _ADD_PATH)["add"]["path"].alias("p")) \
        .where(F.col("p").isNotNull()).collect()
    relative = [unquote(r["p"]) for r in added]  # Delta stores paths URL-encoded, relative to the table
    return [p if "://" in p or p.startswith("/") else f"{root}/{p}" for p in relative]


_FILE_ACTIONS = ("struct<add: struct<partitionValues: map<string, string>, dataChange: boolean>, "
                 "remove: struct<partitionValues: map<string, string>, dataChange: boolean>>")


def changed_partition_values(spark: SparkSession, path: str, first: int, last: int, column: str) -> list[str] | None:
    """Distinct values of partition `column` of the files commits `first..last` added or removed with
    `dataChange` (rewrites that keep the rows, e.g. OPTIMIZE, are skipped), sorted, as Delta's text.

    Read from those commits' `_delta_log` JSON only (one row per file action, never the data). None
    when that cannot tell: a commit's JSON is gone (log cleanup) or a changed file has no value for
    `column`. The result is one row per distinct value: small.
    """
    root = path.rstrip("/")
    commits = [f"{root}/_delta_log/{v:020d}.json" for v in range(first, last + 1)]
    if not commits:
        return []
    try:
        text = spark.read.text(commits)
    except AnalysisException as exc:
        if "PATH_NOT_FOUND" in str(exc):
            return None
        raise
    actions = F.from_json("value", _FILE_ACTIONS)
    files = text.select(F.explode(F.array(actions["add"], actions["remove"])).alias("f"))
    value = F.col("f.partitionValues")[column]
    row = files.where(F.col("f").isNotNull() & F.coalesce(F.col("f.dataChange"), F.lit(True))) \
        .agg(F.sort_array(F.collect_set(value)).alias("values"), F.count_if(value.isNull()).alias("unknown")).first()
    if row is None or row["unknown"]:
        return None
    return list(row["values"])


def commit_history(spark: SparkSession, path: str) -> list[dict[str, Any]]:
    """`version`, `operation`, `userMetadata`, `operationMetrics` of the commits still in the table's log,
    newest first (one small dict per commit)."""
    history = DeltaTable.forPath(spark, path).history()
    return [r.asDict() for r in history.select("version", "operation", "userMetadata", "operationMetrics")
            .orderBy(F.desc("version")).collect()]


def table_id(spark: SparkSession, path: str) -> str:
    """The Delta table's id (its `metaData.id`): a table deleted and recreated at the same path gets a new one."""
    row = DeltaTable.forPath(spark, path).detail().select("id").first()
    return str(row["id"]) if row else ""


def read_version(spark: SparkSession, path: str, version: int) -> DataFrame:
    """The Delta table at `path` as of commit `version` (time travel): a fixed input while writers append."""
    return spark.read.format("delta").option("versionAsOf", version).load(path)


@contextmanager
def _footer_aggregates(spark: SparkSession) -> Iterator[None]:
    """Parquet read through the V2 source with aggregate push-down for the block: COUNT answered from footers."""
    before = {key: str(spark.conf.get(key)) for key in (_V1_SOURCES, _AGGREGATE_PUSHDOWN)}
    v1 = ",".join(s for s in before[_V1_SOURCES].split(",") if s.strip().lower() != "parquet")
    spark.conf.set(_V1_SOURCES, v1)
    spark.conf.set(_AGGREGATE_PUSHDOWN, "true")
    try:
        yield
    finally:
        for key, value in before.items():
            spark.conf.set(key, value)


def written_counts(spark: SparkSession, path: str, version: int, group_by: Sequence[str]) -> list[dict[str, Any]]:
    """Per value of the partition columns `group_by` in what commit `version` added: `__rows`, and per
    column its number of non-null values.

    Grain: one dict per partition value (small). Answered from the row counts and null counts every
    Parquet footer holds (aggregate push-down), so a summary of what a job wrote needs neither a
    second read of the data nor Delta statistics on every column. Partition values come back as
    text (`2024-01-01`).
    """
    files = commit_data_files(spark, path, version)
    if not files:
        return []
    with _footer_aggregates(spark):
        data = spark.read.option("basePath", path).parquet(*files)
        columns = [c for c in data.columns if c not in group_by]
        counts = [F.count("*").alias("__rows"), *[F.count(F.col(c)).alias(c) for c in columns]]
        rows = data.groupBy(*group_by).agg(*counts).collect()
    return [{**{k: str(r[k]) for k in group_by}, **{c: int(r[c]) for c in ["__rows", *columns]}} for r in rows]


def read_slice(spark: SparkSession, path: str, predicate: str) -> DataFrame:
    """The rows of a slice as committed (what readers see), e.g. right after `write_slice`."""
    return spark.read.format("delta").load(path).where(predicate)


def overwrite_table(df: DataFrame, path: str, partition_by: list[str] | None = None,
                    schema: StructType | None = None) -> None:
    """Replace a whole table that one job owns entirely (e.g. the generator's raw tables)."""
    if schema is not None:
        assert_schema(df, schema, f"write to {path}", allow_extra=True)
    writer = df.write.format("delta").mode("overwrite").option("overwriteSchema", "true")
    if partition_by:
        writer = writer.partitionBy(*partition_by)
    writer.save(path)


def merge_by_key(spark: SparkSession, df: DataFrame, path: str, keys: list[str],
                 partition_by: list[str] | None = None, update: bool = True) -> None:
    """Upsert `df` into the Delta table at `path` on `keys` (insert-only when `update` is False)."""
    if not table_exists(spark, path):
        writer = df.write.format("delta").mode("append")
        if partition_by:
            writer = writer.partitionBy(*partition_by)
        writer.save(path)
        return
    cond = " AND ".join(f"t.`{k}` = s.`{k}`" for k in keys)
    merge = DeltaTable.forPath(spark, path).alias("t").merge(df.alias("s"), cond)
    if update:
        merge = merge.whenMatchedUpdateAll()
    merge.whenNotMatchedInsertAll().execute()


def table_version(spark: SparkSession, path: str) -> int | None:
    """Latest Delta version of the table at `path` (None if absent): recorded as lineage."""
    if not table_exists(spark, path):
        return None
    row = DeltaTable.forPath(spark, path).history(1).select("version").first()
    return int(row["version"]) if row else None
