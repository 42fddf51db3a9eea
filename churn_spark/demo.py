"""`churn-spark demo`: the whole pipeline on a small generated dataset, on the embedded default."""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Callable
from typing import Any

from churn_spark.config import Settings, with_overrides
from churn_spark.session import build_spark

log = logging.getLogger("churn_spark")

DEMO_OVERRIDES: dict[str, Any] = {
    "generate.accounts": 2000,
    "generate.start": "2022-01-01",
    "generate.end": "2024-12-31",
    "churn.snapshots.start": "2022-07-01",
    "churn.snapshots.end": "2024-12-01",
    "ingest.source": "landing",
}
DEMO_SCORE_DATE = dt.date(2024, 12, 1)


def _stages() -> list[tuple[str, Callable[[Any, Settings], dict[str, Any]]]]:
    """The stages in pipeline order; a stage whose module is not built yet is skipped, and said so."""
    stages: list[tuple[str, Callable[[Any, Settings], dict[str, Any]]]] = []
    from churn_spark.generate import run_generate

    stages.append(("generate", run_generate))
    try:
        from churn_spark.ingest import run_ingest

        stages.append(("ingest", lambda spark, s: run_ingest(spark, s, once=True)))
        from churn_spark.features.job import run_features

        stages.append(("features", run_features))
        from churn_spark.train.job import run_train

        stages.append(("train", run_train))
        from churn_spark.score.job import run_score

        stages.append(("score", lambda spark, s: run_score(spark, s, DEMO_SCORE_DATE, None)))
    except ImportError as exc:
        log.warning("demo: later stages not available yet (%s)", exc)
    return stages


def run_demo(settings: Settings, execute: Callable[..., dict[str, Any]]) -> list[dict[str, Any]]:
    """Run every available stage in one session; each stage writes its own run summary."""
    demo_settings = with_overrides(settings, {k: v for k, v in DEMO_OVERRIDES.items()})
    spark = build_spark(demo_settings.spark, app_name="churn-spark-demo")
    return [execute(demo_settings, name, fn, {"demo": True}, spark=spark) for name, fn in _stages()]
