"""The nightly's cost (issue 20): scoring with the features present, the nightly after one more day of
events against the same step from scratch, and the nightly at 10x the events per account-month.

Every figure is measured in one run on lakehouses this module builds from the bench data:

- `score_accounts_per_s`: `run_score` of the score date when gold already holds its features (the
  features are written first, untimed): the scoring work alone.
- `nightly_seconds` / `nightly_vs_rebuild_ratio`: on a copy of the bench lakehouse, one more day of
  events lands (the last day's events moved a day on, new ids); the nightly is `ingest --once`,
  features for the next day, score it. "From scratch" is the same day with silver rebuilt from
  bronze, features for the day, score it.
- `nightly_event_volume_ratio`: the same nightly on two lakehouses generated with the same accounts
  and days at `events_per_account_month` x1 and x10, each after a full build (silver, the features
  of the score date) and scored with the bench lakehouse's model.
"""

from __future__ import annotations

import datetime as dt
import logging
import os
import shutil
from pathlib import Path
from typing import Any

from bench.measure import timed

log = logging.getLogger("bench")

NEXT_DAY = dt.date(2025, 1, 1)  # the generated data end on 2024-12-31
NIGHT = NEXT_DAY + dt.timedelta(days=1)  # the nightly scores the day after the new events
VOLUME_FACTOR = 10


def append_day(spark: Any, settings: Any, day: dt.date) -> int:
    """Land one more day of events: bronze's last day, moved to `day` with new event ids. Returns lines."""
    from pyspark.sql import functions as F

    from churn_spark.lakehouse import Lakehouse

    lake = Lakehouse.from_settings(settings)
    bronze = spark.read.format("delta").load(lake.bronze_events)
    last = bronze.agg(F.max("event_date").alias("d")).first()["d"]
    shift = (day - last).days
    moved = F.col("event_time") + F.expr(f"INTERVAL {shift} DAYS")
    lines = bronze.where(F.col("event_date") == last).select(F.to_json(F.struct(
        F.concat("event_id", F.lit(f"+{day.isoformat()}")).alias("event_id"), "account_id", "event_type",
        F.date_format(moved, "yyyy-MM-dd'T'HH:mm:ss.SSS'Z'").alias("event_time"), "value", "properties",
    )).alias("value")).persist()
    n = lines.count()
    tmp = Path(lake.root) / f".landing-{day.isoformat()}"
    lines.coalesce(1).write.mode("overwrite").text(str(tmp))
    lines.unpersist()
    landing = Path(lake.landing_events)
    landing.mkdir(parents=True, exist_ok=True)
    for i, part in enumerate(sorted(tmp.glob("part-*"))):
        os.replace(part, landing / f"day-{day.isoformat()}-{i}.json")
    shutil.rmtree(tmp)
    return int(n)


def copy_lake(settings: Any, dest: Path) -> Any:
    """A copy of the lakehouse without its landing files (so ingest reads only what lands next)."""
    from churn_spark.config import with_overrides

    src = Path(settings.lakehouse)
    shutil.rmtree(dest, ignore_errors=True)
    shutil.copytree(src, dest, ignore=lambda d, names: names if Path(d) == src / "landing" / "events" else [])
    return with_overrides(settings, {"lakehouse": str(dest)})


def nightly(spark: Any, settings: Any, night: dt.date) -> dict[str, Any]:
    """`ingest --once`, features for `night`, score `night`: each step timed."""
    from churn_spark.features.job import write_labels_and_features
    from churn_spark.ingest import run_ingest
    from churn_spark.score.job import run_score

    ingest_s, ingested = timed(lambda: run_ingest(spark, settings, once=True))
    features_s, features = timed(lambda: write_labels_and_features(spark, settings, [night]))
    score_s, scored = timed(lambda: run_score(spark, settings, night))
    return {"seconds": round(ingest_s + features_s + score_s, 1), "ingest_s": round(ingest_s, 1),
            "features_s": round(features_s, 1), "score_s": round(score_s, 1),
            "records_in": ingested["records_in"], "silver": (features.get("silver") or {}).get("mode"),
            "silver_days": (features.get("silver") or {}).get("days_touched"),
            "scored": scored["counts"]["scored"], "features_source": scored["features"]["source"]}


def from_scratch(spark: Any, settings: Any, night: dt.date) -> dict[str, Any]:
    """The same day without the increment: silver rebuilt from bronze, features for `night`, score it."""
    from churn_spark.features.job import write_labels_and_features
    from churn_spark.score.job import run_score
    from churn_spark.silver.job import sync_silver

    silver_s, _ = timed(lambda: sync_silver(spark, settings, rebuild=True))
    features_s, _ = timed(lambda: write_labels_and_features(spark, settings, [night]))
    score_s, _ = timed(lambda: run_score(spark, settings, night))
    return {"seconds": round(silver_s + features_s + score_s, 1), "silver_rebuild_s": round(silver_s, 1),
            "features_s": round(features_s, 1), "score_s": round(score_s, 1)}


def ensure_model(spark: Any, settings: Any) -> str:
    """The current model of the lakehouse, trained (small GBT, no refit) when there is none."""
    from churn_spark.config import with_overrides
    from churn_spark.features.job import run_features
    from churn_spark.train.job import run_train
    from churn_spark.train.registry import read_pointer

    pointer = read_pointer(spark, settings)
    if pointer is not None:
        return str(pointer["version"])
    small = with_overrides(settings, {"model.type": "gbt", "model.params": {"maxIter": 10, "maxDepth": 3},
                                       "model.refit": False})
    run_features(spark, small)
    return str(run_train(spark, small)["model_version"])


def score_only(spark: Any, settings: Any, as_of: dt.date) -> dict[str, Any]:
    """Accounts per second of `run_score` when the features of `as_of` are already in gold."""
    from churn_spark.features.job import write_labels_and_features
    from churn_spark.score.job import run_score

    write_labels_and_features(spark, settings, [as_of])
    seconds, scored = timed(lambda: run_score(spark, settings, as_of))
    n = int(scored["counts"]["scored"])
    assert scored["features"]["source"] == "reused", scored["features"]
    return {"as_of": as_of.isoformat(), "scored_accounts": n, "score_s": round(seconds, 1),
            "score_accounts_per_s": round(n / seconds, 1)}


def volume_lake(spark: Any, settings: Any, events_per_month: float, dest: Path, as_of: dt.date) -> Any:
    """A full build at `events_per_month`: generated, ingested, silver built, the features of `as_of`
    written (which freezes the event types), and the bench lakehouse's models copied in (the nightly's
    cost does not depend on which model scores; training at 10x the events is not what is measured)."""
    from churn_spark.config import with_overrides
    from churn_spark.features.job import write_labels_and_features
    from churn_spark.generate import run_generate
    from churn_spark.ingest import run_ingest
    from churn_spark.lakehouse import Lakehouse

    shutil.rmtree(dest, ignore_errors=True)
    lake_settings = with_overrides(settings, {"lakehouse": str(dest),
                                              "generate.events_per_account_month": events_per_month})
    run_generate(spark, lake_settings)
    run_ingest(spark, lake_settings, once=True)
    write_labels_and_features(spark, lake_settings, [as_of])  # syncs (builds) silver first
    shutil.copytree(Lakehouse.from_settings(settings).models, Lakehouse.from_settings(lake_settings).models)
    return lake_settings


def stage_nightly(spark: Any, settings: Any, work: Path, score_date: dt.date,
                  volume_accounts: int | None) -> dict[str, Any]:
    """The three figures of issue 20 (see the module docstring)."""
    from churn_spark.config import with_overrides

    ensure_model(spark, settings)
    result: dict[str, Any] = {"score_only": score_only(spark, settings, score_date)}
    copy = copy_lake(settings, work / "nightly_lake")
    result["appended_events"] = append_day(spark, copy, NEXT_DAY)
    result["nightly"] = nightly(spark, copy, NIGHT)
    result["from_scratch"] = from_scratch(spark, copy, NIGHT)
    result["nightly_vs_rebuild_ratio"] = round(result["nightly"]["seconds"] / result["from_scratch"]["seconds"], 3)
    base = with_overrides(settings, {"generate.accounts": volume_accounts or settings.generate.accounts})
    per_month = base.generate.events_per_account_month
    volume: dict[str, Any] = {"accounts": base.generate.accounts}
    for factor in (1, VOLUME_FACTOR):
        lake = volume_lake(spark, base, per_month * factor, work / f"volume_x{factor}", score_date)
        appended = append_day(spark, lake, NEXT_DAY)
        run = nightly(spark, lake, NIGHT)
        volume[f"x{factor}"] = {"events_per_account_month": per_month * factor, "appended_events": appended,
                                "bronze_events": _bronze_rows(spark, lake), **run}
        shutil.rmtree(work / f"volume_x{factor}", ignore_errors=True)
    volume["nightly_event_volume_ratio"] = round(volume[f"x{VOLUME_FACTOR}"]["seconds"] / volume["x1"]["seconds"], 3)
    result["volume"] = volume
    shutil.rmtree(work / "nightly_lake", ignore_errors=True)
    return {**result, "score_accounts_per_s": result["score_only"]["score_accounts_per_s"],
            "nightly_seconds": result["nightly"]["seconds"],
            "nightly_event_volume_ratio": volume["nightly_event_volume_ratio"]}


def _bronze_rows(spark: Any, settings: Any) -> int:
    from churn_spark.lakehouse import Lakehouse

    return int(spark.read.format("delta").load(Lakehouse.from_settings(settings).bronze_events).count())
