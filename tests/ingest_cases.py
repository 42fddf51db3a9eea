"""Hand-made event records for the ingest tests: every bad-record kind, duplicates, schema drift.

Each record knows what ingest must do with it (its reason, or the bronze row it becomes), so a test
can check `input = bronze + quarantine` record by record without hard-coded counts.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from chispa import assert_df_equality
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql.types import DoubleType, MapType, StringType, StructField, StructType, TimestampType

from churn_spark.lakehouse import Lakehouse

UTC = dt.UTC
ALLOWED_TYPES = ["login", "page_view", "feature_use"]
MAX_RECORD_BYTES = 512
BASE_TIME = dt.datetime(2024, 3, 1, 8, 0, tzinfo=UTC)


@dataclass(frozen=True)
class Record:
    """One input record: its raw text, and either its quarantine reason or its bronze row."""

    raw: str | None
    reason: str | None = None
    event: tuple[Any, ...] | None = None  # (event_id, account_id, event_type, event_time, value, properties)

    @property
    def event_id(self) -> str | None:
        return self.event[0] if self.event else None


def _iso(t: dt.datetime) -> str:
    return t.isoformat().replace("+00:00", "Z")


def good(prefix: str, i: int, **extra: Any) -> Record:
    """A valid event; some have a null value or no properties, one has extra unknown fields."""
    t = BASE_TIME + dt.timedelta(minutes=17 * i, seconds=i % 60)
    value = None if i % 4 == 0 else float(i % 5) + 0.25
    props = {"plan": "pro", "seats": 3} if i % 2 else None
    doc: dict[str, Any] = {"event_id": f"{prefix}-{i}", "account_id": f"acc-{i % 7}",
                           "event_type": ALLOWED_TYPES[i % 3], "event_time": _iso(t)}
    if value is not None or i % 8 == 0:
        doc["value"] = value
    if props is not None:
        doc["properties"] = props
    doc.update(extra)
    expected_props = {k: str(v) for k, v in props.items()} if props else None
    event = (doc["event_id"], doc["account_id"], doc["event_type"], t, value, expected_props)
    return Record(json.dumps(doc), None, event)


def _bad(prefix: str, i: int, reason: str, **changes: Any) -> Record:
    doc = json.loads(good(prefix, i).raw or "{}")
    for key, value in changes.items():
        if value is _DROP:
            doc.pop(key, None)
        else:
            doc[key] = value
    return Record(json.dumps(doc), reason)


_DROP = object()


def bad_records(prefix: str, i: int) -> list[Record]:
    """At least one record per quarantine reason (ids start at `i`)."""
    return [
        _bad(prefix, i, "oversized_record", properties={"blob": "x" * MAX_RECORD_BYTES}),
        Record("", "empty_record"),
        Record("   ", "empty_record"),
        Record('{"event_id": "' + prefix + '-broken", "account_id": ', "invalid_json"),
        Record("[1, 2, 3]", "invalid_json"),
        Record("42", "invalid_json"),
        _bad(prefix, i + 1, "missing_event_id", event_id=_DROP),
        _bad(prefix, i + 2, "missing_event_id", event_id=""),
        _bad(prefix, i + 3, "missing_account_id", account_id=None),
        _bad(prefix, i + 4, "missing_event_type", event_type=_DROP),
        _bad(prefix, i + 5, "bad_timestamp", event_time="not-a-time"),
        _bad(prefix, i + 6, "bad_timestamp", event_time=_DROP),
        _bad(prefix, i + 7, "future_timestamp", event_time="2099-01-01T00:00:00Z"),
        _bad(prefix, i + 8, "too_old_timestamp", event_time="1999-12-31T23:59:59Z"),
        _bad(prefix, i + 9, "bad_value_type", value="3.5"),
        _bad(prefix, i + 10, "bad_value_type", value=True),
        _bad(prefix, i + 11, "bad_properties_type", properties="plan=pro"),
        _bad(prefix, i + 12, "unknown_event_type", event_type="teleport"),
    ]


def mixed_batch(prefix: str, start: int, goods: int, with_bad: bool = True) -> list[Record]:
    """`goods` good events, a duplicate of the first two, drifted schema, and (optionally) every bad kind.

    Bad records repeat one identical line: identical bad records are two records, both quarantined.
    """
    records = [good(prefix, start + k) for k in range(goods)]
    records.append(good(prefix, start + goods, extra_field={"nested": [1, 2]}, schema_version=2))
    records += records[:2]  # exact re-deliveries
    if with_bad:
        bads = bad_records(prefix, start + 1000)
        records += bads + [bads[3]]
    return records


# --- expectations --------------------------------------------------------------------------

EXPECTED_BRONZE = StructType([
    StructField("event_id", StringType()), StructField("account_id", StringType()),
    StructField("event_type", StringType()), StructField("event_time", TimestampType()),
    StructField("value", DoubleType()), StructField("properties", MapType(StringType(), StringType())),
])
EXPECTED_QUARANTINE = StructType([
    StructField("raw", StringType()), StructField("reason", StringType()), StructField("source", StringType()),
])


def expected_bronze(spark: SparkSession, records: Iterable[Record]) -> DataFrame:
    """Distinct good events by id: what bronze must hold, exactly."""
    by_id = {r.event_id: r.event for r in records if r.reason is None and r.event}
    return spark.createDataFrame(list(by_id.values()), EXPECTED_BRONZE).orderBy("event_id")


def bronze_contents(spark: SparkSession, lake: Lakehouse) -> DataFrame:
    return spark.read.format("delta").load(lake.bronze_events).select(*EXPECTED_BRONZE.fieldNames()).orderBy("event_id")


def assert_ingested(spark: SparkSession, lake: Lakehouse, produced: list[tuple[str | None, Record]]) -> None:
    """input = bronze + quarantine, record by record.

    `produced` pairs each input record with its source (file path or kafka:topic/partition/offset;
    None when unknown). Bronze holds each distinct good id once with exactly its values, from one of
    the sources it came from; quarantine holds every bad record once, raw, with its reason and source.
    """
    records = [r for _, r in produced]
    assert_df_equality(bronze_contents(spark, lake), expected_bronze(spark, records), ignore_nullable=True)
    with_sources = all(s is not None for s, _ in produced)
    columns = ["raw", "reason", "source"] if with_sources else ["raw", "reason"]
    expected_q = spark.createDataFrame([(r.raw, r.reason, s) for s, r in produced if r.reason],
                                       EXPECTED_QUARANTINE).select(*columns)
    actual_q = spark.read.format("delta").load(lake.bronze_events_quarantine).select(*columns)
    assert_df_equality(actual_q.orderBy(*columns), expected_q.orderBy(*columns), ignore_nullable=True)
    if not with_sources:
        return
    sources = spark.createDataFrame([(r.event_id, s) for s, r in produced if r.reason is None],
                                    "event_id string, source string")
    bronze = spark.read.format("delta").load(lake.bronze_events).select("event_id", "source").orderBy("event_id")
    assert_df_equality(bronze.join(sources, ["event_id", "source"], "left_semi").orderBy("event_id"), bronze)


def assert_summary_matches(summary: dict[str, Any], produced: list[tuple[str | None, Record]]) -> None:
    """The run summary's counts equal what was produced: distinct good ids, duplicates, bad by reason."""
    records = [r for _, r in produced]
    distinct_good = {r.event_id for r in records if r.reason is None}
    assert summary["records_in"] == len(records)
    assert summary["bronze_written"] == len(distinct_good)
    assert summary["duplicates"] == sum(1 for r in records if r.reason is None) - len(distinct_good)
    assert summary["quarantined_by_reason"] == counts_by_reason(records)


def assert_rerun_changes_nothing(spark: SparkSession, lake: Lakehouse, rerun: Callable[[], dict[str, Any]]) -> None:
    """A second `ingest --once` with nothing new reads nothing and leaves both Delta versions as they were."""
    from churn_spark.io import table_version

    versions = (table_version(spark, lake.bronze_events), table_version(spark, lake.bronze_events_quarantine))
    again = rerun()
    assert (again["records_in"], again["batches"]) == (0, 0)
    assert (table_version(spark, lake.bronze_events), table_version(spark, lake.bronze_events_quarantine)) == versions


def counts_by_reason(records: Iterable[Record]) -> dict[str, int]:
    out: dict[str, int] = {}
    for r in records:
        if r.reason:
            out[r.reason] = out.get(r.reason, 0) + 1
    return dict(sorted(out.items()))


# --- landing files and checkpoints ---------------------------------------------------------


def write_landing_file(folder: Path, name: str, records: list[Record]) -> list[tuple[str, Record]]:
    """Write records as JSON lines atomically (temp name, then rename); returns (source, record) pairs."""
    folder.mkdir(parents=True, exist_ok=True)
    tmp, final = folder / f".{name}.tmp", folder / name
    tmp.write_text("".join(f"{r.raw}\n" for r in records))
    os.replace(tmp, final)
    return [(f"file:{final}", r) for r in records]


def checkpoint_batches(checkpoint: str) -> tuple[int, int]:
    """(planned, committed) micro-batches in a local checkpoint folder."""
    def count(sub: str) -> int:
        d = Path(checkpoint) / sub
        return sum(1 for p in d.iterdir() if p.name.isdigit()) if d.is_dir() else 0

    return count("offsets"), count("commits")


def wait_for(cond: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return
        time.sleep(0.2)
    raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")


def no_duplicate_ids(spark: SparkSession, lake: Lakehouse) -> DataFrame:
    """Event ids that occur more than once in bronze (must be empty)."""
    return (spark.read.format("delta").load(lake.bronze_events)
            .groupBy("event_id").count().where(F.col("count") > 1))


# --- the ingest job as a separate driver process (to SIGKILL it) -----------------------------

REPO = Path(__file__).resolve().parents[1]


def write_config(settings: Any, path: Path) -> Path:
    """The settings as a YAML config file for a driver subprocess (smaller driver heap)."""
    import yaml

    data = settings.model_dump(mode="json")
    data["spark"]["driver_memory"] = "1g"
    path.write_text(yaml.safe_dump(data))
    return path


def spawn_ingest(config: Path, log_path: Path, once: bool = False) -> Any:
    """Start `jobs/ingest_events.py` in its own process group, so its JVM dies with it on SIGKILL."""
    import subprocess
    import sys

    cmd = [sys.executable, str(REPO / "jobs" / "ingest_events.py"), "--config", str(config)]
    if once:
        cmd.append("--once")
    out = open(log_path, "ab")  # noqa: SIM115 -- handed to the child
    try:
        return subprocess.Popen(cmd, cwd=REPO, stdout=out, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, start_new_session=True)
    finally:
        out.close()


def kill_driver(proc: Any) -> None:
    """SIGKILL the driver's whole process group (python + its JVM), by the group we created."""
    import signal

    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(timeout=60)
    # The JVM is in the same group; wait until no process of the group is left.
    wait_for(lambda: not _group_alive(proc.pid), 60, "the killed driver's JVM to exit")


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
        return True
    except ProcessLookupError:
        return False
