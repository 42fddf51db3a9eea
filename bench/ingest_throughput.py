"""Ingest throughput: events/s from a landing folder of JSON lines into bronze Delta (`ingest --once`).

Writes N synthetic events (with 0.2% re-deliveries and 0.1% malformed lines, as the generator does)
as JSON-lines files with Spark, then times `run_ingest(once=True)` end to end (stream start, parse,
validate, MERGE into bronze, quarantine append, commit). Heavy: run it alone, e.g.

    flock /tmp/churn-heavy.lock .venv/bin/python bench/ingest_throughput.py --events 1500000
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from pathlib import Path

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from churn_spark.config import Settings, SparkSettings
from churn_spark.ingest import run_ingest
from churn_spark.session import build_spark

EVENT_TYPES = ["login", "page_view", "feature_use", "export", "api_call"]


def synthetic_lines(spark: SparkSession, n: int, files: int) -> DataFrame:
    """One JSON line per event; every 500th id repeats the previous one, every 1000th line is broken."""
    ids = F.when(F.col("id") % 500 == 1, F.col("id") - 1).otherwise(F.col("id"))
    event = F.to_json(F.struct(
        F.concat(F.lit("ev-"), ids.cast("string")).alias("event_id"),
        F.concat(F.lit("acc-"), (ids % 20000).cast("string")).alias("account_id"),
        F.element_at(F.array(*[F.lit(t) for t in EVENT_TYPES]), (ids % len(EVENT_TYPES) + 1).cast("int"))
        .alias("event_type"),
        F.date_format(F.timestamp_seconds(F.lit(1_640_995_200) + ids * 61 % 94_000_000), "yyyy-MM-dd'T'HH:mm:ss'Z'")
        .alias("event_time"),
        F.when(ids % 3 == 0, F.lit(None)).otherwise((ids % 97) / 7.0).alias("value"),
        F.create_map(F.lit("plan"), F.lit("pro"), F.lit("seats"), (ids % 9).cast("string")).alias("properties"),
    ))
    line = F.when(F.col("id") % 1000 == 7, F.substring(event, 1, 40)).otherwise(event)
    return spark.range(n, numPartitions=files).select(line.alias("value"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=1_500_000)
    parser.add_argument("--files", type=int, default=16)
    parser.add_argument("--master", default="local[2]")
    parser.add_argument("--driver-memory", default="2g")
    parser.add_argument("--keep", action="store_true", help="keep the lakehouse folder")
    args = parser.parse_args()

    root = Path(tempfile.mkdtemp(prefix="churn-ingest-bench-"))
    spark_settings = SparkSettings(master=args.master, shuffle_partitions=4, driver_memory=args.driver_memory,
                                   show_progress=False)
    settings = Settings(lakehouse=str(root), spark=spark_settings)
    spark = build_spark(spark_settings, app_name="churn-spark-bench-ingest")
    try:
        t0 = time.perf_counter()
        synthetic_lines(spark, args.events, args.files).write.text(str(root / settings.ingest.landing_path))
        t1 = time.perf_counter()
        summary = run_ingest(spark, settings, once=True)
        t2 = time.perf_counter()
        rows = spark.read.format("delta").load(str(root / "bronze/events")).count()
        seconds = t2 - t1
        print(f"events in landing:   {summary['records_in']:,} ({args.files} files, written in {t1 - t0:.1f}s)")
        print(f"bronze rows:         {rows:,} (written {summary['bronze_written']:,}, "
              f"duplicates absorbed {summary['duplicates']:,})")
        print(f"quarantined:         {summary['quarantined']:,} {summary['quarantined_by_reason']}")
        print(f"ingest --once:       {seconds:.1f}s on {args.master}")
        print(f"throughput:          {summary['records_in'] / seconds:,.0f} events/s into bronze")
    finally:
        spark.stop()
        if not args.keep:
            shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
