"""Ingest from a real Kafka broker (KRaft, jars from Maven Central): exactly once across kills."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from ingest_cases import (
    ALLOWED_TYPES,
    MAX_RECORD_BYTES,
    Record,
    assert_ingested,
    assert_rerun_changes_nothing,
    assert_summary_matches,
    checkpoint_batches,
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
from churn_spark.ingest import checkpoint_path, run_ingest, start_ingest
from churn_spark.kafka_broker import KafkaBroker, start_broker
from churn_spark.lakehouse import Lakehouse

pytestmark = [pytest.mark.kafka, pytest.mark.slow]
PARTITIONS = 2


@pytest.fixture(scope="module")
def kafka() -> Iterator[KafkaBroker]:
    broker = start_broker(partitions=PARTITIONS)
    yield broker
    broker.stop()


class Producer:
    """Writes records to a topic through Spark's Kafka sink, round-robin over partitions, and knows
    each record's `kafka:<topic>/<partition>/<offset>` (offsets are consecutive per partition)."""

    def __init__(self, spark: SparkSession, broker: KafkaBroker, topic: str) -> None:
        self.spark, self.broker, self.topic = spark, broker, topic
        self.next_offset = [0] * PARTITIONS

    def send(self, records: list[Record]) -> list[tuple[str, Record]]:
        rows = [(r.raw, i % PARTITIONS) for i, r in enumerate(records)]
        (
            self.spark.createDataFrame(rows, "value string, partition int").coalesce(1)
            .write.format("kafka")
            .option("kafka.bootstrap.servers", self.broker.bootstrap_servers)
            .option("topic", self.topic)
            .save()
        )
        produced = []
        for i, record in enumerate(records):
            p = i % PARTITIONS
            produced.append((f"kafka:{self.topic}/{p}/{self.next_offset[p]}", record))
            self.next_offset[p] += 1
        return produced


def kafka_settings(settings: Settings, broker: KafkaBroker, topic: str, **extra: object) -> Settings:
    return with_overrides(settings, {
        "ingest.source": "kafka", "ingest.kafka.bootstrap_servers": broker.bootstrap_servers,
        "ingest.kafka.topic": topic, "ingest.allowed_event_types": ALLOWED_TYPES,
        "ingest.max_record_bytes": MAX_RECORD_BYTES, "ingest.trigger_interval": "1 second", **extra,
    })


def test_kafka_once_quarantines_every_bad_kind_absorbs_duplicates_and_rerun_changes_nothing(
        spark: SparkSession, settings: Settings, kafka: KafkaBroker) -> None:
    s = kafka_settings(settings, kafka, "once")
    lake, producer = Lakehouse.from_settings(s), Producer(spark, kafka, "once")
    first = mixed_batch("o", 0, 8) + [Record(None, "empty_record")]  # a tombstone (null value)
    produced = producer.send(first)
    produced += producer.send(mixed_batch("p", 0, 3, with_bad=False) + [good("o", 3), first[-2]])
    summary = run_ingest(spark, s, once=True)
    assert_ingested(spark, lake, produced)
    assert_summary_matches(summary, produced)
    assert_rerun_changes_nothing(spark, lake, lambda: run_ingest(spark, s, once=True))


def test_kafka_stream_survives_query_kills_while_producing(spark: SparkSession, settings: Settings,
                                                           kafka: KafkaBroker) -> None:
    s = kafka_settings(settings, kafka, "kills", **{"ingest.kafka.max_offsets_per_trigger": 12})
    lake, producer = Lakehouse.from_settings(s), Producer(spark, kafka, "kills")
    ckpt = checkpoint_path(lake, s.ingest)
    produced = producer.send(mixed_batch("k", 0, 10))
    for round_ in range(3):
        run = start_ingest(spark, s, once=False)
        planned, committed = checkpoint_batches(ckpt)
        produced += producer.send(mixed_batch(f"r{round_}", 0, 4) + [good("k", round_)])
        if round_ % 2 == 0:  # stop as soon as a new batch is planned: usually mid-batch
            wait_for(lambda p=planned: checkpoint_batches(ckpt)[0] > p, 180, "a new micro-batch")
        else:
            wait_for(lambda c=committed: checkpoint_batches(ckpt)[1] > c, 180, "a committed micro-batch")
        run.stop()
    run_ingest(spark, s, once=True)
    assert_ingested(spark, lake, produced)
    assert no_duplicate_ids(spark, lake).isEmpty()


def test_kafka_exactly_once_when_the_driver_process_is_killed(spark: SparkSession, settings: Settings,
                                                              kafka: KafkaBroker, tmp_path: Path) -> None:
    s = kafka_settings(settings, kafka, "sigkill", **{"ingest.kafka.max_offsets_per_trigger": 10})
    lake, producer = Lakehouse.from_settings(s), Producer(spark, kafka, "sigkill")
    ckpt = checkpoint_path(lake, s.ingest)
    config = write_config(s, tmp_path / "ingest.yaml")
    produced = producer.send(mixed_batch("d", 0, 12))
    for kill in range(2):
        _, committed = checkpoint_batches(ckpt)
        proc = spawn_ingest(config, tmp_path / f"driver-{kill}.log")
        try:
            wait_for(lambda c=committed: checkpoint_batches(ckpt)[1] > c or checkpoint_batches(ckpt)[0] > c + 1,
                     240, "the driver to process a micro-batch")
        finally:
            kill_driver(proc)
        produced += producer.send(mixed_batch(f"e{kill}", 0, 4) + [good("d", kill)])
    summary = run_ingest(spark, s, once=True)
    assert summary["records_in"] > 0  # the killed drivers left work behind for the restart
    assert_ingested(spark, lake, produced)
    assert no_duplicate_ids(spark, lake).isEmpty()


def test_cli_replays_landing_files_into_kafka_and_ingests_them(spark: SparkSession, settings: Settings,
                                                               kafka: KafkaBroker, tmp_path: Path) -> None:
    from churn_spark.cli import main

    s = kafka_settings(settings, kafka, "unused")
    lake = Lakehouse.from_settings(s)
    folder = Path(lake.path(s.ingest.landing_path))
    produced = write_landing_file(folder, "part-0.jsonl", mixed_batch("rp", 0, 5))
    config = write_config(s, tmp_path / "replay.yaml")
    common = ["--config", str(config)]
    kafka_flags = ["--bootstrap-servers", kafka.bootstrap_servers, "--topic", "replayed"]
    assert main([*common, "replay-kafka", *kafka_flags]) == 0
    assert main([*common, "ingest", "--source", "kafka", "--once", *kafka_flags]) == 0
    assert_ingested(spark, lake, [(None, r) for _, r in produced])
