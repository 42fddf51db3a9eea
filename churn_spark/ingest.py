"""Event stream ingestion: Kafka or a landing folder of JSON lines into `bronze.events`, exactly once;
a backfill of Parquet/CSV/JSON-lines files or a catalog table goes through the same checks and writer.

Grain: one row per distinct `event_id` in bronze; one row per rejected input record in quarantine.

How exactly-once holds (docs/architecture.md, "Ingest"):

* The source position lives in a checkpoint per source (offsets for Kafka, seen files for the landing
  folder), so a restarted query re-reads exactly the micro-batch that was in flight.
* Every micro-batch is written by `foreachBatch` as an insert-only MERGE into bronze on `event_id`:
  a duplicate within the batch, from an earlier batch, or from a replayed batch after a crash
  matches an existing row and is absorbed. No streaming state is kept for this, so nothing depends
  on a watermark: a duplicate arriving months later is still caught by the table.
* Quarantine rows have no key (two identical bad lines are two records), so the quarantine append
  is made idempotent with Delta's `txnAppId`/`txnVersion` = (query id, batch id): a replayed batch
  is skipped by Delta instead of written twice.

Records are read as text (landing) or bytes (Kafka) so the raw record is kept for quarantine; they
are parsed with `try_parse_json` into a VARIANT, which never fails and tolerates extra fields.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import logging
import os
import re
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from delta.tables import DeltaTable
from pyspark.sql import Column, DataFrame, SparkSession, Window
from pyspark.sql import functions as F
from pyspark.sql.streaming import StreamingQuery
from pyspark.sql.types import StringType, StructType
from pyspark.sql.utils import AnalysisException

from churn_spark import ids, progress, schemas
from churn_spark.config import IdCase, IngestSettings, Settings
from churn_spark.errors import ContractError
from churn_spark.io import ISO_MICROS, assert_schema, first_broken_rule, is_blank, parsed_timestamp, table_version
from churn_spark.lakehouse import Lakehouse

log = logging.getLogger("churn_spark")

EVENT_COLUMNS = [f.name for f in schemas.EVENTS.fields]
BRONZE_COLUMNS = [f.name for f in schemas.BRONZE_EVENTS.fields]
QUARANTINE_COLUMNS = [f.name for f in schemas.EVENTS_QUARANTINE.fields]

REASONS = (
    "oversized_record", "empty_record", "invalid_json", "missing_event_id", "missing_account_id",
    "missing_event_type", "bad_timestamp", "future_timestamp", "too_old_timestamp", "bad_value_type",
    "bad_properties_type", "unknown_event_type",
)
"""Quarantine reason codes, in the order they are checked (a record gets the first that applies)."""

_NUMERIC_VARIANT = r"^(TINYINT|SMALLINT|INT|BIGINT|FLOAT|DOUBLE|DECIMAL.*)$"


# --- sources: raw records with their position ----------------------------------------------


def kafka_records(spark: SparkSession, settings: IngestSettings) -> DataFrame:
    """Streaming (raw, source, _pos_*) from the configured Kafka topic; the value bytes as UTF-8 text."""
    k = settings.kafka
    reader = (
        spark.readStream.format("kafka")
        .option("kafka.bootstrap.servers", k.bootstrap_servers)
        .option("subscribe", k.topic)
        .option("startingOffsets", k.starting_offsets)
    )
    if k.max_offsets_per_trigger:
        reader = reader.option("maxOffsetsPerTrigger", str(k.max_offsets_per_trigger))
    for key, value in k.options.items():
        reader = reader.option(key, value)
    return reader.load().select(
        F.col("value").cast("string").alias("raw"),
        F.format_string("kafka:%s/%d/%d", "topic", "partition", "offset").alias("source"),
        F.format_string("%010d", "partition").alias("_pos_a"),
        F.col("offset").alias("_pos_b"),
    )


def landing_records(spark: SparkSession, settings: IngestSettings, path: str) -> DataFrame:
    """Streaming (raw, source, _pos_*) from JSON-lines files: one record per line, source = the file."""
    reader = spark.readStream.format("text").option("recursiveFileLookup", "true")
    if settings.max_files_per_trigger:
        reader = reader.option("maxFilesPerTrigger", str(settings.max_files_per_trigger))
    return reader.load(path).select(
        F.col("value").alias("raw"),
        F.col("_metadata.file_path").alias("source"),
        F.col("_metadata.file_path").alias("_pos_a"),
        F.lit(0).cast("long").alias("_pos_b"),
    )


BACKFILL_SOURCES = ("files", "table")
"""Sources drained once (availableNow), each location with its own checkpoint."""


def row_records(rows: DataFrame, json_text: Sequence[str] = ()) -> Column:
    """Each row of a Parquet, CSV or table source as one JSON object (its column names as fields, times
    as ISO-8601 with microseconds): the same record a JSON line is, for the same parser and checks.

    Text columns named in `json_text` hold JSON (a CSV cell can only hold text: `1.5`, `{"plan":"pro"}`)
    and enter the record as the value they spell; text that is not JSON enters as a string (so a bad
    `value` is still `bad_value_type`).
    """
    cells = [F.coalesce(F.try_parse_json(F.col(f"`{f.name}`")), F.col(f"`{f.name}`").cast("variant")).alias(f.name)
             if f.name in json_text and isinstance(f.dataType, StringType) else F.col(f"`{f.name}`")
             for f in rows.schema.fields]
    return F.to_json(F.struct(*cells), {"timestampFormat": ISO_MICROS,
                                        "timestampNTZFormat": "yyyy-MM-dd'T'HH:mm:ss.SSSSSS"})


def _backfill_schema(spark: SparkSession, fmt: str, options: dict[str, str], path: str) -> StructType:
    """The schema of the backfill files (a file stream needs one): Parquet's footers, a CSV's header
    (every column text unless `inferSchema`)."""
    try:
        return spark.read.format(fmt).options(**options).load(path).schema
    except AnalysisException as exc:
        raise ContractError(f"cannot read {fmt} backfill at {path}: {str(exc).splitlines()[0]}") from None


def file_records(spark: SparkSession, settings: IngestSettings, path: str) -> DataFrame:
    """Streaming (raw, source, _pos_*) from backfill files: JSON lines as the landing folder, each Parquet
    or CSV row as one JSON record (`row_records`; a CSV's `value` and `properties` cells read as JSON)."""
    b = settings.backfill
    if b.format == "json":
        return landing_records(spark, settings, path)
    options = {"header": "true", **b.options} if b.format == "csv" else dict(b.options)
    schema = _backfill_schema(spark, b.format, options, path)
    reader = spark.readStream.format(b.format).schema(schema).options(**options)
    if settings.max_files_per_trigger:
        reader = reader.option("maxFilesPerTrigger", str(settings.max_files_per_trigger))
    rows = reader.load(path)
    json_text = [settings.fields.get(n, n) for n in ("value", "properties")] if b.format == "csv" else []
    return rows.select(
        row_records(rows, json_text).alias("raw"),
        F.col("_metadata.file_path").alias("source"),
        F.col("_metadata.file_path").alias("_pos_a"),
        F.lit(0).cast("long").alias("_pos_b"),
    )


def table_records(spark: SparkSession, settings: IngestSettings) -> DataFrame:
    """Streaming (raw, source, _pos_*) from a catalog table (a Delta table streams its commits), one JSON
    record per row (`row_records`); source = `table:<name>`."""
    b = settings.backfill
    assert b.table is not None
    rows = spark.readStream.options(**b.options).table(b.table)
    return rows.select(
        row_records(rows).alias("raw"),
        F.lit(f"table:{b.table}").alias("source"),
        F.lit("").alias("_pos_a"),
        F.lit(0).cast("long").alias("_pos_b"),
    )


# --- parsing and validation (pure) ---------------------------------------------------------


def field_path(name: str, settings: IngestSettings | None = None) -> str:
    """The VARIANT path of contract field `name` in a record: `ingest.fields` maps it to the record's
    field (a top-level name, or a path starting with `$`); unmapped, the field has its contract name."""
    mapped = {str(k): v for k, v in settings.fields.items()} if settings else {}
    field = mapped.get(name) or name
    if field.startswith("$"):
        return field
    return f"$.{field}" if re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", field) else f"$['{field}']"


def _field(doc: Column, path: str, type_: str) -> Column:
    return F.try_variant_get(doc, path, type_)


def with_parsed_event(records: DataFrame, settings: IngestSettings | None = None,
                      id_case: IdCase = "preserve") -> DataFrame:
    """Adds the contract columns parsed from `raw` (null where absent or unparsable) plus helpers.

    Fields are read where `settings.fields` maps them, `event_time` in `event_time_format` and
    `time_zone` (to UTC); no settings: the contract's names, ISO-8601, UTC. `account_id` is normalised as
    every input's (`inputs.id_case`), so events join accounts whatever the export wrote. `_doc` is the VARIANT of the
    record (null when `raw` is not JSON); `_value_type` and `_properties_present` let the checks tell a
    wrong type from an absent field.
    """
    doc = F.col("_doc")
    path = {name: field_path(name, settings) for name in EVENT_COLUMNS}
    time_format, time_zone = (settings.event_time_format, settings.time_zone) if settings else ("iso", "UTC")
    raw_value = F.try_variant_get(doc, path["value"], "variant")
    raw_props = F.try_variant_get(doc, path["properties"], "variant")
    return (
        records.withColumn("_doc", F.try_parse_json("raw"))
        .withColumn("event_id", _field(doc, path["event_id"], "string"))
        .withColumn("account_id", ids.normalized_id(_field(doc, path["account_id"], "string"), id_case))
        .withColumn("event_type", _field(doc, path["event_type"], "string"))
        .withColumn("_event_time_raw", _field(doc, path["event_time"], "string"))
        .withColumn("event_time", parsed_timestamp(F.col("_event_time_raw"), time_format, time_zone))
        .withColumn("_value_type", F.schema_of_variant(raw_value))
        .withColumn("value", _field(doc, path["value"], "double"))
        .withColumn("_properties_present", raw_props.isNotNull() & ~F.is_variant_null(raw_props))
        .withColumn("properties", _field(doc, path["properties"], "map<string,string>"))
    )


def with_derived_event_id(parsed: DataFrame) -> DataFrame:
    """`event_id`, where absent or blank, derived from the event itself: sha2-256 of its account, type,
    time (UTC microseconds), value and properties (sorted by key). A re-delivered copy of the same event
    gets the same id, so bronze's MERGE absorbs it; two events equal in all of these are one event.
    Needs the columns of `with_parsed_event`."""
    props = F.col("properties")  # a map keeps the record's key order: sorted, the id ignores it
    content = F.struct(
        F.col("account_id").alias("a"), F.col("event_type").alias("t"), F.unix_micros("event_time").alias("us"),
        F.col("value").alias("v"), F.array_sort(F.map_entries(props)).alias("p"),
    )
    derived = F.sha2(F.to_json(content), 256)
    return parsed.withColumn("event_id", F.when(is_blank(F.col("event_id")), derived).otherwise(F.col("event_id")))


def reject_reason(settings: IngestSettings) -> Column:
    """The first reason (REASONS order) a parsed record breaks the events contract; null when it is good.

    Time bounds: `event_time` may not be after `ingested_at` + `max_future_seconds`, nor before
    `min_event_time` (UTC).
    """
    min_time = F.lit(settings.min_event_time.replace(tzinfo=None).isoformat(sep=" ")).cast("timestamp")
    max_time = F.col("ingested_at") + F.make_interval(secs=F.lit(settings.max_future_seconds))
    is_object = F.col("_doc").isNotNull() & F.ltrim(F.col("raw")).startswith("{")
    value_type = F.col("_value_type")
    checks: list[tuple[str, Column]] = [
        ("oversized_record", F.octet_length("raw") > settings.max_record_bytes),
        ("empty_record", is_blank(F.col("raw"))),
        ("invalid_json", ~is_object),
        ("missing_event_id", is_blank(F.col("event_id"))),
        ("missing_account_id", is_blank(F.col("account_id"))),
        ("missing_event_type", is_blank(F.col("event_type"))),
        ("bad_timestamp", F.col("event_time").isNull()),
        ("future_timestamp", F.col("event_time") > max_time),
        ("too_old_timestamp", F.col("event_time") < min_time),
        ("bad_value_type", value_type.isNotNull() & (value_type != "VOID") & ~value_type.rlike(_NUMERIC_VARIANT)),
        ("bad_properties_type", F.col("_properties_present") & F.col("properties").isNull()),
    ]
    if settings.allowed_event_types is not None:
        checks.append(("unknown_event_type", ~F.col("event_type").isin(*settings.allowed_event_types)))
    return first_broken_rule(checks)


def validated_events(records: DataFrame, settings: IngestSettings, id_case: IdCase = "preserve") -> DataFrame:
    """(raw, source, ingested_at, _pos_*) -> the same + parsed contract columns + `reason` (null = good).

    With `missing_event_id: derive`, a record without an id gets one from its content (`with_derived_event_id`).
    """
    parsed = records.transform(lambda df: with_parsed_event(df, settings, id_case))
    if settings.missing_event_id == "derive":
        parsed = parsed.transform(with_derived_event_id)
    return (
        parsed
        .withColumn("reason", reject_reason(settings))
        .select(*records.columns, *EVENT_COLUMNS, "reason")
    )


def bronze_rows(validated: DataFrame) -> DataFrame:
    """Good records in the bronze schema, one per `event_id` (the first by source position)."""
    first = Window.partitionBy("event_id").orderBy("_pos_a", "_pos_b", "raw")
    return (
        validated.where(F.col("reason").isNull())
        .withColumn("_rank", F.row_number().over(first))
        .where(F.col("_rank") == 1)
        .withColumn("event_date", F.to_date("event_time"))
        .select(*BRONZE_COLUMNS)
    )


def quarantine_rows(validated: DataFrame) -> DataFrame:
    """Every rejected record, raw and with its reason, in the quarantine schema."""
    return (
        validated.where(F.col("reason").isNotNull())
        .withColumn("ingest_date", F.to_date("ingested_at"))
        .select(*QUARANTINE_COLUMNS)
    )


# --- exactly-once sink ---------------------------------------------------------------------


def ensure_tables(spark: SparkSession, lake: Lakehouse) -> None:
    """Create the (empty, partitioned) bronze and quarantine tables once, before the first batch."""
    for path, schema, part in (
        (lake.bronze_events, schemas.BRONZE_EVENTS, "event_date"),
        (lake.bronze_events_quarantine, schemas.EVENTS_QUARANTINE, "ingest_date"),
    ):
        DeltaTable.createIfNotExists(spark).location(path).addColumns(schema).partitionedBy(part).execute()


def _hadoop_fs(spark: SparkSession, path: str) -> tuple[Any, Any]:
    jvm: Any = spark.sparkContext._jvm
    hpath = jvm.org.apache.hadoop.fs.Path(path)
    return hpath.getFileSystem(spark.sparkContext._jsc.hadoopConfiguration()), hpath


def _first_lines(spark: SparkSession, fs: Any, path: Any, n: int) -> list[str]:
    """The first `n` lines of a checkpoint file, through Hadoop so any filesystem works (one call per line)."""
    jvm: Any = spark.sparkContext._jvm
    stream = fs.open(path)
    try:
        reader = jvm.java.io.BufferedReader(jvm.java.io.InputStreamReader(stream, "UTF-8"))
        lines = (reader.readLine() for _ in range(n))
        return [str(line) for line in lines if line is not None]
    finally:
        stream.close()


def _query_id(spark: SparkSession, checkpoint: str) -> str:
    """The stream's id from its checkpoint: stable across restarts, new for a new checkpoint."""
    fs, path = _hadoop_fs(spark, f"{checkpoint.rstrip('/')}/metadata")
    return str(json.loads(_first_lines(spark, fs, path, 1)[0])["id"])


@dataclass
class Tally:
    """Counts over the micro-batches of one run (driver side; small)."""

    batches: int = 0
    records_in: int = 0
    bronze_written: int = 0
    duplicates: int = 0
    late_arrivals: int = 0
    quarantined: dict[str, int] = field(default_factory=dict)
    max_event_time: dt.datetime | None = None
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def as_dict(self) -> dict[str, Any]:
        return {
            "batches": self.batches, "records_in": self.records_in, "bronze_written": self.bronze_written,
            "duplicates": self.duplicates, "quarantined": sum(self.quarantined.values()),
            "quarantined_by_reason": dict(sorted(self.quarantined.items())), "late_arrivals": self.late_arrivals,
        }


def _batch_counts(validated: DataFrame, late_before: dt.datetime | None) -> list[Any]:
    """Per-reason counts, the latest good event time and good events older than `late_before`."""
    late = F.col("reason").isNull() & (F.col("event_time") < F.lit(late_before)) if late_before else F.lit(False)
    return (
        validated.groupBy("reason")
        .agg(F.count(F.lit(1)).alias("n"), F.max("event_time").alias("max_time"),
             F.sum(late.cast("long")).alias("late"))
        .collect()
    )


def batch_writer(spark: SparkSession, lake: Lakehouse, settings: IngestSettings, checkpoint: str,
                 tally: Tally, id_case: IdCase = "preserve") -> Callable[[DataFrame, int], None]:
    """The `foreachBatch` function: MERGE good rows into bronze, append rejects idempotently."""
    watermark = _interval_seconds(spark, settings.watermark)
    app: dict[str, str] = {}

    def write(batch: DataFrame, batch_id: int) -> None:
        started = time.monotonic()
        if not app:
            app["id"] = f"churn-spark-ingest-{_query_id(spark, checkpoint)}"
        validated = batch.transform(lambda df: validated_events(df, settings, id_case)).persist()
        try:
            with tally.lock:
                late_before = tally.max_event_time - dt.timedelta(seconds=watermark) if tally.max_event_time else None
            counts = _batch_counts(validated, late_before)
            if not counts:
                return
            good = assert_schema(validated.transform(bronze_rows), schemas.BRONZE_EVENTS, "bronze.events")
            bad = assert_schema(validated.transform(quarantine_rows), schemas.EVENTS_QUARANTINE,
                                "bronze.events_quarantine")
            merged = (
                DeltaTable.forPath(spark, lake.bronze_events).alias("t")
                .merge(good.alias("s"), "t.event_id = s.event_id")
                .whenNotMatchedInsertAll()
                .execute()
                .first()
            )
            inserted = int(merged["num_inserted_rows"]) if merged else 0
            (
                bad.write.format("delta").mode("append")
                .option("txnAppId", app["id"]).option("txnVersion", batch_id)
                .save(lake.bronze_events_quarantine)
            )
        finally:
            validated.unpersist()
        _add_counts(tally, counts, inserted)
        log.info("ingest: batch %d: %s records in, %s new to bronze (%s)", batch_id,
                 progress.rows(sum(int(r["n"]) for r in counts)), progress.rows(inserted),
                 progress.seconds(time.monotonic() - started))

    return write


def _add_counts(tally: Tally, counts: list[Any], inserted: int) -> None:
    with tally.lock:
        tally.batches += 1
        for row in counts:
            n = int(row["n"])
            tally.records_in += n
            if row["reason"] is None:
                tally.bronze_written += inserted
                tally.duplicates += n - inserted
                tally.late_arrivals += int(row["late"] or 0)
                if row["max_time"] is not None and (tally.max_event_time is None
                                                    or row["max_time"] > tally.max_event_time):
                    tally.max_event_time = row["max_time"]
            else:
                tally.quarantined[row["reason"]] = tally.quarantined.get(row["reason"], 0) + n


def _interval_seconds(spark: SparkSession, interval: str) -> float:
    """Seconds in a Spark interval string such as '2 days' (Spark parses it, as it would a watermark)."""
    text = interval.replace("'", "")
    row = spark.sql(f"SELECT unix_seconds(TIMESTAMP'2000-01-01' + INTERVAL '{text}') - 946684800 AS s").first()
    return float(row["s"]) if row else 0.0


# --- the job -------------------------------------------------------------------------------


def checkpoint_path(lake: Lakehouse, settings: IngestSettings) -> str:
    """One checkpoint folder per source: a Kafka checkpoint per topic, a backfill's per location
    (`files-<hash of its path>`, relative to the lakehouse when under it, so the checkpoint moves with
    the lakehouse; `table-<name>`). Re-running a backfill resumes its checkpoint: nothing is read twice."""
    if settings.source == "files":
        assert settings.backfill.path is not None
        path = lake.path(settings.backfill.path).rstrip("/")
        key = path.removeprefix(lake.root.rstrip("/") + "/")
        name = f"files-{hashlib.sha256(key.encode()).hexdigest()[:12]}"
    elif settings.source == "table":
        name = "table-" + re.sub(r"[^A-Za-z0-9_.-]", "_", settings.backfill.table or "")
    else:
        name = "landing" if settings.source == "landing" else f"kafka-{settings.kafka.topic}"
    return f"{lake.checkpoints}/ingest/{name}"


def _a_file_read_before(spark: SparkSession, checkpoint: str) -> str | None:
    """One landing file the checkpoint's file source has recorded as read (None: nothing recorded yet)."""
    fs, log_dir = _hadoop_fs(spark, f"{checkpoint.rstrip('/')}/sources/0")
    if not fs.exists(log_dir):
        return None
    for status in fs.listStatus(log_dir):
        if not status.getPath().getName().startswith("."):
            # a file-source log file: a version line ("v1"), then one JSON entry per file read
            entries = [line for line in _first_lines(spark, fs, status.getPath(), 2) if line.startswith("{")]
            if entries:
                return str(json.loads(entries[0])["path"])
    return None


def check_checkpoint_belongs_here(spark: SparkSession, checkpoint: str, landing: str) -> None:
    """Refuse a landing checkpoint that recorded these files under another path (a moved or copied lakehouse).

    Spark's file source keeps absolute paths, so from a moved checkpoint every landing file looks new:
    bronze would absorb them (MERGE), but their bad lines would be quarantined twice.
    """
    recorded = _a_file_read_before(spark, checkpoint)
    if recorded is None:
        return
    jvm: Any = spark.sparkContext._jvm
    recorded_path = str(jvm.java.net.URI(recorded).getPath())
    fs, root = _hadoop_fs(spark, landing)
    root_path = str(fs.makeQualified(root).toUri().getPath()).rstrip("/")
    if recorded_path == root_path or recorded_path.startswith(root_path + "/"):  # a backfill may be one file
        return
    name = recorded_path.rsplit("/", 1)[-1]
    files = fs.listFiles(root, True)
    while files.hasNext():
        if files.next().getPath().getName() == name:
            raise ContractError(
                f"ingest checkpoint {checkpoint} has read {recorded}, and the same file is now in {landing}: the "
                "lakehouse was moved or copied, so every landing file would be read again (docs/operations.md, "
                "runbook: 'Ingest refuses to start')")


def source_records(spark: SparkSession, settings: Settings) -> DataFrame:
    """The configured source as a stream of (raw, source, ingested_at, _pos_*)."""
    ingest, lake = settings.ingest, Lakehouse.from_settings(settings)
    if ingest.source == "kafka":
        records = kafka_records(spark, ingest)
    elif ingest.source == "table":
        records = table_records(spark, ingest)
    elif ingest.source == "files":
        assert ingest.backfill.path is not None
        path = lake.path(ingest.backfill.path)
        if lake.is_local and not os.path.exists(path.removeprefix("file:")):
            raise ContractError(f"backfill path not found: {path}")
        check_checkpoint_belongs_here(spark, checkpoint_path(lake, ingest), path)
        records = file_records(spark, ingest, path)
    else:
        path = lake.path(ingest.landing_path)
        if lake.is_local and not _local_dir_exists(path):
            raise ContractError(f"landing folder not found: {path} (run `churn-spark generate` first)")
        check_checkpoint_belongs_here(spark, checkpoint_path(lake, ingest), path)
        records = landing_records(spark, ingest, path)
    # In a stream, current_timestamp() is the micro-batch's timestamp from the offset log: a replayed
    # batch gets the same ingested_at.
    return records.withColumn("ingested_at", F.current_timestamp())


def _local_dir_exists(path: str) -> bool:
    import os

    return os.path.isdir(path.removeprefix("file:"))


@dataclass
class IngestRun:
    """A started ingest stream: the query, its counts, and where it keeps its checkpoint."""

    query: StreamingQuery
    tally: Tally
    source: str
    trigger: str
    checkpoint: str
    started: float = field(default_factory=time.monotonic)
    location: str | None = None  # a backfill's path or table

    def stop(self) -> None:
        self.query.stop()

    def summary(self, spark: SparkSession, lake: Lakehouse) -> dict[str, Any]:
        elapsed = time.monotonic() - self.started
        with self.tally.lock:
            counts = self.tally.as_dict()
        return {
            "source": self.source, **({"location": self.location} if self.location else {}),
            "trigger": self.trigger, "checkpoint": self.checkpoint, **counts,
            "duration_s": round(elapsed, 2),
            "events_per_s": round(counts["records_in"] / elapsed, 1) if elapsed > 0 else None,
            "bronze_version": table_version(spark, lake.bronze_events),
            "quarantine_version": table_version(spark, lake.bronze_events_quarantine),
        }


def start_ingest(spark: SparkSession, settings: Settings, once: bool) -> IngestRun:
    """Start the stream: `once` (always, for a backfill source) drains what is there (availableNow), else
    micro-batches every interval."""
    lake, ingest = Lakehouse.from_settings(settings), settings.ingest
    once = once or ingest.source in BACKFILL_SOURCES
    records = source_records(spark, settings)  # first: a missing source fails before any table is created
    ensure_tables(spark, lake)
    checkpoint = checkpoint_path(lake, ingest)
    tally = Tally()
    writer = (
        records.writeStream
        .queryName(f"churn-spark-ingest-{ingest.source}")
        .option("checkpointLocation", checkpoint)
        .foreachBatch(batch_writer(spark, lake, ingest, checkpoint, tally, settings.inputs.id_case))
    )
    if once:
        writer, trigger = writer.trigger(availableNow=True), "availableNow"
    else:
        writer, trigger = writer.trigger(processingTime=ingest.trigger_interval), f"every {ingest.trigger_interval}"
    location = {"files": ingest.backfill.path and lake.path(ingest.backfill.path),
                "table": ingest.backfill.table}.get(ingest.source)
    log.info("ingest: %s%s -> %s (%s, checkpoint %s)", ingest.source, f" {location}" if location else "",
             lake.bronze_events, trigger, checkpoint)
    return IngestRun(writer.start(), tally, ingest.source, trigger, checkpoint, location=location)


def run_ingest(spark: SparkSession, settings: Settings, once: bool = False,
               max_seconds: float | None = None) -> dict[str, Any]:
    """Ingest events into bronze; `once`: drain and stop, else run until interrupted (or `max_seconds`).

    Returns the run summary: records in, bronze rows written, duplicates absorbed, quarantined by
    reason, late arrivals (older than `watermark` behind the latest event seen; still ingested). A
    backfill source (`files`, `table`) always drains and stops.
    """
    once = once or settings.ingest.source in BACKFILL_SOURCES
    run = start_ingest(spark, settings, once)
    try:
        if once:
            run.query.awaitTermination()
        else:
            run.query.awaitTermination(None if max_seconds is None else max(1, round(max_seconds)))
    except KeyboardInterrupt:
        log.info("ingest: interrupted, stopping the stream")
    finally:
        run.stop()
    error = run.query.exception()
    if error is not None:
        raise RuntimeError(f"ingest stream failed: {(str(error).strip().splitlines() or ['unknown error'])[0]}")
    summary = run.summary(spark, Lakehouse.from_settings(settings))
    log.info("ingest: %d in, %d to bronze, %d duplicates, %d quarantined", summary["records_in"],
             summary["bronze_written"], summary["duplicates"], summary["quarantined"])
    return summary


# --- the demo-with-Kafka path --------------------------------------------------------------


def replay_to_kafka(spark: SparkSession, settings: Settings, path: str | None = None) -> dict[str, Any]:
    """Replay landing JSON-lines files into the configured Kafka topic, one message per line.

    The message key is the line's `account_id` when it has one (an account's events stay in one
    partition, in order); malformed lines are sent as they are, so ingest quarantines them. Replaying
    twice sends everything twice: ingest absorbs the duplicates.
    """
    lake, k = Lakehouse.from_settings(settings), settings.ingest.kafka
    source = lake.path(path or settings.ingest.landing_path)
    if lake.is_local and not _local_dir_exists(source):
        raise ContractError(f"landing folder not found: {source} (run `churn-spark generate` first)")
    lines = spark.read.format("text").option("recursiveFileLookup", "true").load(source)
    messages = lines.select(F.get_json_object("value", "$.account_id").alias("key"), F.col("value"))
    writer = messages.write.format("kafka").option("kafka.bootstrap.servers", k.bootstrap_servers)
    for key, value in k.options.items():
        if key.startswith("kafka."):  # producer settings (security etc.); reader-only options do not apply
            writer = writer.option(key, value)
    writer.option("topic", k.topic).save()
    sent = lines.count()
    log.info("replay-kafka: %d lines from %s -> %s/%s", sent, source, k.bootstrap_servers, k.topic)
    return {"records_sent": sent, "from": source, "topic": k.topic, "bootstrap_servers": k.bootstrap_servers}
