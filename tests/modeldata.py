"""A small LR model trained with the training code on stored features and registered with the registry's
own functions: what the scoring tests need without running the train job."""

from __future__ import annotations

import math
import random
from collections.abc import Callable, Sequence
from typing import Any

from pyspark.ml import PipelineModel
from pyspark.sql import SparkSession
from pyspark.sql import functions as F

from churn_spark import io
from churn_spark.config import Settings
from churn_spark.lakehouse import Lakehouse
from churn_spark.train import pipeline as P
from churn_spark.train import registry as R
from churn_spark.train.job import drift_reference, profile_columns


def register(spark: SparkSession, settings: Settings, version: str, model: PipelineModel, meta: dict[str, Any],
             current: bool = False) -> None:
    R.save_version(spark, settings, version, model, {**meta, "version": version}, {})
    if current:
        R.write_pointer(spark, settings, version, "test", "roc_auc", None)


def train_on_stored(spark: SparkSession, settings: Settings, labels: dict[str, int], train_dates: list[Any],
                    model_type: str = "lr", params: dict[str, Any] | None = None) -> tuple[PipelineModel, dict]:
    """Fit on the gold.churn_features rows of `train_dates` with hand-given labels per account.

    Returns the model and the metadata scoring reads (feature columns and schema, lineage at the
    features table's current version, the drift reference as training stores it).
    """
    lh = Lakehouse.from_settings(settings)
    stored = spark.read.format("delta").load(lh.churn_features).where(F.col("as_of_date").isin(train_dates))
    label = F.create_map(*[x for a, y in labels.items() for x in (F.lit(a), F.lit(y))])
    train = stored.withColumn("label", label[F.col("account_id")])
    columns, empty = profile_columns(train, P.feature_columns(stored.schema), True)
    pipeline, _ = P.build_pipeline(columns, model_type, params or {"regParam": 0.1}, seed=1, weighted=False)
    model = pipeline.fit(train)
    meta = {"model_type": model_type, "feature_set_version": settings.features.feature_set_version,
            "feature_columns": columns.as_dict(), "feature_schema": P.feature_schema(stored.schema, columns),
            "dropped_features": empty, "config": {"model": {"exclude_features": []}},
            "lineage": {"tables": {"features": {"path": lh.churn_features,
                                                "delta_version": io.table_version(spark, lh.churn_features)}},
                        "split": {"train": {"dates": [d.isoformat() for d in train_dates]}}},
            "drift_reference": drift_reference(model, stored, train_dates, columns, settings)}
    return model, meta


def write_labelled_lake(spark: SparkSession, root: str, labels: list[tuple[Any, ...]], features: list[tuple[Any, ...]],
                        feature_columns: str) -> Lakehouse:
    """gold.churn_labels (the five value columns, as written before labels recorded their definition:
    training then assumes today's churn settings) and gold.churn_features (keys, feature_set_version and
    `feature_columns`, a DDL fragment) from hand-made rows, each partitioned by snapshot."""
    from churn_spark import schemas

    lh = Lakehouse(root)
    io.overwrite_table(spark.createDataFrame(labels, schemas.CHURN_LABEL_VALUES), lh.churn_labels, ["as_of_date"])
    io.overwrite_table(spark.createDataFrame(
        features, f"account_id string, as_of_date date, feature_set_version string, {feature_columns}"),
        lh.churn_features, ["as_of_date"])
    return lh


def xor_rows(snapshots: list[Any]) -> tuple[list[tuple], list[tuple]]:
    """(label rows, feature rows) of 200 accounts per snapshot where churn is `a XOR b` (flipped for every
    tenth account): trees can rank it, a linear model cannot. The last snapshot is censored (label null)."""
    labels, features = [], []
    for i in range(200):
        for k, d in enumerate(snapshots):
            a, b = (i + k) % 2, (i // 2 + k) % 2
            label = (a ^ b) if i % 10 else 1 - (a ^ b)
            labels.append((f"a{i:03d}", d, None if d == snapshots[-1] else label, None, 400))
            features.append((f"a{i:03d}", d, "1", a, b))
    return labels, features


def stratified_usage_rows(snapshots: Sequence[Any], n: int, seed: int, base_logit: Callable[[Any], float],
                          extra: Callable[[Any], tuple[Any, ...]] = lambda d: ()) -> tuple[list[tuple], list[tuple]]:
    """(label rows, feature rows) of `n` accounts per snapshot with one feature `usage` (uniform) and
    P(churn) = sigmoid(base_logit(D) - 3 (usage - 0.5)); feature rows end with `extra(D)`. The last snapshot is
    censored. Label = draw < p, with the draws of a snapshot stratified (a shuffled grid (k + 0.5) / n): each
    account's label stays random, but a snapshot's churn rate is close to its mean p, so a month's rate is not
    off by sampling noise alone and a calibration test measures calibration, not luck."""
    rnd = random.Random(seed)
    labels, features = [], []
    for d in snapshots:
        draws = [(k + 0.5) / n for k in range(n)]
        rnd.shuffle(draws)
        for i in range(n):
            usage = rnd.random()
            p = 1 / (1 + math.exp(-(base_logit(d) - 3.0 * (usage - 0.5))))
            labels.append((f"a{i:04d}", d, None if d == snapshots[-1] else int(draws[i] < p), None, 400))
            features.append((f"a{i:04d}", d, "1", usage, *extra(d)))
    return labels, features
