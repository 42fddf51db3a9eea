"""`python -m bench [--quick]`: what each job costs, as ratios measured in the same run.

Stages (each recorded, a failing stage does not stop the others):

1. data      generate + ingest one dataset (reused from the work folder when the parameters match)
2. floor     features job at 1, 12, 24 snapshots vs one full scan-and-aggregate of bronze.events
3. growth    features job (12 snapshots) at three data sizes (account subsets), log-log slope
4. peers     ours vs DuckDB SQL, pandas, naive Spark on the same Parquet export and definitions;
             peak memory per racer (own process), outputs compared; local[1] vs local[2] speed-up
5. training  MLlib GBT vs scikit-learn HistGradientBoosting (and xgboost.spark in the same Pipeline, when
             installed) on the same training set: time, test AUC
6. score     train job, then scoring throughput (accounts/s)
7. ingest    streaming ingest (exactly-once MERGE) throughput on synthetic lines (bench/ingest_throughput.py)
8. nightly   the nightly's cost: scoring alone, the nightly vs from scratch, 10x events (bench/nightly.py)
9. uplift    a dataset with retention campaigns: uplift train's Qini against the oracle's, true churners saved
             per 1,000 contacts by uplift vs churn-risk targeting, MLlib vs scikit-learn T-learner (bench/uplift.py)

Writes bench/results/latest.json (and results/<mode>-<timestamp>.json); a full run also rewrites
the table in bench/README.md.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import logging
import os
import platform
import shutil
import sys
import time
import traceback
from collections.abc import Callable
from dataclasses import asdict, dataclass
from functools import partial
from pathlib import Path
from typing import Any

import psutil

from bench import report
from bench.measure import loglog_slope, run_watched, timed
from bench.nightly import stage_nightly
from bench.spec import RaceSpec, add_months, span_days

HERE = Path(__file__).resolve().parent
END_SNAPSHOT = dt.date(2024, 6, 1)  # the last snapshot with an uncensored label in 2022-2024 data
SCORE_DATE = dt.date(2024, 12, 1)
RACERS = ("ours", "duckdb", "pandas", "naive_spark")
log = logging.getLogger("bench")


@dataclass(frozen=True)
class Mode:
    """Sizes of one bench mode. The quick mode keeps every question answered but pays each fixed cost
    (JVM start-up, Delta commit, Spark job) as few times as it can: one growth subset, no local[1]
    racer, fewer boosting rounds, no refit in the train job."""

    name: str
    accounts: int
    growth_fractions: tuple[float, ...]
    ingest_events: int
    gbt_iter: int
    race_timeout_s: float
    driver_memory: str
    shuffle_partitions: int  # tiny data: each extra task is pure scheduling overhead
    local1_racer: bool = True  # the race's "ours" again at local[1] (one more JVM): the cores speed-up
    train_refit: bool = True  # the score stage's train job refits on train + validation (a second fit)
    uplift_accounts: int = 8000  # the uplift stage's own dataset (with campaigns): a test campaign of ~2,000 rows
    uplift_search: bool = True  # uplift train's regularisation search and compared learners (minutes at any size)


MODES = {
    # meant for under 5 minutes on a quiet 2-core machine (~42k events, 3 JVMs: bench + 2 Spark racers);
    # measured 2026-11-29: 4 min 13 s of wall time with the data generated (--fresh)
    "quick": Mode("quick", accounts=60, growth_fractions=(0.5,), ingest_events=10_000, gbt_iter=10,
                  race_timeout_s=300, driver_memory="1536m", shuffle_partitions=2, local1_racer=False,
                  train_refit=False, uplift_accounts=500, uplift_search=False),
    # "full": ~190k events; measured 2026-11-29 on a quiet machine: 407 s with data generated. Pass
    # --accounts for more (the floor and growth at 10^6-10^7+ events: bench/features_vs_scan.py).
    "full": Mode("full", accounts=300, growth_fractions=(0.25, 0.5), ingest_events=100_000, gbt_iter=60,
                 race_timeout_s=900, driver_memory="3g", shuffle_partitions=4),
}


def snapshot_range(n: int) -> tuple[dt.date, dt.date]:
    return add_months(END_SNAPSHOT, -(n - 1)), END_SNAPSHOT


# --- settings and data ---------------------------------------------------------------------------


def bench_settings(lake: Path, mode: Mode, snapshots: int = 24) -> Any:
    from churn_spark.config import Settings

    start, end = snapshot_range(snapshots)
    return Settings.model_validate({
        "lakehouse": str(lake),
        "spark": {"master": "local[2]", "shuffle_partitions": mode.shuffle_partitions,
                  "driver_memory": mode.driver_memory, "show_progress": False, "with_kafka": False,
                  "app_name": "churn-bench"},
        "generate": {"accounts": mode.accounts, "start": "2022-01-01", "end": "2024-12-31", "event_files": 4},
        "churn": {"snapshots": {"start": start.isoformat(), "end": end.isoformat()}},
        "inputs": {"account_attributes": ["country", "channel", "industry"]},  # the generated accounts'
        "model": {"type": "gbt", "params": {"maxIter": mode.gbt_iter}, "refit": mode.train_refit},
    })


def with_snapshots(settings: Any, n: int) -> Any:
    from churn_spark.config import with_overrides

    start, end = snapshot_range(n)
    return with_overrides(settings, {"churn.snapshots.start": start.isoformat(),
                                     "churn.snapshots.end": end.isoformat()})


def bronze_count(spark: Any, settings: Any) -> int:
    from churn_spark.lakehouse import Lakehouse

    return int(spark.read.format("delta").load(Lakehouse.from_settings(settings).bronze_events).count())


def stage_data(spark: Any, settings: Any, work: Path, fresh: bool) -> dict[str, Any]:
    """Generate and ingest the dataset once; later runs with the same parameters reuse it."""
    from churn_spark.generate import run_generate
    from churn_spark.ingest import run_ingest

    lake = Path(settings.lakehouse)
    marker = lake / "_bench_data.json"
    params = settings.generate.model_dump(mode="json")
    if not fresh and marker.exists() and json.loads(marker.read_text()).get("generate") == params:
        data = json.loads(marker.read_text())
        data["reused"] = True
        return data
    shutil.rmtree(lake, ignore_errors=True)
    gen_s, gen = timed(lambda: run_generate(spark, settings))
    ing_s, ing = timed(lambda: run_ingest(spark, settings, once=True))
    data = {"generate": params, "generate_s": round(gen_s, 1), "ingest_s": round(ing_s, 1),
            "events": bronze_count(spark, settings), "accounts": settings.generate.accounts,
            "ingest_events_per_s": round(ing["records_in"] / ing_s, 1), "ingest_records_in": ing["records_in"]}
    marker.write_text(json.dumps(data, indent=1))
    data["reused"] = False
    return data


# --- 2. floor ------------------------------------------------------------------------------------


def scan_seconds(spark: Any, settings: Any) -> float:
    """The floor: one full scan-and-aggregate of bronze.events, timed (the features helper's function)."""
    try:
        from bench.features_vs_scan import scan_and_aggregate_seconds
    except ImportError:  # not there: the same scan, defined here
        return timed(lambda: _scan_and_aggregate(spark, settings))[0]
    return float(scan_and_aggregate_seconds(spark, settings))


def _scan_and_aggregate(spark: Any, settings: Any) -> None:
    """Read every event once and aggregate it per (account, type, day): the least a correct job does."""
    from pyspark.sql import functions as F

    from churn_spark.lakehouse import Lakehouse

    events = spark.read.format("delta").load(Lakehouse.from_settings(settings).bronze_events)
    (events.groupBy("account_id", "event_type", F.to_date("event_time").alias("day"))
     .agg(F.count(F.lit(1)).alias("n"), F.sum("value").alias("v"))
     .write.format("noop").mode("overwrite").save())


def with_pinned_event_types(spark: Any, settings: Any) -> Any:
    """Event types pinned as a production config would (as bench/features_vs_scan.py does)."""
    from churn_spark.config import with_overrides
    from churn_spark.features.job import read_bronze_events, resolve_event_types

    types = resolve_event_types(settings, read_bronze_events(spark, settings)).types
    return with_overrides(settings, {"features.event_types": types})


def stage_floor(spark: Any, settings: Any, repeats: int) -> dict[str, Any]:
    from churn_spark.features.job import run_features

    settings = with_pinned_event_types(spark, settings)
    scans = [scan_seconds(spark, settings)]
    features: dict[str, float] = {}
    for n in (1, 12, 24):
        job = partial(run_features, spark, with_snapshots(settings, n))
        features[str(n)] = min(timed(job)[0] for _ in range(repeats))
    scans.append(scan_seconds(spark, settings))
    scan_s = min(scans)
    return {
        "scan_s": round(scan_s, 2), "scan_runs_s": [round(s, 2) for s in scans],
        "features_s": {k: round(v, 2) for k, v in features.items()},
        "ratio": {k: round(v / scan_s, 2) for k, v in features.items()},
        "feature_job_vs_scan_ratio": round(features["12"] / scan_s, 2),
        "events": bronze_count(spark, settings),
        "method": "run_features (labels + all features, Delta writes, run summary) / the faster of two "
                  "scan_and_aggregate_seconds (bench/features_vs_scan.py) runs, event types pinned",
    }


# --- 3. growth -----------------------------------------------------------------------------------


def subset_lake(spark: Any, settings: Any, fraction: float, dest: Path) -> Any:
    """A copy of the lakehouse with a deterministic `fraction` of the accounts (all their rows)."""
    from pyspark.sql import functions as F

    from churn_spark import io
    from churn_spark.config import with_overrides
    from churn_spark.lakehouse import Lakehouse

    sub = with_overrides(settings, {"lakehouse": str(dest)})
    marker = dest / "_bench_subset.json"
    src_marker = Path(settings.lakehouse) / "_bench_data.json"
    stamp = {"fraction": fraction, "source": src_marker.read_text() if src_marker.exists() else None}
    if marker.exists() and json.loads(marker.read_text()) == stamp:
        return sub
    shutil.rmtree(dest, ignore_errors=True)
    keep = (F.abs(F.xxhash64("account_id")) % 1000) < int(round(fraction * 1000))
    src, dst = Lakehouse.from_settings(settings), Lakehouse.from_settings(sub)
    for table in ("raw_accounts", "raw_subscriptions", "raw_support_tickets", "raw_churn_truth"):
        df = spark.read.format("delta").load(getattr(src, table)).where(keep)
        io.overwrite_table(df, getattr(dst, table))
    events = spark.read.format("delta").load(src.bronze_events).where(keep)
    io.overwrite_table(events, dst.bronze_events, partition_by=["event_date"])
    marker.write_text(json.dumps(stamp))
    return sub


def stage_growth(spark: Any, settings: Any, mode: Mode, work: Path, floor: dict[str, Any] | None) -> dict[str, Any]:
    from churn_spark.features.job import run_features

    points = []
    for fraction in mode.growth_fractions:
        sub = with_snapshots(with_pinned_event_types(spark, subset_lake(
            spark, settings, fraction, work / f"lake_{int(fraction * 100)}pct")), 12)
        seconds = timed(partial(run_features, spark, sub))[0]
        points.append({"fraction": fraction, "events": bronze_count(spark, sub), "features_s": round(seconds, 2)})
    if floor and "features_s" in floor:
        points.append({"fraction": 1.0, "events": floor["events"], "features_s": floor["features_s"]["12"]})
    else:
        full = with_snapshots(with_pinned_event_types(spark, settings), 12)
        seconds, _ = timed(lambda: run_features(spark, full))
        points.append({"fraction": 1.0, "events": bronze_count(spark, full), "features_s": round(seconds, 2)})
    return {"job": "features, 12 snapshots, local[2]", "points": points,
            "loglog_slope": loglog_slope([p["events"] for p in points], [p["features_s"] for p in points])}


# --- 4. peers ------------------------------------------------------------------------------------


def export_inputs(spark: Any, settings: Any, dest: Path) -> None:
    """The conformed inputs and bronze events as plain Parquet: every racer reads the same files."""
    from churn_spark import io
    from churn_spark.lakehouse import Lakehouse

    marker = dest / "_bench_export.json"
    src_marker = Path(settings.lakehouse) / "_bench_data.json"
    stamp = src_marker.read_text() if src_marker.exists() else None
    if marker.exists() and marker.read_text() == stamp:
        return
    shutil.rmtree(dest, ignore_errors=True)
    previous = spark.conf.get("spark.sql.parquet.outputTimestampType")
    spark.conf.set("spark.sql.parquet.outputTimestampType", "TIMESTAMP_MICROS")
    try:
        for table in ("accounts", "subscriptions", "support_tickets"):
            conformed = io.read_input(spark, settings, table)
            assert conformed is not None
            conformed.good.write.mode("overwrite").parquet(str(dest / table))
        events = spark.read.format("delta").load(Lakehouse.from_settings(settings).bronze_events)
        (events.select("event_id", "account_id", "event_type", "event_time", "value", "event_date")
         .repartition(4).sortWithinPartitions("event_time").write.mode("overwrite").parquet(str(dest / "events")))
    finally:
        spark.conf.set("spark.sql.parquet.outputTimestampType", previous)
    marker.write_text(stamp or "")


def race_spec(spark: Any, settings: Any, data_dir: Path, out: Path, mode: Mode) -> RaceSpec:
    from churn_spark.features import catalog
    from churn_spark.features.job import read_bronze_events, resolve_data_end, resolve_event_types

    events = read_bronze_events(spark, settings)
    start, end = snapshot_range(12)
    snaps = [add_months(start, i) for i in range(12)]
    windows = [28, 90]
    return RaceSpec(
        data_dir=str(data_dir), out=str(out), snapshots=[d.isoformat() for d in snaps],
        data_end=resolve_data_end(settings, events).isoformat(),
        event_types=catalog.event_type_slugs(resolve_event_types(settings, events).types),
        windows=windows, span_days={d.isoformat(): span_days(d, windows, [], settings.churn.lookback_months)
                                    for d in snaps},
        horizon_months=settings.churn.horizon_months, grace_days=settings.churn.grace_days,
        min_tenure_days=settings.churn.min_tenure_days, master="local[2]", driver_memory=mode.driver_memory,
        shuffle_partitions=settings.spark.shuffle_partitions,
    )


def stage_peers(spark: Any, settings: Any, mode: Mode, work: Path) -> dict[str, Any]:
    data_dir, race_dir = work / "export", work / "race"
    export_inputs(spark, settings, data_dir)
    shutil.rmtree(race_dir, ignore_errors=True)
    race_dir.mkdir(parents=True)
    base = race_spec(spark, settings, data_dir, race_dir / "out", mode)
    results: dict[str, Any] = {}
    runs = [(r, r, "local[2]") for r in RACERS] + ([("ours_local1", "ours", "local[1]")] if mode.local1_racer else [])
    for name, racer, master in runs:
        spec = RaceSpec(**{**asdict(base), "out": str(race_dir / name), "master": master})
        spec_file = race_dir / f"{name}.spec.json"
        spec.save(spec_file)
        log.info("race: %s (%s)", name, master)
        results[name] = run_watched(["bench.worker", racer, str(spec_file), str(race_dir / f"{name}.result.json")],
                                    race_dir / f"{name}.result.json", race_dir / f"{name}.log", mode.race_timeout_s)
        results[name]["master"] = master
    ours = results["ours"]
    checks = report.compare_outputs(base, race_dir, [n for n, *_ in runs])
    for name, res in results.items():
        res["matches_ours"] = checks.get(name)
        if ours.get("status") == "ok" and res.get("status") == "ok":
            res["time_vs_ours"] = round(res["seconds"] / ours["seconds"], 2)
            res["memory_vs_ours"] = round(res["peak_rss_mb"] / ours["peak_rss_mb"], 2) if ours["peak_rss_mb"] else None
    speedup = None
    if ours.get("status") == "ok" and results.get("ours_local1", {}).get("status") == "ok":
        speedup = round(results["ours_local1"]["seconds"] / ours["seconds"], 2)
    return {"snapshots": len(base.snapshots), "windows": base.windows, "event_types": len(base.event_types),
            "columns": base.output_columns(), "racers": results, "speedup_local2_vs_local1": speedup,
            "memory_note": "peak RSS of the racer's process tree (a Spark racer includes its JVM, "
                           f"driver memory {mode.driver_memory}); no memory cap set"}


# --- 5. training ---------------------------------------------------------------------------------


def stage_training(spark: Any, settings: Any, mode: Mode) -> dict[str, Any]:
    import pandas as pd
    from pyspark import StorageLevel
    from sklearn.ensemble import HistGradientBoostingClassifier
    from sklearn.metrics import roc_auc_score

    from churn_spark.lakehouse import Lakehouse
    from churn_spark.train import metrics as M
    from churn_spark.train import pipeline as P
    from churn_spark.train.job import labelled_dataset, profile_columns, snapshot_stats, with_class_weight
    from churn_spark.train.split import filter_snapshots, plan_time_split

    lake, ms = Lakehouse.from_settings(settings), settings.model
    features = spark.read.format("delta").load(lake.churn_features)
    dataset = labelled_dataset(spark.read.format("delta").load(lake.churn_labels), features,
                               settings.features.feature_set_version)
    stats = snapshot_stats(dataset)
    split = plan_time_split(list(stats), settings.churn.horizon_months, settings.churn.grace_days,
                            ms.validation_snapshots, ms.test_snapshots, ms.train_end)
    n_train = sum(stats[d][0] for d in split.train)
    rate = sum(stats[d][1] for d in split.train) / max(n_train, 1)
    dataset = with_class_weight(dataset, rate)
    train = filter_snapshots(dataset, split.train).persist(StorageLevel.MEMORY_AND_DISK)
    test = filter_snapshots(dataset, split.test).persist(StorageLevel.MEMORY_AND_DISK)
    try:
        rows = {"train": train.count(), "test": test.count()}
        columns, _ = profile_columns(train, P.feature_columns(features.schema, ms.exclude_features),
                                     ms.missing_indicators)
        params = {**P.DEFAULT_PARAMS["gbt"], "maxIter": mode.gbt_iter}
        pipeline, _ = P.build_pipeline(columns, "gbt", params, ms.seed, weighted=True)
        mllib_s, model = timed(lambda: P.fit_pipeline(pipeline, train))
        mllib_auc = M.roc_auc(P.predict(model, test), P.RAW_OUTPUT_COL)
        xgb = training_xgboost(spark, columns, params, ms.seed, train, test, mllib_s, mllib_auc)
        cols = [*columns.numeric, *columns.categorical]
        tr: pd.DataFrame = train.select(*[f"`{c}`" for c in cols], "label", P.WEIGHT_COL).toPandas()  # bench-sized
        te: pd.DataFrame = test.select(*[f"`{c}`" for c in cols], "label").toPandas()
    finally:
        train.unpersist()
        test.unpersist()

    def frame(df: pd.DataFrame) -> pd.DataFrame:
        out = df[columns.numeric].astype("float64")
        for c in columns.categorical:
            out[c] = pd.Categorical(df[c].astype("string"), categories=sorted(tr[c].dropna().astype(str).unique()))
        return out

    # HGB needs every categorical's cardinality below max_bins (MLlib one-hot encodes them instead)
    cardinality = max([tr[c].nunique() for c in columns.categorical] or [0])
    max_bins = min(255, max(params["maxBins"], cardinality + 1))
    clf = HistGradientBoostingClassifier(
        max_iter=mode.gbt_iter, max_depth=params["maxDepth"], learning_rate=params["stepSize"],
        min_samples_leaf=params["minInstancesPerNode"], max_bins=max_bins,
        categorical_features="from_dtype", early_stopping=False, random_state=ms.seed)
    x_train, x_test = frame(tr), frame(te)
    sk_s, _ = timed(lambda: clf.fit(x_train, tr["label"], sample_weight=tr[P.WEIGHT_COL]))
    sk_auc = float(roc_auc_score(te["label"], clf.predict_proba(x_test)[:, 1]))
    return {
        "rows": rows, "train_snapshots": len(split.train), "test_snapshots": len(split.test),
        "features": {"numeric": len(columns.numeric), "categorical": len(columns.categorical)},
        "params": params, "sklearn_max_bins": max_bins,
        "mllib_gbt_s": round(mllib_s, 2), "sklearn_hgb_s": round(sk_s, 3),
        "time_ratio_mllib_vs_sklearn": round(mllib_s / sk_s, 1) if sk_s > 0 else None,
        "mllib_test_auc": round(mllib_auc, 4), "sklearn_test_auc": round(sk_auc, 4),
        "auc_diff_mllib_minus_sklearn": round(mllib_auc - sk_auc, 4),
        "note": "MLlib: the product's fit (train/pipeline.py:fit_pipeline: the encoding, then GBTClassifier on a "
                "local checkpoint of its inputs) of a persisted DataFrame; sklearn: "
                "HistGradientBoostingClassifier fit on the same rows in memory (toPandas not timed)",
        "xgboost": xgb,
    }


def training_xgboost(spark: Any, columns: Any, gbt: dict[str, Any], seed: int, train: Any, test: Any,
                     gbt_s: float, gbt_auc: float) -> dict[str, Any]:
    """The project's Pipeline with xgboost.spark's classifier instead of MLlib's GBT, fitted the same way
    (`fit_pipeline`) on the same persisted rows and class weights: rounds, depth, learning rate, row subsample
    and bins as the GBT's, one worker per core Spark has (the GBT's tasks use the same cores). Time and test ROC
    AUC (raw probability) against the GBT's. Skipped, and said so, when xgboost is not installed
    (`pip install -e '.[xgboost]'`)."""
    import importlib.util

    from churn_spark.train import metrics as M
    from churn_spark.train import pipeline as P

    if importlib.util.find_spec("xgboost") is None:
        return {"status": "skipped: xgboost not installed (pip install -e '.[xgboost]')"}
    params = {**P.DEFAULT_PARAMS["xgboost"], "n_estimators": gbt["maxIter"], "max_depth": gbt["maxDepth"],
              "learning_rate": gbt["stepSize"], "subsample": gbt["subsamplingRate"], "max_bin": gbt["maxBins"],
              "num_workers": spark.sparkContext.defaultParallelism}
    pipeline, _ = P.build_pipeline(columns, "xgboost", params, seed, weighted=True)
    seconds, model = timed(lambda: P.fit_pipeline(pipeline, train))
    auc = M.roc_auc(P.predict(model, test), P.RAW_OUTPUT_COL)
    return {"status": "ok", "params": params, "xgboost_s": round(seconds, 2), "xgboost_test_auc": round(auc, 4),
            "time_ratio_xgboost_vs_gbt": round(seconds / gbt_s, 3) if gbt_s > 0 else None,
            "auc_diff_xgboost_minus_gbt": round(auc - gbt_auc, 4),
            "note": "same Pipeline (encoding, class weights via weightCol) with SparkXGBClassifier; the GBT's "
                    "minInstancesPerNode (rows) has no xgboost twin: min_child_weight (hessian) stays 1; the fit "
                    "includes the barrier stage and Python worker start-up xgboost.spark needs"}


# --- 6. scoring, 7. ingest -----------------------------------------------------------------------


def stage_score(spark: Any, settings: Any) -> dict[str, Any]:
    from churn_spark.score.job import run_score
    from churn_spark.train.job import run_train

    train_s, trained = timed(lambda: run_train(spark, settings))
    score_s, scored = timed(lambda: run_score(spark, settings, SCORE_DATE, None))
    n = int(scored["counts"]["scored"])
    return {"train_job_s": round(train_s, 1), "model_version": trained["model_version"],
            "train_job_auc": trained["metrics"].get("roc_auc"), "as_of": SCORE_DATE.isoformat(),
            "scored_accounts": n, "score_job_s": round(score_s, 1),
            "accounts_per_s": round(n / score_s, 1) if score_s > 0 else None}


def stage_ingest(spark: Any, settings: Any, mode: Mode, work: Path) -> dict[str, Any]:
    """Synthetic JSON lines (the ingest helper's generator) into a fresh bronze, `ingest --once`."""
    from bench.ingest_throughput import synthetic_lines
    from churn_spark.config import with_overrides
    from churn_spark.ingest import run_ingest

    root = work / "ingest_lake"
    shutil.rmtree(root, ignore_errors=True)
    ingest_settings = with_overrides(settings, {"lakehouse": str(root)})
    synthetic_lines(spark, mode.ingest_events, 4).write.text(str(root / ingest_settings.ingest.landing_path))
    seconds, summary = timed(lambda: run_ingest(spark, ingest_settings, once=True))
    bronze = bronze_count(spark, ingest_settings)
    expected = summary["records_in"] - summary["duplicates"] - summary["quarantined"]
    shutil.rmtree(root, ignore_errors=True)
    return {"records_in": summary["records_in"], "bronze_rows": bronze, "duplicates": summary["duplicates"],
            "quarantined": summary["quarantined"], "exactly_once_rows_ok": bronze == expected,
            "seconds": round(seconds, 1), "events_per_s": round(summary["records_in"] / seconds, 1)}


# --- 9. uplift ----------------------------------------------------------------------------------


def stage_uplift(spark: Any, settings: Any, mode: Mode, work: Path, fresh: bool) -> dict[str, Any]:
    """Its own generated and ingested dataset with campaigns (reused like the bench data), then
    bench/uplift.py's figures."""
    from bench.uplift import CHURN_SNAPSHOTS, campaign_settings, stage_campaigns

    campaigns = campaign_settings(with_snapshots(settings, CHURN_SNAPSHOTS), work / "uplift_lake",
                                  mode.uplift_accounts, mode.uplift_search)
    return {"data": stage_data(spark, campaigns, work, fresh), **stage_campaigns(spark, campaigns)}


# --- the run -------------------------------------------------------------------------------------


def machine() -> dict[str, Any]:
    return {"cores": os.cpu_count(), "memory_gib": round(psutil.virtual_memory().total / 2**30, 1),
            "platform": platform.platform(), "python": platform.python_version(),
            "load_avg_at_start": [round(x, 1) for x in os.getloadavg()]}


def run_stage(results: dict[str, Any], name: str, fn: Callable[[], dict[str, Any]]) -> None:
    log.info("stage %s ...", name)
    start = time.perf_counter()
    try:
        results[name] = fn()
        log.info("stage %s done in %.0fs", name, time.perf_counter() - start)
    except Exception as exc:  # a failed stage is recorded and reported; the run exits non-zero
        results[name] = {"error": f"{type(exc).__name__}: {str(exc).strip().splitlines()[0] if str(exc) else ''}"}
        log.error("stage %s failed: %s\n%s", name, results[name]["error"], traceback.format_exc(limit=4))
    results.setdefault("stage_seconds", {})[name] = round(time.perf_counter() - start, 1)


STAGES = ("data", "floor", "growth", "peers", "training", "score", "ingest", "nightly", "uplift")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small data, one repeat: under 5 minutes")
    parser.add_argument("--workdir", default=str(HERE / "work"), help="data and scratch (reused between runs)")
    parser.add_argument("--fresh", action="store_true", help="regenerate the data even if it is there")
    parser.add_argument("--stages", default=",".join(STAGES), help=f"comma-separated subset of {','.join(STAGES)}")
    parser.add_argument("--accounts", type=int, help="override the mode's account count")
    parser.add_argument("--gbt-iter", type=int, help="override the mode's boosting rounds (training and score stages)")
    parser.add_argument("--volume-accounts", type=int,
                        help="accounts of the nightly stage's x1/x10 event-volume lakehouses (default: the mode's)")
    parser.add_argument("--no-readme", action="store_true", help="do not rewrite bench/README.md (full runs)")
    parser.add_argument("--driver-memory", help="override the mode's driver memory (e.g. 8g at 100,000 accounts)")
    parser.add_argument("--shuffle-partitions", type=int, help="override the mode's spark.sql.shuffle.partitions")
    parser.add_argument("--uplift-accounts", type=int, help="override the uplift stage's account count")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s", stream=sys.stderr)
    mode = MODES["quick" if args.quick else "full"]
    if args.accounts:
        mode = Mode(**{**asdict(mode), "accounts": args.accounts})
    if args.gbt_iter:
        mode = Mode(**{**asdict(mode), "gbt_iter": args.gbt_iter})
    if args.driver_memory:
        mode = Mode(**{**asdict(mode), "driver_memory": args.driver_memory})
    if args.shuffle_partitions:
        mode = Mode(**{**asdict(mode), "shuffle_partitions": args.shuffle_partitions})
    if args.uplift_accounts:
        mode = Mode(**{**asdict(mode), "uplift_accounts": args.uplift_accounts})
    stages = [s for s in args.stages.split(",") if s]
    work = Path(args.workdir) / mode.name
    work.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    results: dict[str, Any] = {"mode": mode.name, "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
                               "machine": machine(), "config": asdict(mode)}

    from churn_spark.session import build_spark

    settings = bench_settings(work / "lake", mode)
    spark = build_spark(settings.spark, app_name="churn-bench")

    def save() -> str:
        results["total_s"] = round(time.perf_counter() - started, 1)
        results["machine"]["load_avg_at_end"] = [round(x, 1) for x in os.getloadavg()]
        results.update(report.headline(results))
        report.write_results(results, HERE / "results")
        return report.table(results)

    plan: dict[str, Callable[[], dict[str, Any]]] = {
        "floor": lambda: stage_floor(spark, settings, repeats=1),
        "peers": lambda: stage_peers(spark, settings, mode, work),
        "training": lambda: stage_training(spark, with_snapshots(settings, 24), mode),
        "ingest": lambda: stage_ingest(spark, settings, mode, work),
        "growth": lambda: stage_growth(spark, settings, mode, work, results.get("floor")),
        "score": lambda: stage_score(spark, with_snapshots(settings, 24)),
        "nightly": lambda: stage_nightly(spark, with_snapshots(settings, 24), work, SCORE_DATE,
                                         args.volume_accounts),
        "uplift": lambda: stage_uplift(spark, settings, mode, work, args.fresh),
    }
    try:
        run_stage(results, "data", lambda: stage_data(spark, settings, work, args.fresh))
        for name, fn in plan.items():  # cheapest first; results are saved after every stage
            if name in stages:
                run_stage(results, name, fn)
                save()
    finally:
        try:
            spark.stop()
        except Exception as exc:  # the JVM may already be gone (e.g. killed by the OOM killer)
            log.error("could not stop Spark cleanly: %s", exc)
    table = save()
    print(table)
    if mode.name == "full" and not args.no_readme:
        report.update_readme(HERE / "README.md", table, results)
    failed = [k for k, v in results.items() if isinstance(v, dict) and "error" in v]
    return 1 if failed else 0
