"""Ingest from the landing folder: parsing rules, exactly once across query kills and driver SIGKILLs."""

from __future__ import annotations

import datetime as dt
import os
import shutil
from pathlib import Path

import pytest
from chispa import assert_df_equality
from ingest_cases import (
    ALLOWED_TYPES,
    MAX_RECORD_BYTES,
    Record,
    assert_ingested,
    assert_rerun_changes_nothing,
    assert_summary_matches,
    bad_records,
    checkpoint_batches,
    expected_bronze,
    good,
    kill_driver,
    mixed_batch,
    no_duplicate_ids,
    spawn_ingest,
    wait_for,
    write_config,
    write_landing_file,
)
from pyspark.sql import SparkSession

from churn_spark.config import Settings, with_overrides
from churn_spark.ingest import (
    Tally,
    batch_writer,
    bronze_rows,
    checkpoint_path,
    ensure_tables,
    run_ingest,
    start_ingest,
    validated_events,
)
from churn_spark.io import table_version
from churn_spark.lakehouse import Lakehouse

pytestmark = pytest.mark.slow  # streams over landing folders, query kills and a driver SIGKILL: not in make test-fast


def landing_settings(settings: Settings, **extra: object) -> Settings:
    return with_overrides(settings, {
        "ingest.source": "landing", "ingest.allowed_event_types": ALLOWED_TYPES,
        "ingest.max_record_bytes": MAX_RECORD_BYTES, "ingest.trigger_interval": "1 second", **extra,
    })


def landing(s: Settings) -> Path:
    return Path(Lakehouse.from_settings(s).path(s.ingest.landing_path))


# --- pure parsing -----------------------------------------------------------------------------


def test_validated_events_gives_each_bad_kind_its_reason_and_parses_good_records(spark: SparkSession,
                                                                                 settings: Settings) -> None:
    s = landing_settings(settings)
    records = [good("u", 1), good("u", 4), good("u", 8, unknown={"a": 1})] + bad_records("u", 100)
    at = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
    df = spark.createDataFrame([(r.raw, "f", "f", 0, at) for r in records],
                               "raw string, source string, _pos_a string, _pos_b long, ingested_at timestamp")
    out = df.transform(lambda d: validated_events(d, s.ingest))
    expected = spark.createDataFrame([(r.raw, r.reason) for r in records], "raw string, reason string")
    assert_df_equality(out.select("raw", "reason").orderBy("raw", "reason"), expected.orderBy("raw", "reason"),
                       ignore_nullable=True)
    assert_df_equality(out.transform(bronze_rows).select("event_id", "account_id", "event_type", "event_time",
                                                         "value", "properties").orderBy("event_id"),
                       expected_bronze(spark, records), ignore_nullable=True)


def test_bronze_rows_keeps_one_row_per_event_id_the_first_by_position(spark: SparkSession,
                                                                      settings: Settings) -> None:
    s = landing_settings(settings)
    first, again = good("d", 1), good("d", 1)
    at = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
    df = spark.createDataFrame([(again.raw, "b", "b", 0, at), (first.raw, "a", "a", 0, at)],
                               "raw string, source string, _pos_a string, _pos_b long, ingested_at timestamp")
    out = df.transform(lambda d: validated_events(d, s.ingest)).transform(bronze_rows)
    assert_df_equality(out.select("event_id", "source", "event_date"),
                       spark.createDataFrame([("d-1", "a", dt.date(2024, 3, 1))],
                                             "event_id string, source string, event_date date"),
                       ignore_nullable=True)


def test_a_replayed_micro_batch_writes_nothing_twice(spark: SparkSession, settings: Settings,
                                                   tmp_path: Path) -> None:
    s = landing_settings(settings)
    lake = Lakehouse.from_settings(s)
    ensure_tables(spark, lake)
    ckpt = tmp_path / "ckpt"
    ckpt.mkdir()
    (ckpt / "metadata").write_text('{"id":"replay-test-stream"}')
    records = mixed_batch("x", 0, 3)
    at = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
    batch = spark.createDataFrame([(r.raw, "src", "src", i, at) for i, r in enumerate(records)],
                                  "raw string, source string, _pos_a string, _pos_b long, ingested_at timestamp")
    tally = Tally()
    write = batch_writer(spark, lake, s.ingest, str(ckpt), tally)
    write(batch, 7)
    quarantine_version = table_version(spark, lake.bronze_events_quarantine)
    write(batch, 7)  # the same batch again, as after a crash before the checkpoint commit
    assert_ingested(spark, lake, [("src", r) for r in records])
    assert table_version(spark, lake.bronze_events_quarantine) == quarantine_version
    goods = sum(1 for r in records if r.reason is None)
    assert (tally.bronze_written, tally.duplicates) == (len({r.event_id for r in records if r.reason is None}),
                                                        2 * goods - tally.bronze_written)


# --- streaming from the landing folder --------------------------------------------------------


def test_landing_once_ingests_everything_once_and_a_rerun_changes_nothing(spark: SparkSession,
                                                                          settings: Settings) -> None:
    s = landing_settings(settings)
    lake, folder = Lakehouse.from_settings(s), landing(s)
    first = mixed_batch("a", 0, 6)
    produced = write_landing_file(folder, "part-000.jsonl", first)
    # a later file re-delivers an id from the first file and repeats one bad line verbatim
    produced += write_landing_file(folder, "part-001.jsonl", mixed_batch("b", 0, 3, with_bad=False)
                                   + [good("a", 2), first[-1]])
    summary = run_ingest(spark, s, once=True)
    assert_ingested(spark, lake, produced)
    assert_summary_matches(summary, produced)
    assert_rerun_changes_nothing(spark, lake, lambda: run_ingest(spark, s, once=True))
    assert_ingested(spark, lake, produced)


def test_landing_stream_survives_query_kills_with_files_added_while_running(spark: SparkSession,
                                                                           settings: Settings) -> None:
    s = landing_settings(settings, **{"ingest.max_files_per_trigger": 1})
    lake, folder = Lakehouse.from_settings(s), landing(s)
    ckpt = checkpoint_path(lake, s.ingest)
    produced = write_landing_file(folder, "f0.jsonl", mixed_batch("k0", 0, 5))
    produced += write_landing_file(folder, "f1.jsonl", mixed_batch("k1", 0, 4))
    for round_ in range(3):
        run = start_ingest(spark, s, once=False)
        planned, committed = checkpoint_batches(ckpt)
        # a file arrives while the stream runs; it re-delivers an id of an earlier file too
        produced += write_landing_file(folder, f"g{round_}.jsonl", mixed_batch(f"g{round_}", 0, 3)
                                       + [good("k0", round_)])
        if round_ % 2 == 0:  # kill as soon as a new batch is planned: usually mid-batch
            wait_for(lambda p=planned: checkpoint_batches(ckpt)[0] > p, 180, "a new micro-batch")
        else:  # kill after a batch committed
            wait_for(lambda c=committed: checkpoint_batches(ckpt)[1] > c, 180, "a committed micro-batch")
        run.stop()
    run_ingest(spark, s, once=True)
    assert_ingested(spark, lake, produced)
    assert no_duplicate_ids(spark, lake).isEmpty()


def test_landing_exactly_once_when_the_driver_process_is_killed(spark: SparkSession, settings: Settings,
                                                                tmp_path: Path) -> None:
    s = landing_settings(settings, **{"ingest.max_files_per_trigger": 1})
    lake, folder = Lakehouse.from_settings(s), landing(s)
    ckpt = checkpoint_path(lake, s.ingest)
    config = write_config(s, tmp_path / "ingest.yaml")
    produced: list[tuple[str, Record]] = []
    for i in range(3):
        produced += write_landing_file(folder, f"p{i}.jsonl", mixed_batch(f"p{i}", 0, 4))
    for kill in range(2):
        _, committed = checkpoint_batches(ckpt)
        proc = spawn_ingest(config, tmp_path / f"driver-{kill}.log")
        try:
            wait_for(lambda c=committed: checkpoint_batches(ckpt)[1] > c or checkpoint_batches(ckpt)[0] > c + 1,
                     240, "the driver to process a micro-batch")
        finally:
            kill_driver(proc)
        produced += write_landing_file(folder, f"q{kill}.jsonl", mixed_batch(f"q{kill}", 0, 3) + [good("p0", 1)])
    summary = run_ingest(spark, s, once=True)
    assert summary["records_in"] > 0  # the killed drivers left work behind for the restart
    assert_ingested(spark, lake, produced)
    assert no_duplicate_ids(spark, lake).isEmpty()


def test_missing_landing_folder_is_one_clear_error(spark: SparkSession, settings: Settings) -> None:
    from churn_spark.errors import ContractError

    with pytest.raises(ContractError, match="landing folder not found"):
        run_ingest(spark, landing_settings(settings), once=True)
    assert not Path(settings.lakehouse).exists()  # a failed job leaves the lakehouse as it was: no empty tables


def test_a_moved_lakehouse_is_refused_instead_of_reading_every_landing_file_again(spark: SparkSession,
                                                                                   settings: Settings,
                                                                                   tmp_path: Path) -> None:
    from churn_spark.errors import ContractError

    s = landing_settings(settings)
    write_landing_file(landing(s), "part-000.jsonl", mixed_batch("a", 0, 4))
    run_ingest(spark, s, once=True)
    moved = tmp_path / "moved"
    shutil.copytree(s.lakehouse, moved)
    moved_settings = with_overrides(s, {"lakehouse": str(moved)})
    moved_lake = Lakehouse.from_settings(moved_settings)
    def versions() -> tuple[int | None, int | None]:
        return (table_version(spark, moved_lake.bronze_events),
                table_version(spark, moved_lake.bronze_events_quarantine))

    before = versions()
    with pytest.raises(ContractError, match="moved or copied"):
        run_ingest(spark, moved_settings, once=True)
    assert versions() == before
    # In place, the same checkpoint is this landing folder's: a rerun reads nothing new.
    assert run_ingest(spark, s, once=True)["records_in"] == 0


def test_late_event_older_than_the_watermark_is_kept_and_counted(spark: SparkSession, settings: Settings) -> None:
    s = landing_settings(settings, **{"ingest.watermark": "1 hour", "ingest.max_files_per_trigger": 1})
    lake, folder = Lakehouse.from_settings(s), landing(s)
    produced = write_landing_file(folder, "a.jsonl", [good("w", 100)])
    os.utime(folder / "a.jsonl", (1_700_000_000, 1_700_000_000))  # files are taken oldest first
    # the next batch brings an event ~28 hours older than one already seen, and a re-delivery
    produced += write_landing_file(folder, "b.jsonl", [good("w", 1), good("w", 100)])
    summary = run_ingest(spark, s, once=True)
    assert (summary["batches"], summary["late_arrivals"], summary["duplicates"], summary["bronze_written"]) == (
        2, 1, 1, 2)
    assert_ingested(spark, lake, produced)
