"""Benchmark: features job time / time of one full scan-and-aggregate of `bronze.events`, same session.

    flock /tmp/churn-heavy.lock .venv/bin/python bench/features_vs_scan.py \
        --source /work/data/lake100k --work /work/data/lake100k_features --last 2024-06-01 --counts 1 12 24

`--source` is a lakehouse with raw inputs and bronze.events (only read). `--work` is the lakehouse the
job writes gold tables to; its `bronze/` is a symlink to the source's bronze, raw inputs are read
from the source by absolute path. With `--accounts-fraction F` the work lakehouse instead gets its
own copy of the inputs and of bronze.events restricted to a hash sample of F of the accounts (written
once, reused when present): a mid-sized dataset cut from a big one without re-ingesting. For each
count N the job computes N monthly snapshots ending at `--last`. The scan baseline reads every event
and aggregates it per (account, type, day); it runs before the jobs and after each round of them,
and the fastest run is used. Prints a table of ratios.

`--repeats R` runs R rounds of all counts, interleaved (1, 12, 24, 1, 12, 24, ...) so that a drift of
the machine touches every count alike, and takes each count's median: single runs vary by about
±6 s, and the first job in a JVM is 20-30 s slower than the next (JIT warm-up).
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import statistics
import time

from pyspark.sql import SparkSession
from pyspark.sql import functions as F

from churn_spark.asof import add_months
from churn_spark.config import Settings, SparkSettings, with_overrides
from churn_spark.features.job import read_bronze_events, resolve_event_types, run_features
from churn_spark.session import build_spark


def scan_and_aggregate_seconds(spark: SparkSession, settings: Settings) -> float:
    """One full scan of bronze.events aggregated per (account, event type, UTC day), executed (noop sink)."""
    started = time.time()
    (read_bronze_events(spark, settings).groupBy("account_id", "event_type", F.to_date("event_time").alias("day"))
     .agg(F.count("*").alias("n"), F.sum("value").alias("v"))
     .write.format("noop").mode("overwrite").save())
    return time.time() - started


def sample_lakehouse(spark: SparkSession, source: str, work: str, fraction: float) -> None:
    """Copy raw inputs and bronze.events of a hash sample of `fraction` of the accounts (once per work dir)."""
    keep = (F.abs(F.xxhash64("account_id")) % 10_000) < round(fraction * 10_000)
    for rel, part in (("raw/accounts", None), ("raw/subscriptions", None), ("raw/support_tickets", None),
                      ("bronze/events", "event_date")):
        target = os.path.join(work, rel)
        if os.path.exists(os.path.join(target, "_delta_log")):
            continue
        writer = spark.read.format("delta").load(os.path.join(source, rel)).where(keep).write.format("delta")
        (writer.partitionBy(part) if part else writer).save(target)


def work_settings(args: argparse.Namespace) -> Settings:
    os.makedirs(args.work, exist_ok=True)
    spark_settings = SparkSettings(master=args.master, shuffle_partitions=args.shuffle_partitions,
                                   driver_memory=args.driver_memory, show_progress=False)
    generated = {"inputs.account_attributes": ["country", "channel", "industry"]}  # the generated accounts'
    if args.accounts_fraction is not None:
        return with_overrides(Settings(lakehouse=args.work, spark=spark_settings), generated)
    bronze_link = os.path.join(args.work, "bronze")
    if not os.path.exists(bronze_link):
        os.symlink(os.path.join(os.path.abspath(args.source), "bronze"), bronze_link)
    raw = {f"inputs.{t}.path": os.path.join(os.path.abspath(args.source), "raw", t)
           for t in ("accounts", "subscriptions", "support_tickets", "churn_truth")}
    return with_overrides(Settings(lakehouse=args.work, spark=spark_settings), {**raw, **generated})


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--source", required=True)
    parser.add_argument("--work", required=True)
    parser.add_argument("--last", type=dt.date.fromisoformat, default=dt.date(2024, 6, 1))
    parser.add_argument("--counts", type=int, nargs="+", default=[1, 12, 24])
    parser.add_argument("--master", default="local[2]")
    parser.add_argument("--shuffle-partitions", type=int, default=8)
    parser.add_argument("--driver-memory", default="8g")
    parser.add_argument("--accounts-fraction", type=float, default=None)
    parser.add_argument("--repeats", type=int, default=1, help="rounds of all counts; each count's median is used")
    args = parser.parse_args(argv)
    settings = work_settings(args)
    spark = build_spark(settings.spark, app_name="bench-features-vs-scan")
    if args.accounts_fraction is not None:
        started = time.time()
        sample_lakehouse(spark, os.path.abspath(args.source), os.path.abspath(args.work), args.accounts_fraction)
        print(f"sample of {args.accounts_fraction:.0%} of the accounts: {time.time() - started:.0f}s", flush=True)
    # Pin the event types as a production config would (the distinct scan is not part of the job's cost).
    types = resolve_event_types(settings, read_bronze_events(spark, settings)).types
    settings = with_overrides(settings, {"features.event_types": types})
    scans: list[float] = []

    def scan_once() -> None:
        scans.append(scan_and_aggregate_seconds(spark, settings))
        print(f"  scan-and-aggregate: {scans[-1]:.1f}s", flush=True)

    runs = {n: with_overrides(settings, {"churn.snapshots.start": add_months(args.last, -(n - 1)).isoformat(),
                                         "churn.snapshots.end": args.last.isoformat()}) for n in args.counts}
    times: dict[int, list[float]] = {n: [] for n in args.counts}
    rows: dict[int, int] = {}
    scan_once()
    for _ in range(args.repeats):
        for n, run in runs.items():
            started = time.time()
            summary = run_features(spark, run)
            times[n].append(time.time() - started)
            rows[n] = summary["label_rows"]
            print(f"  job with {n} snapshots: {times[n][-1]:.1f}s, {rows[n]} rows", flush=True)
        scan_once()
    scan = min(scans)
    print(f"scan-and-aggregate of bronze.events: {scan:.1f}s (runs: {', '.join(f'{s:.1f}' for s in scans)})")
    print(f"{'snapshots':>10}{'rows':>12}{'job_s':>10}{'ratio':>8}  runs")
    for n in args.counts:
        job = statistics.median(times[n])
        print(f"{n:>10}{rows[n]:>12}{job:>10.1f}{job / scan:>8.2f}  {', '.join(f'{t:.1f}' for t in times[n])}")
    spark.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
