"""`churn-spark demo`: the whole pipeline on a small generated dataset, on the embedded default."""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Callable
from typing import Any

from churn_spark.config import Settings, with_overrides
from churn_spark.generate.mechanism import GENERATED_ATTRIBUTES
from churn_spark.session import build_spark

log = logging.getLogger("churn_spark")

JobFn = Callable[[Any, Settings], dict[str, Any]]

DEMO_OVERRIDES: dict[str, Any] = {
    "generate.accounts": 2000,
    "generate.start": "2022-01-01",
    "generate.end": "2024-12-31",
    "churn.snapshots.start": "2022-07-01",
    "churn.snapshots.end": "2024-12-01",
    "ingest.source": "landing",
    "inputs.account_attributes": list(GENERATED_ATTRIBUTES),
}
DEMO_SCORE_DATE = dt.date(2024, 12, 1)


def stage_functions(score_date: dt.date | str) -> list[tuple[str, JobFn]]:
    """generate -> ingest (drain the landing folder) -> features -> train -> score, in pipeline order."""
    from churn_spark.features.job import run_features
    from churn_spark.generate import run_generate
    from churn_spark.ingest import run_ingest
    from churn_spark.score.job import run_score
    from churn_spark.train.job import run_train

    day = score_date if isinstance(score_date, dt.date) else dt.date.fromisoformat(score_date)
    return [
        ("generate", run_generate),
        ("ingest", lambda spark, s: run_ingest(spark, s, once=True)),
        ("features", run_features),
        ("train", run_train),
        ("score", lambda spark, s: run_score(spark, s, day, None)),
    ]


def run_demo(settings: Settings, execute: Callable[..., dict[str, Any]]) -> list[dict[str, Any]]:
    """Run every stage in one session; each stage writes its own run summary."""
    demo_settings = with_overrides(settings, DEMO_OVERRIDES)
    spark = build_spark(demo_settings.spark, app_name="churn-spark-demo")
    return [execute(demo_settings, name, fn, {"demo": True}, spark=spark)
            for name, fn in stage_functions(DEMO_SCORE_DATE)]
