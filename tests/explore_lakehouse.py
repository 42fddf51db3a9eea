"""A small generated lakehouse (raw -> bronze -> gold labels and features) shared by the notebook and
`churn-spark explore` tests, built once per test session with the library's own job functions."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml
from conftest import TEST_SPARK
from pyspark.sql import SparkSession

from churn_spark.config import Settings, load_settings

# ~150 accounts over two years: 24 monthly snapshots, 18 of them labelled (6-month horizon + 30 days),
# enough for the training code's time split (train, 2 validation, 3 test snapshots with gaps).
CONFIG: dict[str, Any] = {
    # the notebook's kernel starts its own driver: the test session's interpreted-code settings there too
    "spark": {"master": "local[2]", "shuffle_partitions": 2, "driver_memory": "2g", "show_progress": False,
              "java_options": TEST_SPARK.java_options, "conf": TEST_SPARK.conf},
    "generate": {"accounts": 150, "start": "2023-01-01", "end": "2024-12-31", "seed": 5,
                 "events_per_account_month": 6.0, "event_files": 1, "history_months": 12},
    "churn": {"snapshots": {"start": "2023-01-01", "end": "2024-12-01"}},
    "inputs": {"account_attributes": ["country", "channel", "industry"]},  # the generated accounts' attributes
    # one small GBT, no refit: the notebook shows a registered model; how it was chosen is tested elsewhere
    "model": {"type": "gbt", "params": {"maxIter": 6, "maxDepth": 3, "minInstancesPerNode": 5}, "refit": False},
    "scoring": {"reason_candidates": 3},
}

_BUILT: dict[str, tuple[Settings, Path]] = {}


def small_lakehouse(spark: SparkSession, tmp_path_factory: pytest.TempPathFactory) -> tuple[Settings, Path]:
    """(settings, config file) of a lakehouse with raw inputs, bronze events and gold labels/features."""
    if "lake" not in _BUILT:
        from churn_spark.features.job import run_features
        from churn_spark.generate import run_generate
        from churn_spark.ingest import run_ingest

        root = tmp_path_factory.mktemp("explore")
        config = root / "churn.yaml"
        config.write_text(yaml.safe_dump({**CONFIG, "lakehouse": str(root / "lakehouse")}))
        settings = load_settings(config)
        run_generate(spark, settings)
        run_ingest(spark, settings, once=True)
        run_features(spark, settings)
        _BUILT["lake"] = (settings, config)
    return _BUILT["lake"]
